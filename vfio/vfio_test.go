package vfio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
	"github.com/nvmepoll/nvmepoll/vfio/pci"
)

// infoBuf builds a vfio_iommu_type1_info of size bytes with the CAPS flag
// and the first capability at first; put writes into it.
type infoBuf []byte

func newInfo(size, first int) infoBuf {
	b := make(infoBuf, size)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(size))
	ne.PutUint32(b[4:], VFIO_IOMMU_INFO_PGSIZES|VFIO_IOMMU_INFO_CAPS)
	ne.PutUint64(b[8:], 0x40201000) // 4K, 2M, 1G
	ne.PutUint32(b[16:], uint32(first))
	return b
}

func (b infoBuf) header(off int, id, version uint16, next int) {
	ne := binary.NativeEndian
	ne.PutUint16(b[off:], id)
	ne.PutUint16(b[off+2:], version)
	ne.PutUint32(b[off+4:], uint32(next))
}

// iovaCap writes an IOVA range capability at off with the given ranges.
func (b infoBuf) iovaCap(off, next int, nr uint32, ranges ...dma.Range) {
	b.header(off, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 1, next)
	binary.NativeEndian.PutUint32(b[off+8:], nr)
	for i, r := range ranges {
		binary.NativeEndian.PutUint64(b[off+16+16*i:], r.Start)
		binary.NativeEndian.PutUint64(b[off+16+16*i+8:], r.End)
	}
}

