package hwtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/nvmepoll/nvmepoll/vfio"
	"github.com/nvmepoll/nvmepoll/vfio/dma"
	"github.com/nvmepoll/nvmepoll/vfio/pci"
)

// NVMe controller registers in BAR0 (NVMe base spec 3.1.4).
const (
	regCAP = 0x00
	regVS  = 0x08
	regCC  = 0x14
)

// QEMU's emulated controller: PCI ID and the version it reports (NVMe 1.4
// since QEMU 6.1; checked against 7.2).
const (
	qemuVendor = 0x1b36
	qemuDevice = 0x0010
	qemuVS     = 0x00010400
)

func inQEMU() bool { return os.Getenv("NVMEPOLL_GUEST") == "qemu" }

// openVFIO opens the test device and closes it when the test ends. A named
// device that cannot be opened fails the test: it must not hide behind a skip.
func openVFIO(t *testing.T) *vfio.Device {
	t.Helper()
	addr := testDevice(t)
	d, err := vfio.Open(addr)
	if err != nil {
		t.Fatalf("vfio.Open(%s): %v", addr, err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

func TestVFIOOpenBAR0(t *testing.T) {
	d := openVFIO(t)
	if got, want := d.Addr(), testDevice(t); got != want {
		t.Errorf("Addr() = %q, want %q", got, want)
	}
	bar, err := d.BAR(0)
	if err != nil {
		t.Fatal(err)
	}
	if bar.Len() < 0x1000+8 {
		t.Errorf("BAR0 is %#x bytes, too small for the registers and the first doorbells", bar.Len())
	}
	// CAP is 64 bits, read as two 32-bit halves, low first.
	lo, hi := bar.Read32(regCAP), bar.Read32(regCAP+4)
	capReg := uint64(hi)<<32 | uint64(lo)
	if capReg == 0 || lo == 0xffffffff || hi == 0xffffffff {
		t.Fatalf("CAP = %#016x: the BAR mapping does not reach the controller", capReg)
	}
	if mqes := capReg & 0xffff; mqes == 0 {
		t.Errorf("CAP = %#016x: MQES 0 is out of spec (queues need 2 entries at least)", capReg)
	}
	vs := bar.Read32(regVS)
	if inQEMU() && vs != qemuVS {
		t.Errorf("VS = %#08x, want %#08x (NVMe 1.4, QEMU's emulated controller)", vs, qemuVS)
	}
	if major := vs >> 16; major < 1 {
		t.Errorf("VS = %#08x: major version %d", vs, major)
	}
	// A second BAR(0) is the same mapping, not a new one.
	bar2, err := d.BAR(0)
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := bar.Word(0)
	p2, _ := bar2.Word(0)
	if p1 != p2 {
		t.Error("BAR(0) twice mapped the BAR twice")
	}
}

func TestVFIOConfigSpace(t *testing.T) {
	d := openVFIO(t)
	cfg := make([]byte, 64)
	if err := d.ReadConfig(0, cfg); err != nil {
		t.Fatal(err)
	}
	vendor := binary.LittleEndian.Uint16(cfg[0:])
	device := binary.LittleEndian.Uint16(cfg[2:])
	class := uint32(cfg[11])<<16 | uint32(cfg[10])<<8 | uint32(cfg[9])
	if inQEMU() && (vendor != qemuVendor || device != qemuDevice) {
		t.Errorf("config space ID %04x:%04x, want %04x:%04x", vendor, device, qemuVendor, qemuDevice)
	}
	// Whatever the controller, config space must agree with sysfs.
	addr := testDevice(t)
	if got, want := fmt.Sprintf("0x%04x", vendor), sysfsString(t, addr, "vendor"); got != want {
		t.Errorf("config space vendor %s, sysfs says %s", got, want)
	}
	if got, want := fmt.Sprintf("0x%04x", device), sysfsString(t, addr, "device"); got != want {
		t.Errorf("config space device %s, sysfs says %s", got, want)
	}
	if class != 0x010802 {
		t.Errorf("class %#06x, want 0x010802", class)
	}
	// Open turned on memory decoding and bus mastering.
	cmd := binary.LittleEndian.Uint16(cfg[4:])
	if cmd&0x6 != 0x6 {
		t.Errorf("command register %#04x: memory space (0x2) and bus master (0x4) should be on after Open", cmd)
	}

	// A write reaches the device: flip INTx disable (harmless: nvmepoll
	// polls) and read it back.
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], cmd^0x400)
	if err := d.WriteConfig(4, b[:]); err != nil {
		t.Fatal(err)
	}
	if err := d.ReadConfig(4, b[:]); err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint16(b[:]); got&0x400 != (cmd^0x400)&0x400 {
		t.Errorf("command register after toggling INTx disable: %#04x, was %#04x", got, cmd)
	}
	binary.LittleEndian.PutUint16(b[:], cmd)
	if err := d.WriteConfig(4, b[:]); err != nil {
		t.Fatal(err)
	}

	if err := d.ReadConfig(4095, make([]byte, 2)); err == nil {
		t.Error("ReadConfig past the end of config space succeeded")
	}
}

func TestVFIODMA(t *testing.T) {
	d := openVFIO(t)
	ranges := d.IOVARanges()
	if len(ranges) == 0 {
		t.Fatal("no IOVA ranges")
	}
	t.Logf("IOVA ranges: %v", ranges)
	a := d.DMA()
	page := a.PageSize()
	if page != os.Getpagesize() {
		t.Errorf("PageSize = %d, host page is %d", page, os.Getpagesize())
	}
	var bufs []dma.Buffer
	for _, size := range []int{1, page, 3*page + 1, 1 << 20} {
		b, err := a.Alloc(size)
		if err != nil {
			t.Fatalf("Alloc(%d): %v", size, err)
		}
		bufs = append(bufs, b)
		want := (size + page - 1) / page * page
		if b.Len() != want {
			t.Errorf("Alloc(%d): %d bytes, want %d", size, b.Len(), want)
		}
		if b.IOVA == 0 || b.IOVA%uint64(page) != 0 {
			t.Errorf("Alloc(%d): IOVA %#x is zero or not page aligned", size, b.IOVA)
		}
		if uintptr(b.Ptr())%uintptr(page) != 0 {
			t.Errorf("Alloc(%d): host address %p not page aligned", size, b.Ptr())
		}
		inside := false
		for _, r := range ranges {
			if b.IOVA >= r.Start && b.IOVA+uint64(b.Len())-1 <= r.End {
				inside = true
			}
		}
		if !inside {
			t.Errorf("Alloc(%d): IOVA %#x+%#x is outside the kernel's ranges %v", size, b.IOVA, b.Len(), ranges)
		}
		for i, x := range b.Bytes {
			if x != 0 {
				t.Fatalf("Alloc(%d): byte %d is %#x, want zeroed memory", size, i, x)
			}
		}
		for i := range b.Bytes {
			b.Bytes[i] = byte(i)
		}
	}
	for i := range bufs {
		for j := range i {
			x, y := bufs[i], bufs[j]
			if x.IOVA < y.IOVA+uint64(y.Len()) && y.IOVA < x.IOVA+uint64(x.Len()) {
				t.Errorf("buffers %d and %d overlap in IOVA space: %#x+%#x and %#x+%#x", i, j, x.IOVA, x.Len(), y.IOVA, y.Len())
			}
		}
	}
	// Free two; the third and fourth are left for Close to release.
	for _, b := range bufs[:2] {
		if err := a.Free(b); err != nil {
			t.Errorf("Free(IOVA %#x): %v", b.IOVA, err)
		}
	}
	if err := a.Free(bufs[0]); err == nil {
		t.Error("second Free of the same buffer succeeded")
	}
	// A freed range is handed out again (first fit) and the kernel maps
	// it again, so the unmap really released it.
	b, err := a.Alloc(page)
	if err != nil {
		t.Fatalf("Alloc after Free: %v", err)
	}
	if b.IOVA != bufs[0].IOVA {
		t.Errorf("re-allocated IOVA %#x, want the first freed one, %#x", b.IOVA, bufs[0].IOVA)
	}
}

func TestVFIOReset(t *testing.T) {
	d := openVFIO(t)
	bar, err := d.BAR(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Reset(); errors.Is(err, vfio.ErrNoReset) {
		if inQEMU() {
			t.Fatalf("QEMU's NVMe controller has FLR, but: %v", err)
		}
		t.Skipf("device offers no reset: %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
	// Leave a mark in CC with the controller disabled (IOSQES=6,
	// IOCQES=4, EN=0 is legal), then check that a reset clears it.
	const mark = 6<<16 | 4<<20
	bar.Write32(regCC, mark)
	if got := bar.Read32(regCC); got != mark {
		t.Skipf("CC reads %#08x after writing %#08x with EN=0: this controller does not keep CC, so the reset cannot be observed through it", got, mark)
	}
	if err := d.Reset(); err != nil {
		t.Fatal(err)
	}
	if cc := bar.Read32(regCC); cc != 0 {
		t.Errorf("CC = %#08x after Reset, want 0: the controller was not reset", cc)
	}
	// The mapping survives the reset and the controller answers through it.
	if lo := bar.Read32(regCAP); lo == 0 || lo == 0xffffffff {
		t.Errorf("CAP low = %#08x after Reset", lo)
	}
	var b [2]byte
	if err := d.ReadConfig(4, b[:]); err != nil {
		t.Fatal(err)
	}
	if cmd := binary.LittleEndian.Uint16(b[:]); cmd&0x6 != 0x6 {
		t.Errorf("command register %#04x after Reset: memory space and bus master should be back on", cmd)
	}
}

// One user per group: a second Open of the same device says so.
func TestVFIOOpenTwice(t *testing.T) {
	d := openVFIO(t)
	d2, err := vfio.Open(d.Addr())
	if err == nil {
		d2.Close()
		t.Fatal("a second Open of an open device succeeded")
	}
	if !errors.Is(err, vfio.ErrBusy) {
		t.Errorf("second Open: %v, want ErrBusy", err)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// mappings summarizes /proc/self/smaps: every mapping, and the two kinds
// vfio makes. DMA buffers are locked (VmFlags "lo"); BAR mappings are
// device memory (VmFlags "io"). The Go runtime makes neither, so unlike the
// total, which moves as the heap grows, their counts must come back exactly.
type mappings struct {
	total, locked, io int
	vfio              []string // lines naming a VFIO file
}

func readMappings(t *testing.T) mappings {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var m mappings
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 0:
		case f[0] == "VmFlags:":
			for _, fl := range f[1:] {
				switch fl {
				case "lo":
					m.locked++
				case "io":
					m.io++
				}
			}
		case strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			// A mapping's header line: "start-end perms offset dev inode [path]".
			m.total++
			if strings.Contains(l, "vfio") {
				m.vfio = append(m.vfio, l)
			}
		}
	}
	return m
}

// vmLck is the process's locked memory in kB: what mlock locked plus what
// VFIO pinned for DMA.
func vmLck(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmLck:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmLck:"))
		}
	}
	t.Fatal("no VmLck in /proc/self/status")
	return ""
}

// Open and Close release everything, including a BAR mapping and a DMA
// buffer the caller never freed: after 100 rounds the process has the same
// open fds, the same locked and device mappings, and the same locked memory
// as before.
func TestVFIOOpenCloseLeaks(t *testing.T) {
	addr := testDevice(t)
	round := func(i int) {
		d, err := vfio.Open(addr)
		if err != nil {
			t.Fatalf("round %d: Open: %v", i, err)
		}
		bar, err := d.BAR(0)
		if err != nil {
			t.Fatalf("round %d: BAR(0): %v", i, err)
		}
		if bar.Read32(regCAP) == 0xffffffff {
			t.Fatalf("round %d: CAP reads all ones", i)
		}
		if _, err := d.DMA().Alloc(2 * os.Getpagesize()); err != nil {
			t.Fatalf("round %d: Alloc: %v", i, err)
		}
		if i == 0 {
			// The counters do see what a Device holds.
			if m := readMappings(t); m.io < 1 || m.locked < 1 || len(m.vfio) < 1 {
				t.Fatalf("with a Device open: %d device, %d locked, %d vfio mappings; the leak check cannot see them", m.io, m.locked, len(m.vfio))
			}
		}
		if err := d.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", i, err)
		}
		if err := d.Close(); err != nil {
			t.Fatalf("round %d: second Close: %v", i, err)
		}
	}
	// One round first, so one-time runtime and library set-up is not
	// counted as a leak.
	round(-1)
	runtime.GC()
	fds, maps, locked := countFDs(t), readMappings(t), vmLck(t)
	for i := 0; i < 100; i++ {
		round(i)
	}
	runtime.GC()
	if got := countFDs(t); got != fds {
		t.Errorf("open fds: %d before 100 Open/Close rounds, %d after", fds, got)
	}
	after := readMappings(t)
	if after.locked != maps.locked || after.io != maps.io {
		t.Errorf("mappings before 100 Open/Close rounds: %d locked, %d device; after: %d locked, %d device",
			maps.locked, maps.io, after.locked, after.io)
	}
	for _, l := range after.vfio {
		t.Errorf("a VFIO mapping survived Close: %s", l)
	}
	if got := vmLck(t); got != locked {
		t.Errorf("VmLck: %s before 100 Open/Close rounds, %s after: DMA memory stayed locked or pinned", locked, got)
	}
	// The total moves with the Go heap, so it is reported, not checked.
	t.Logf("/proc/self/maps: %d mappings before, %d after", maps.total, after.total)
}

// kernelDevice returns a controller left to the kernel's nvme driver
// (NVMEPOLL_KERNEL_DEVICES, from scripts/guest.sh --nvme-kernel), or skips.
func kernelDevice(t *testing.T) string {
	t.Helper()
	testDevice(t)
	devs, err := parseDeviceList(os.Getenv("NVMEPOLL_KERNEL_DEVICES"))
	if err != nil {
		t.Fatalf("NVMEPOLL_KERNEL_DEVICES: %v", err)
	}
	var addrs []string
	for _, a := range devs {
		addrs = append(addrs, a)
	}
	if len(addrs) == 0 {
		t.Skip("no controller on the kernel nvme driver (scripts/guest.sh --nvme-kernel SERIAL adds one)")
	}
	slices.Sort(addrs)
	checkPCIDevice(t, "NVMEPOLL_KERNEL_DEVICES", addrs[0])
	return addrs[0]
}

// The real sysfs round trip: a kernel-owned controller is refused by Open
// with the bind command, Bind hands it to vfio-pci (twice is a no-op), Open
// then works, and Unbind gives it back to nvme.
func TestPCIBindUnbind(t *testing.T) {
	addr := kernelDevice(t)
	f, err := pci.Lookup(addr)
	if err != nil {
		t.Fatal(err)
	}
	if f.Driver != pci.DriverNVMe || f.IOMMUGroup < 0 || f.Class != pci.ClassNVMe {
		t.Fatalf("kernel controller %v: want an NVMe controller on nvme with an IOMMU group", f)
	}
	found := false
	list, err := pci.NVMe()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range list {
		found = found || l.Addr == addr && l.Driver == pci.DriverNVMe
	}
	if !found {
		t.Errorf("pci.NVMe() = %v, lacks %s on nvme", list, addr)
	}

	_, err = vfio.Open(addr)
	want := "vfio: " + addr + " is bound to nvme, not vfio-pci: run `nvmectl bind " + addr + "`"
	if !errors.Is(err, vfio.ErrNotBound) || err.Error() != want {
		t.Fatalf("Open of a controller on nvme: %v\nwant %s", err, want)
	}

	t.Cleanup(func() {
		if b, err := pci.Unbind(addr); err != nil {
			t.Errorf("Unbind in cleanup: %v (%v)", err, b)
		}
	})
	b, err := pci.Bind(addr)
	if err != nil {
		t.Fatalf("Bind: %v", err)
	}
	t.Logf("Bind: %v", b)
	if b.From != pci.DriverNVMe || b.To != pci.DriverVFIO || len(b.Steps) == 0 {
		t.Errorf("Bind = %+v, want nvme -> vfio-pci", b)
	}
	if b, err := pci.Bind(addr); err != nil || len(b.Steps) != 0 {
		t.Errorf("second Bind = %v, %v; want nothing done", b, err)
	}

	d, err := vfio.Open(addr)
	if err != nil {
		t.Fatalf("Open after Bind: %v", err)
	}
	bar, err := d.BAR(0)
	if err == nil && (bar.Read32(regCAP) == 0 || bar.Read32(regCAP) == 0xffffffff) {
		t.Errorf("CAP low = %#x after Bind", bar.Read32(regCAP))
	}
	if err != nil {
		t.Error(err)
	}
	if err := d.Close(); err != nil {
		t.Error(err)
	}

	b, err = pci.Unbind(addr)
	if err != nil {
		t.Fatalf("Unbind: %v", err)
	}
	t.Logf("Unbind: %v", b)
	if b.From != pci.DriverVFIO || b.To != pci.DriverNVMe {
		t.Errorf("Unbind = %+v, want vfio-pci -> nvme", b)
	}
	if f, err := pci.Lookup(addr); err != nil || f.Driver != pci.DriverNVMe || f.Override != "" {
		t.Errorf("after Unbind: %+v, %v; want nvme and no driver_override", f, err)
	}
}
