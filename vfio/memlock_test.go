package vfio

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// fakeMemlock makes readMemlock report limit, with base bytes locked by
// the rest of the process on top of what the Device says it pinned (the
// fallback), until the test ends.
func fakeMemlock(t *testing.T, limit, base uint64) {
	t.Helper()
	old := readMemlock
	readMemlock = func(fallback uint64) (memlock, error) {
		return memlock{limit: limit, locked: base + fallback}, nil
	}
	t.Cleanup(func() { readMemlock = old })
}

// fakeDevice is a Device with a 4 KiB-page IOVA space and no fds: enough
// for the memlock checks, which run before anything reaches the kernel.
func fakeDevice(t *testing.T) (*Device, *dma.IOVASpace) {
	t.Helper()
	s, err := dma.NewIOVASpace(fallbackIOVARanges, 4096)
	if err != nil {
		t.Fatal(err)
	}
	return &Device{addr: "0000:00:03.0", container: -1, group: -1, fd: -1, maps: map[uint64][]byte{}, iova: s}, s
}

func TestCheckMemlock(t *testing.T) {
	const base = 8192
	fakeMemlock(t, 64<<10, base)
	d, s := fakeDevice(t)
	free := s.Available()

	// 2048 + 512 + 4096 bytes are three 4 KiB pages, counted twice:
	// 8192 + 2*12288 = 32768 bytes fit under 64 KiB.
	if err := d.CheckMemlock(2048, 512, 4096); err != nil {
		t.Errorf("CheckMemlock of three pages under a 64 KiB limit: %v", err)
	}
	// One more MiB does not: 8192 + 2*(12288+1048576) = 2129920 bytes.
	err := d.CheckMemlock(2048, 512, 4096, 1<<20)
	if !errors.Is(err, ErrMemlock) {
		t.Fatalf("CheckMemlock of 1 MiB more: %v, want ErrMemlock", err)
	}
	for _, want := range []string{
		"mapping 1060864 bytes",                          // the total, pages rounded
		"needs RLIMIT_MEMLOCK of at least 2129920 bytes", // locked + twice the total
		"8192 already locked",
		"the limit is 65536 bytes (64 KiB)",
		"ulimit -l 2080",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CheckMemlock error %q\nlacks %q", err, want)
		}
	}
	if len(d.maps) != 0 || d.pinned != 0 || s.Available() != free {
		t.Errorf("CheckMemlock mapped something: %d buffers, %d bytes pinned, IOVA space %#x free of %#x", len(d.maps), d.pinned, s.Available(), free)
	}
}

// CheckMemlock is exact at the limit: bytes already pinned by the Device
// count twice, as they do in Alloc.
func TestCheckMemlockBoundary(t *testing.T) {
	const base, pinned, add = 4096, 3 * 4096, 5 * 4096
	limit := uint64(base + 2*pinned + 2*add)
	for _, tc := range []struct {
		limit uint64
		ok    bool
	}{{limit, true}, {limit - 1, false}} {
		fakeMemlock(t, tc.limit, base)
		d, _ := fakeDevice(t)
		d.pinned = pinned
		err := d.CheckMemlock(add - 100) // rounds up to add
		if (err == nil) != tc.ok {
			t.Errorf("limit %d, %d pinned, %d more: CheckMemlock = %v, want ok=%v", tc.limit, pinned, add, err, tc.ok)
		}
	}
}

// Alloc and CheckMemlock count the same way: for one buffer over the
// limit both fail with the same message, and Alloc maps nothing.
func TestAllocMemlockMatchesCheck(t *testing.T) {
	fakeMemlock(t, 64<<10, 0)
	d, s := fakeDevice(t)
	free := s.Available()
	checkErr := d.CheckMemlock(40 << 10)
	_, allocErr := d.DMA().Alloc(40 << 10)
	if !errors.Is(checkErr, ErrMemlock) || !errors.Is(allocErr, ErrMemlock) {
		t.Fatalf("40 KiB under a 64 KiB limit (80 KiB counted): CheckMemlock %v, Alloc %v; want ErrMemlock from both", checkErr, allocErr)
	}
	if checkErr.Error() != allocErr.Error() {
		t.Errorf("CheckMemlock and Alloc disagree:\n%v\n%v", checkErr, allocErr)
	}
	if len(d.maps) != 0 || d.pinned != 0 || s.Available() != free {
		t.Errorf("failed Alloc left %d buffers, %d bytes pinned", len(d.maps), d.pinned)
	}
}

func TestCheckMemlockBadInput(t *testing.T) {
	fakeMemlock(t, math.MaxUint64-1, 1<<20)
	d, _ := fakeDevice(t)
	if err := d.CheckMemlock(4096, 0); err == nil || !strings.Contains(err.Error(), "cannot allocate 0 bytes") {
		t.Errorf("CheckMemlock with a 0-byte buffer: %v, want an error naming 0 bytes", err)
	}
	if err := d.CheckMemlock(math.MaxInt-8192, math.MaxInt-8192); err == nil || errors.Is(err, ErrMemlock) {
		t.Errorf("CheckMemlock of two buffers over 2^63 bytes: %v, want an overflow error", err)
	}
	// 1 MiB locked plus a total near 2^63 counted twice passes 2^64: the
	// need saturates instead of wrapping around to a number that fits.
	if err := d.CheckMemlock(math.MaxInt - 8192); !errors.Is(err, ErrMemlock) {
		t.Errorf("CheckMemlock of 2^63 bytes with 1 MiB locked, limit 2^64-2: %v, want ErrMemlock", err)
	}
	d.Close()
	if err := d.CheckMemlock(4096); !errors.Is(err, ErrClosed) {
		t.Errorf("CheckMemlock after Close: %v, want ErrClosed", err)
	}
}
