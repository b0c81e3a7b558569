package nvme

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
	"github.com/nvmepoll/nvmepoll/vfio"
	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// limitDev is a Device with a DMA memory limit, as a VFIO device has with
// RLIMIT_MEMLOCK: CheckMemlock fails when the buffers, rounded up to pages,
// on top of what is mapped already would pass limit bytes. It records every
// check and how much was mapped when it ran.
type limitDev struct {
	Device
	limit int
	mem   countingAlloc

	checks []memlockCheck
}

type memlockCheck struct {
	sizes  []int
	mapped int // bytes mapped through DMA when the check ran
}

var _ MemlockChecker = (*limitDev)(nil)

func newLimitDev(d Device, limit int) *limitDev {
	return &limitDev{Device: d, limit: limit, mem: countingAlloc{Allocator: d.DMA()}}
}

func (d *limitDev) DMA() dma.Allocator { return &d.mem }

func (d *limitDev) CheckMemlock(sizes ...int) error {
	mapped := d.mem.mapped()
	d.checks = append(d.checks, memlockCheck{slices.Clone(sizes), mapped})
	total := 0
	for _, s := range sizes {
		total += pageRound(s)
	}
	if mapped+total > d.limit {
		return fmt.Errorf("fake: %d bytes more on top of %d mapped pass the %d-byte limit: %w", total, mapped, d.limit, vfio.ErrMemlock)
	}
	return nil
}

// checked is the bytes all checks so far asked about, rounded to pages.
func (d *limitDev) checked() int {
	n := 0
	for _, c := range d.checks {
		for _, s := range c.sizes {
			n += pageRound(s)
		}
	}
	return n
}

func pageRound(n int) int { return (n + 4095) &^ 4095 }

// countingAlloc counts the bytes mapped through it and not freed yet.
type countingAlloc struct {
	dma.Allocator
	mu    sync.Mutex
	bytes int
}

func (a *countingAlloc) Alloc(size int) (dma.Buffer, error) {
	b, err := a.Allocator.Alloc(size)
	if err == nil {
		a.mu.Lock()
		a.bytes += b.Len()
		a.mu.Unlock()
	}
	return b, err
}

func (a *countingAlloc) Free(b dma.Buffer) error {
	a.mu.Lock()
	a.bytes -= b.Len()
	a.mu.Unlock()
	return a.Allocator.Free(b)
}

func (a *countingAlloc) mapped() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bytes
}

// A limit too low for the admin queue fails Open before anything is mapped
// and before the controller is touched (not even disabled), with the
// admin queue's buffers and the device's numbers in the error.
func TestOpenMemlockAdminQueue(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   *Options
		sq, cq int
	}{
		{"default depth 32", nil, 32 * 64, 32 * 16},
		{"depth 4096 capped at MQES+1 = 2048", &Options{AdminDepth: 4096}, 2048 * 64, 2048 * 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &regDev{cap: fastCAP, cc: 1, csts: 1} // left enabled by a previous owner
			ld := newLimitDev(d, 8192)
			_, err := Open(ld, tc.opts)
			if !errors.Is(err, vfio.ErrMemlock) {
				t.Fatalf("Open under an 8 KiB limit: %v, want vfio.ErrMemlock", err)
			}
			for _, want := range []string{
				"admin queue",
				fmt.Sprintf("SQ: %d bytes", tc.sq),
				fmt.Sprintf("CQ: %d bytes", tc.cq),
				"data page: 4096 bytes",
				"pass the 8192-byte limit", // the device's own message is kept
			} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q\nlacks %q", err, want)
				}
			}
			if len(ld.checks) != 1 || !slices.Equal(ld.checks[0].sizes, []int{tc.sq, tc.cq, 4096}) || ld.checks[0].mapped != 0 {
				t.Errorf("checks %+v, want one of [%d %d 4096] with nothing mapped", ld.checks, tc.sq, tc.cq)
			}
			if len(d.writes) != 0 || d.mem.live != 0 || d.closed != 1 {
				t.Errorf("after the failed Open: register writes %v, %d DMA buffers mapped, device closed %d times; want none, 0, 1",
					d.writes, d.mem.live, d.closed)
			}
		})
	}
}