func TestParseIOVARanges(t *testing.T) {
	x86 := []dma.Range{{Start: 0, End: 0xfedfffff}, {Start: 0xfef00000, End: 0xffffffffffff}}

	t.Run("one capability", func(t *testing.T) {
		b := newInfo(24+16+32, 24)
		b.iovaCap(24, 0, 2, x86...)
		got, found, err := parseIOVARanges(b)
		if err != nil || !found {
			t.Fatalf("found %v, err %v", found, err)
		}
		if diff := cmp.Diff(x86, got); diff != "" {
			t.Errorf("ranges (-want +got):\n%s", diff)
		}
	})

	t.Run("after another capability", func(t *testing.T) {
		// A migration capability (id 2, 32 bytes) first, then IOVA ranges.
		b := newInfo(24+32+16+32, 24)
		b.header(24, 2, 1, 56)
		b.iovaCap(56, 0, 2, x86...)
		got, found, err := parseIOVARanges(b)
		if err != nil || !found {
			t.Fatalf("found %v, err %v", found, err)
		}
		if diff := cmp.Diff(x86, got); diff != "" {
			t.Errorf("ranges (-want +got):\n%s", diff)
		}
	})

	t.Run("no capabilities", func(t *testing.T) {
		b := newInfo(24, 0)
		binary.NativeEndian.PutUint32(b[4:], VFIO_IOMMU_INFO_PGSIZES)
		if _, found, err := parseIOVARanges(b); found || err != nil {
			t.Errorf("found %v, err %v; want neither", found, err)
		}
	})

	t.Run("other capability only", func(t *testing.T) {
		b := newInfo(24+12, 24)
		b.header(24, 3, 1, 0) // DMA_AVAIL
		if _, found, err := parseIOVARanges(b); found || err != nil {
			t.Errorf("found %v, err %v; want neither", found, err)
		}
	})

	for _, tc := range []struct {
		name string
		b    func() infoBuf
		want string
	}{
		{"short info", func() infoBuf { return newInfo(24, 24)[:20] }, "at least 24"},
		{"first capability outside", func() infoBuf { return newInfo(24, 200) }, "outside"},
		{"capability inside the info struct", func() infoBuf { return newInfo(40, 8) }, "outside"},
		{"more ranges than bytes", func() infoBuf {
			b := newInfo(24+16+32, 24)
			b.iovaCap(24, 0, 3, x86...)
			return b
		}, "claims 3 ranges but the info has room for 2"},
		{"huge range count", func() infoBuf {
			b := newInfo(24+16, 24)
			b.iovaCap(24, 0, 0xffffffff)
			return b
		}, "claims 4294967295 ranges"},
		{"loop", func() infoBuf {
			b := newInfo(24+8+8, 24)
			b.header(24, 2, 1, 32)
			b.header(32, 2, 1, 24)
			return b
		}, "loops back"},
		{"cut-off IOVA capability", func() infoBuf {
			b := newInfo(24+12, 24)
			b.header(24, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 1, 0)
			return b
		}, "cut off"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := parseIOVARanges(tc.b())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// The fallback for old kernels must be usable by the allocator and avoid
// the x86 MSI window.
func TestFallbackIOVARanges(t *testing.T) {
	s, err := dma.NewIOVASpace(fallbackIOVARanges, 4096)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range s.Ranges() {
		if r.Start <= 0xfeefffff && r.End >= 0xfee00000 {
			t.Errorf("fallback range %v overlaps the MSI window", r)
		}
	}
}

func TestMemlockCheck(t *testing.T) {
	const add = 1 << 20
	for _, tc := range []struct {
		name string
		m    memlock
		ok   bool
	}{
		{"unlimited", memlock{limit: unix.RLIM_INFINITY, locked: 1 << 40}, true},
		{"CAP_IPC_LOCK", memlock{limit: 64 << 10, locked: 0, capIPC: true}, true},
		{"room for both counts", memlock{limit: 8 << 20, locked: 6 << 20}, true},
		{"exactly enough", memlock{limit: 2*add + 4096, locked: 4096}, true},
		{"room for one count only", memlock{limit: 1<<20 + 4096, locked: 4096}, false},
		{"default 64 KiB", memlock{limit: 64 << 10}, false},
	} {
		err := tc.m.check(add)
		if tc.ok != (err == nil) {
			t.Errorf("%s: check(%d) = %v, want ok=%v", tc.name, add, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrMemlock) {
			t.Errorf("%s: %v does not match ErrMemlock", tc.name, err)
		}
	}
	err := memlock{limit: 64 << 10, locked: 8192}.check(add)
	for _, want := range []string{
		"needs RLIMIT_MEMLOCK of at least 2105344 bytes", // 8192 + 2 MiB
		"the limit is 65536 bytes (64 KiB)",
		"ulimit -l 2056",
		"LimitMEMLOCK=infinity",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("memlock error %q\nlacks %q", err, want)
		}
	}
}

func TestParseVmLck(t *testing.T) {
	status := "Name:\tnvmectl\nVmPeak:\t  10000 kB\nVmLck:\t     132 kB\nVmPin:\t       0 kB\n"
	if n, ok := parseVmLck([]byte(status)); !ok || n != 132*1024 {
		t.Errorf("parseVmLck = %d, %v; want %d", n, ok, 132*1024)
	}
	if _, ok := parseVmLck([]byte("Name:\tx\n")); ok {
		t.Error("parseVmLck found VmLck in a status without it")
	}
	// The real file parses, and the process's own numbers are sane.
	if _, err := currentMemlock(0); err != nil {
		t.Error(err)
	}
}

// fakeTree is a minimal sysfs for Open's checks.
type fakeTree struct {
	t    *testing.T
	root string
}

func newFakeTree(t *testing.T) *fakeTree {
	root := t.TempDir()
	ft := &fakeTree{t, root}
	for _, d := range []string{"bus/pci/devices", "bus/pci/drivers/nvme", "bus/pci/drivers/vfio-pci", "bus/pci/drivers/e1000"} {
		ft.must(os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	return ft
}

func (ft *fakeTree) must(err error) {
	ft.t.Helper()
	if err != nil {
		ft.t.Fatal(err)
	}
}

func (ft *fakeTree) device(addr string, class uint32, driver string, group int) {
	dir := filepath.Join(ft.root, "bus/pci/devices", addr)
	ft.must(os.MkdirAll(dir, 0o755))
	for name, val := range map[string]string{
		"vendor": "0x1b36", "device": "0x0010", "class": fmt.Sprintf("0x%06x", class), "irq": "0",
		"resource": "0x00000000febf0000 0x00000000febf3fff 0x0000000000140204",
	} {
		ft.must(os.WriteFile(filepath.Join(dir, name), []byte(val+"\n"), 0o644))
	}
	if driver != "" {
		ft.must(os.Symlink(filepath.Join(ft.root, "bus/pci/drivers", driver), filepath.Join(dir, "driver")))
	}
	if group >= 0 {
		g := filepath.Join(ft.root, "kernel/iommu_groups", fmt.Sprint(group))
		ft.must(os.MkdirAll(filepath.Join(g, "devices"), 0o755))
		ft.must(os.Symlink(dir, filepath.Join(g, "devices", addr)))
		ft.must(os.Symlink(g, filepath.Join(dir, "iommu_group")))
	}
}

func (ft *fakeTree) opener(devDir string) opener {
	return opener{sys: pci.New(ft.root), devDir: devDir}
}

// The errors a user meets before any ioctl: each names the fix and matches
// its sentinel.
func TestOpenErrors(t *testing.T) {
	ft := newFakeTree(t)
	ft.device("0000:00:03.0", pci.ClassNVMe, "nvme", 3)
	ft.device("0000:00:04.0", pci.ClassNVMe, "", 4)
	ft.device("0000:00:05.0", pci.ClassNVMe, "nvme", -1)
	ft.device("0000:00:06.0", pci.ClassNVMe, "vfio-pci", 6)
	noDev := filepath.Join(t.TempDir(), "vfio") // no /dev/vfio
	o := ft.opener(noDev)

	for _, tc := range []struct {
		addr     string
		sentinel error
		errno    error
		msg      string
	}{
		{"0000:00:03.0", ErrNotBound, nil,
			"vfio: 0000:00:03.0 is bound to nvme, not vfio-pci: run `nvmectl bind 0000:00:03.0`"},
		{"00:03.0", ErrNotBound, nil,
			"vfio: 0000:00:03.0 is bound to nvme, not vfio-pci: run `nvmectl bind 0000:00:03.0`"},
		{"00:04.0", ErrNotBound, nil,
			"vfio: 0000:00:04.0 is not bound to any driver, not vfio-pci: run `nvmectl bind 0000:00:04.0`"},
		{"00:05.0", ErrNoIOMMUGroup, nil,
			"vfio: 0000:00:05.0 has no IOMMU group: the IOMMU is off; boot with intel_iommu=on (amd_iommu=on on AMD)"},
		{"00:06.0", ErrNoVFIO, unix.ENOENT,
			"vfio: " + noDev + "/vfio does not exist: load the vfio-pci module: modprobe vfio-pci"},
		{"00:07.0", ErrNoDevice, nil, "0000:00:07.0: no such PCI device"},
		{"00:03", ErrBadAddress, nil, `"00:03": not a PCI address`},
	} {
		d, err := o.open(tc.addr)
		if err == nil {
			d.Close()
			t.Errorf("Open(%q) succeeded", tc.addr)
			continue
		}
		if !errors.Is(err, tc.sentinel) {
			t.Errorf("Open(%q) = %v, want %v", tc.addr, err, tc.sentinel)
		}
		if tc.errno != nil && !errors.Is(err, tc.errno) {
			t.Errorf("Open(%q) = %v, lost errno %v", tc.addr, err, tc.errno)
		}
		if !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Open(%q) error\n%q\nlacks %q", tc.addr, err, tc.msg)
		}
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// When Open fails after opening fds, it closes them: here /dev/vfio/vfio
// is a regular file, so the first ioctl fails with ENOTTY.
func TestOpenFailureLeaksNothing(t *testing.T) {
	ft := newFakeTree(t)
	ft.device("0000:00:06.0", pci.ClassNVMe, "vfio-pci", 6)
	dev := t.TempDir()
	ft.must(os.WriteFile(filepath.Join(dev, "vfio"), nil, 0o644))
	o := ft.opener(dev)
	before := openFDs(t)
	for i := 0; i < 10; i++ {
		_, err := o.open("0000:00:06.0")
		if !errors.Is(err, unix.ENOTTY) || !strings.Contains(err.Error(), "VFIO_GET_API_VERSION") {
			t.Fatalf("Open with a fake container: %v, want VFIO_GET_API_VERSION: ENOTTY", err)
		}
	}
	if after := openFDs(t); after != before {
		t.Errorf("open fds: %d before, %d after 10 failed Opens", before, after)
	}
}

func TestNotViableMessage(t *testing.T) {
	ft := newFakeTree(t)
	ft.device("0000:00:03.0", pci.ClassNVMe, "vfio-pci", 7)
	ft.device("0000:00:03.1", 0x020000, "e1000", 7)
	ft.device("0000:00:03.2", 0x020000, "", 7)
	fn, err := pci.New(ft.root).Function("0000:00:03.0")
	if err != nil {
		t.Fatal(err)
	}
	err = notViable(pci.New(ft.root), fn)
	if !errors.Is(err, ErrGroupNotViable) {
		t.Errorf("%v does not match ErrGroupNotViable", err)
	}
	want := "vfio: IOMMU group 7 of 0000:00:03.0 is not viable: every device in it must be bound to vfio-pci or to no driver; " +
		"the others are: 0000:00:03.1 (e1000), 0000:00:03.2 (no driver). Bind them to vfio-pci too (nvmectl bind ADDR) or unbind them"
	if err.Error() != want {
		t.Errorf("error\n%q\nwant\n%q", err, want)
	}
}

// A Device that never got its fds (as after a failed Open) and a nil Device
// close cleanly, twice; a closed Device refuses work with ErrClosed.
func TestCloseIdempotent(t *testing.T) {
	var nilDev *Device
	if err := nilDev.Close(); err != nil {
		t.Errorf("nil Close: %v", err)
	}
	s, err := dma.NewIOVASpace(fallbackIOVARanges, 4096)
	if err != nil {
		t.Fatal(err)
	}
	d := &Device{addr: "0000:00:03.0", container: -1, group: -1, fd: -1, maps: map[uint64][]byte{}, iova: s}
	for i := 0; i < 2; i++ {
		if err := d.Close(); err != nil {
			t.Errorf("Close #%d: %v", i+1, err)
		}
	}
	if _, err := d.BAR(0); !errors.Is(err, ErrClosed) {
		t.Errorf("BAR after Close: %v", err)
	}
	if err := d.ReadConfig(0, make([]byte, 2)); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadConfig after Close: %v", err)
	}
	if err := d.Reset(); !errors.Is(err, ErrClosed) {
		t.Errorf("Reset after Close: %v", err)
	}
	if _, err := d.DMA().Alloc(4096); !errors.Is(err, ErrClosed) {
		t.Errorf("DMA Alloc after Close: %v", err)
	}
	if _, err := d.BAR(6); err == nil {
		t.Error("BAR(6) succeeded")
	}
}

func TestConfigBounds(t *testing.T) {
	d := &Device{addr: "0000:00:03.0", fd: -1, config: regionInfo{Size: 256}}
	for _, tc := range []struct{ off, n int }{{-1, 2}, {255, 2}, {256, 1}, {0, 257}} {
		if err := d.ReadConfig(tc.off, make([]byte, tc.n)); err == nil || !strings.Contains(err.Error(), "outside the 0x100-byte config space") {
			t.Errorf("ReadConfig(%d, %d bytes) = %v, want an out-of-range error", tc.off, tc.n, err)
		}
		if err := d.WriteConfig(tc.off, make([]byte, tc.n)); err == nil || !strings.Contains(err.Error(), "outside") {
			t.Errorf("WriteConfig(%d, %d bytes) = %v, want an out-of-range error", tc.off, tc.n, err)
		}
	}
	// In range, the kernel answers (here: EBADF on fd -1), and the error
	// keeps its errno.
	if err := d.ReadConfig(4, make([]byte, 2)); !errors.Is(err, unix.EBADF) {
		t.Errorf("ReadConfig in range on fd -1: %v, want EBADF", err)
	}
}

func TestResetNotOffered(t *testing.T) {
	d := &Device{addr: "0000:00:03.0", fd: -1}
	err := d.Reset()
	if !errors.Is(err, ErrNoReset) || !strings.Contains(err.Error(), "0000:00:03.0 offers no reset") {
		t.Errorf("Reset without VFIO_DEVICE_FLAGS_RESET: %v", err)
	}
}

func TestFreeForeignBuffer(t *testing.T) {
	s, err := dma.NewIOVASpace(fallbackIOVARanges, 4096)
	if err != nil {
		t.Fatal(err)
	}
	d := &Device{addr: "0000:00:03.0", container: -1, maps: map[uint64][]byte{}, iova: s}
	err = d.DMA().Free(dma.Buffer{Bytes: make([]byte, 4096), IOVA: 0x1000})
	if err == nil || !strings.Contains(err.Error(), "not allocated by this device, or freed already") {
		t.Errorf("Free of a foreign buffer: %v", err)
	}
	if err := d.DMA().Free(dma.Buffer{}); err == nil {
		t.Error("Free of a zero Buffer succeeded")
	}
	if _, err := d.DMA().Alloc(0); err == nil {
		t.Error("Alloc(0) succeeded")
	}
	if got := d.DMA().PageSize(); got != 4096 {
		t.Errorf("PageSize = %d", got)
	}
}

// lockedKB returns the process's locked memory (VmLck in /proc/self/status).
// DMA buffers are the only memory it locks (the Go runtime locks none), so
// unlike a count of /proc/self/maps lines, which moves whenever the runtime
// grows its heap, it changes only if a buffer is left mapped.
func lockedKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmLck:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatalf("/proc/self/status: %q: %v", line, err)
			}
			return n
		}
	}
	t.Skip("no VmLck in /proc/self/status")
	return 0
}

// When VFIO_IOMMU_MAP_DMA fails (here on a container fd of -1), Alloc gives
// back the IOVA range and the host memory and keeps the errno.
func TestAllocMapFailureUnwinds(t *testing.T) {
	s, err := dma.NewIOVASpace(fallbackIOVARanges, os.Getpagesize())
	if err != nil {
		t.Fatal(err)
	}
	d := &Device{addr: "0000:00:03.0", container: -1, group: -1, fd: -1, maps: map[uint64][]byte{}, iova: s}
	free, locked := s.Available(), lockedKB(t)
	_, err = d.DMA().Alloc(3 * 4096)
	if errors.Is(err, ErrMemlock) {
		t.Skipf("memlock too low to try: %v", err)
	}
	if !errors.Is(err, unix.EBADF) || !strings.Contains(err.Error(), "VFIO_IOMMU_MAP_DMA") {
		t.Fatalf("Alloc on a bad container: %v, want VFIO_IOMMU_MAP_DMA: EBADF", err)
	}
	if s.Available() != free {
		t.Errorf("IOVA space: %#x free before, %#x after the failed Alloc", free, s.Available())
	}
	if got := lockedKB(t); got != locked {
		t.Errorf("locked memory: %d kB before, %d kB after the failed Alloc: its buffer is still mapped", locked, got)
	}
	if len(d.maps) != 0 || d.pinned != 0 {
		t.Errorf("failed Alloc left %d buffers, %d bytes recorded", len(d.maps), d.pinned)
	}
}