// A limit with room for the admin queue but not for what Identify sizes
// (shadow doorbells, bounce buffers) fails Open at the second check, before
// any of that is mapped, and Open gives back the admin queue.
func TestOpenMemlockAfterIdentify(t *testing.T) {
	m := nvmetest.NewController(t, nvmetest.Config{ShadowDoorbells: true}) // MDTS 7: 512 KiB
	ld := newLimitDev(m, 1<<20)
	_, err := Open(ld, nil)
	if !errors.Is(err, vfio.ErrMemlock) {
		t.Fatalf("Open under a 1 MiB limit: %v, want vfio.ErrMemlock", err)
	}
	for _, want := range []string{
		"shadow doorbell page: 4096 bytes",
		"EventIdx page: 4096 bytes",
		"bounce buffers (4 x 524288 bytes): 2097152 bytes", // 2 synchronous pairs + 2 spares
		"on top of 12288 mapped pass the 1048576-byte limit",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\nlacks %q", err, want)
		}
	}
	if len(ld.checks) != 2 {
		t.Fatalf("%d memlock checks, want 2: %+v", len(ld.checks), ld.checks)
	}
	if c := ld.checks[1]; !slices.Equal(c.sizes, []int{4096, 4096, 4 << 19}) || c.mapped != 12288 {
		t.Errorf("second check %+v, want [4096 4096 2097152] with only the admin queue (12288 bytes) mapped", c)
	}
	if n := ld.mem.mapped(); n != 0 {
		t.Errorf("%d bytes of DMA memory still mapped after the failed Open", n)
	}
}

// Everything Open maps is checked first, nothing more, and the checks are
// exact: a limit of exactly that total opens, one byte less does not.
func TestOpenMemlockCoversWhatOpenMaps(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  nvmetest.Config
		opts *Options
	}{
		{"defaults", nvmetest.Config{}, nil},
		{"shadow doorbells", nvmetest.Config{ShadowDoorbells: true}, nil},
		{"shadow doorbells off by option", nvmetest.Config{ShadowDoorbells: true}, &Options{NoShadowDoorbells: true}},
		{"one queue pair, MDTS 5", nvmetest.Config{MaxQueuePairs: 1, MDTS: 5}, nil},
		{"no MDTS, 1 MiB transfers, depth 64", nvmetest.Config{MDTS: -1}, &Options{MaxTransfer: 1 << 20, AdminDepth: 64}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ld := newLimitDev(nvmetest.NewController(t, tc.cfg), 1<<40)
			c, err := Open(ld, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			total := ld.checked()
			if mapped := ld.mem.mapped(); mapped != total || len(ld.checks) != 2 {
				t.Errorf("Open mapped %d bytes after %d checks of %d bytes in all (%+v); want two checks covering exactly what it maps",
					mapped, len(ld.checks), total, ld.checks)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}

			ld = newLimitDev(nvmetest.NewController(t, tc.cfg), total)
			c, err = Open(ld, tc.opts)
			if err != nil {
				t.Fatalf("Open under a limit of exactly the %d bytes it maps: %v", total, err)
			}
			c.Close()

			ld = newLimitDev(nvmetest.NewController(t, tc.cfg), total-1)
			if _, err := Open(ld, tc.opts); !errors.Is(err, vfio.ErrMemlock) {
				t.Errorf("Open under a limit one byte below the %d bytes it maps: %v, want vfio.ErrMemlock", total, err)
			}
		})
	}
}

// A Device that sets no limit (the model, on its own) is not asked.
func TestOpenWithoutMemlockChecker(t *testing.T) {
	m := nvmetest.NewController(t, nvmetest.Config{})
	if _, ok := Device(m).(MemlockChecker); ok {
		t.Fatal("the model is a MemlockChecker: this test would check nothing")
	}
	c, err := Open(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// A queue pair checks its SQ, CQ and PRP list pages together before it maps
// any of them: under a limit Open fits in but the pair does not, creating it
// fails with the sizes and vfio.ErrMemlock and maps nothing more.
func TestQueuePairMemlockUpFront(t *testing.T) {
	ld := newLimitDev(nvmetest.NewController(t, nvmetest.Config{}), 1<<40)
	c, err := Open(ld, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ld.limit = ld.mem.mapped() + 8192 // two more pages: less than a depth-256 pair needs
	before := ld.mem.mapped()
	_, err = c.NewQueuePairWith(QueueOptions{Depth: 256, Mode: ModePoll})
	if !errors.Is(err, vfio.ErrMemlock) || !strings.Contains(err.Error(), "queue pair") || !strings.Contains(err.Error(), "SQ: 16384 bytes") {
		t.Fatalf("NewQueuePairWith under a low limit: %v, want vfio.ErrMemlock naming the pair and its buffer sizes", err)
	}
	if after := ld.mem.mapped(); after != before {
		t.Errorf("the refused queue pair left %d bytes mapped", after-before)
	}
	ld.limit = 1 << 40
	qp, err := c.NewQueuePairWith(QueueOptions{Depth: 256, Mode: ModePoll})
	if err != nil {
		t.Fatalf("after raising the limit: %v", err)
	}
	qp.Close()
}
