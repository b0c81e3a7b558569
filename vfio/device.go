package vfio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
	"github.com/nvmepoll/nvmepoll/vfio/mmio"
	"github.com/nvmepoll/nvmepoll/vfio/pci"
)

// PCI configuration space: the command register and the two bits Open sets.
const (
	pciCommand       = 0x04
	pciCommandMemory = 1 << 1 // respond to memory-space accesses (BARs)
	pciCommandMaster = 1 << 2 // bus mastering: the device may DMA
)

// Device is a PCI function opened through VFIO: its container, group and
// device fds, its BAR mappings and the DMA buffers mapped for it. All of them
// are released by Close. The methods are safe for concurrent use; none of
// them is meant for the I/O path, which uses the mmio.Region from BAR and the
// dma.Buffers directly.
type Device struct {
	addr string

	mu        sync.Mutex
	closed    bool
	container int // /dev/vfio/vfio
	group     int // /dev/vfio/$GROUP
	fd        int // from VFIO_GROUP_GET_DEVICE_FD
	info      deviceInfo
	config    regionInfo
	bars      [VFIO_PCI_BAR5_REGION_INDEX + 1][]byte // mmapped BARs, nil until BAR(i)
	msix      []*Interrupt                           // per MSI-X vector; nil until the first Interrupt (irq.go)

	ranges []dma.Range       // as the kernel reported them
	iova   *dma.IOVASpace    // allocator over ranges
	maps   map[uint64][]byte // DMA buffers by IOVA
	pinned uint64            // bytes in maps
}

// opener holds where Open looks, so tests can point it at a fake sysfs and
// a /dev without VFIO.
type opener struct {
	sys    *pci.Sysfs
	devDir string // /dev/vfio
}

var system = opener{sys: pci.New("/sys"), devDir: "/dev/vfio"}

// Open opens the PCI function at addr ("0000:00:03.0" or "00:03.0"), which
// must be bound to vfio-pci: it sets up a type1v2 IOMMU container for its
// IOMMU group, gets the device fd, reads the allowed IOVA ranges and turns on
// memory-space decoding and bus mastering in the PCI command register.
// Errors name the fix; see the package documentation.
func Open(addr string) (*Device, error) { return system.open(addr) }

func (o opener) open(addr string) (*Device, error) {
	fn, err := o.sys.Function(addr)
	if err != nil {
		return nil, err // already says "pci: <addr>: ..." with the fix
	}
	if err := preflight(fn); err != nil {
		return nil, err
	}
	d := &Device{addr: fn.Addr, container: -1, group: -1, fd: -1, maps: map[uint64][]byte{}}
	if err := d.setup(o, fn); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// preflight checks in sysfs what would otherwise surface as an obscure
// ioctl failure.
func preflight(fn pci.Function) error {
	if fn.IOMMUGroup < 0 {
		return &hintError{
			msg:      fmt.Sprintf("vfio: %s has no IOMMU group: the IOMMU is off; boot with intel_iommu=on (amd_iommu=on on AMD)", fn.Addr),
			sentinel: ErrNoIOMMUGroup,
		}
	}
	if fn.Driver != pci.DriverVFIO {
		bound := "is bound to " + fn.Driver
		if fn.Driver == "" {
			bound = "is not bound to any driver"
		}
		return &hintError{
			msg:      fmt.Sprintf("vfio: %s %s, not vfio-pci: run `nvmectl bind %s`", fn.Addr, bound, fn.Addr),
			sentinel: ErrNotBound,
		}
	}
	return nil
}

// openNode opens a /dev/vfio node, turning the usual failures into hints.
func openNode(path string, group int) (int, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err == nil {
		return fd, nil
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return -1, &hintError{
			msg:      fmt.Sprintf("vfio: %s does not exist: load the vfio-pci module: modprobe vfio-pci", path),
			sentinel: ErrNoVFIO, cause: err,
		}
	case errors.Is(err, unix.EBUSY):
		return -1, &hintError{
			msg:      fmt.Sprintf("vfio: %s: IOMMU group %d is already open, by another process or another Device in this one (a VFIO group has one user at a time)", path, group),
			sentinel: ErrBusy, cause: err,
		}
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return -1, fmt.Errorf("vfio: opening %s: %w (run as root, or give your user the device node: chown $USER %s)", path, err, path)
	}
	return -1, fmt.Errorf("vfio: opening %s: %w", path, err)
}

func (d *Device) setup(o opener, fn pci.Function) error {
	var err error
	if d.container, err = openNode(filepath.Join(o.devDir, "vfio"), fn.IOMMUGroup); err != nil {
		return err
	}
	if v, err := ioctl(d.container, VFIO_GET_API_VERSION, nil, 0); err != nil {
		return fmt.Errorf("vfio: %w", err)
	} else if v != VFIO_API_VERSION {
		return &hintError{msg: fmt.Sprintf("vfio: kernel VFIO API version %d, want %d", v, VFIO_API_VERSION), sentinel: ErrUnsupported}
	}
	if ok, err := ioctl(d.container, VFIO_CHECK_EXTENSION, nil, VFIO_TYPE1v2_IOMMU); err != nil {
		return fmt.Errorf("vfio: %w", err)
	} else if ok != 1 {
		return &hintError{
			msg:      "vfio: the kernel offers no type1v2 IOMMU (VFIO_TYPE1v2_IOMMU): load it with modprobe vfio_iommu_type1, and check the IOMMU is on (intel_iommu=on)",
			sentinel: ErrUnsupported,
		}
	}

	if d.group, err = openNode(filepath.Join(o.devDir, fmt.Sprint(fn.IOMMUGroup)), fn.IOMMUGroup); err != nil {
		return err
	}
	st := groupStatus{Argsz: uint32(unsafe.Sizeof(groupStatus{}))}
	if _, err := ioctl(d.group, VFIO_GROUP_GET_STATUS, unsafe.Pointer(&st), 0); err != nil {
		return fmt.Errorf("vfio: IOMMU group %d: %w", fn.IOMMUGroup, err)
	}
	if st.Flags&VFIO_GROUP_FLAGS_VIABLE == 0 {
		return notViable(o.sys, fn)
	}
	cfd := int32(d.container)
	if _, err := ioctl(d.group, VFIO_GROUP_SET_CONTAINER, unsafe.Pointer(&cfd), 0); err != nil {
		return fmt.Errorf("vfio: IOMMU group %d: %w", fn.IOMMUGroup, err)
	}
	if _, err := ioctl(d.container, VFIO_SET_IOMMU, nil, VFIO_TYPE1v2_IOMMU); err != nil {
		return fmt.Errorf("vfio: %w", err)
	}
	if err := d.setupIOVA(); err != nil {
		return err
	}

	name := append([]byte(fn.Addr), 0)
	dfd, err := ioctl(d.group, VFIO_GROUP_GET_DEVICE_FD, unsafe.Pointer(&name[0]), 0)
	if err != nil {
		return fmt.Errorf("vfio: %s: %w", fn.Addr, err)
	}
	d.fd = int(dfd)
	d.info = deviceInfo{Argsz: uint32(unsafe.Sizeof(deviceInfo{}))}
	if _, err := ioctl(d.fd, VFIO_DEVICE_GET_INFO, unsafe.Pointer(&d.info), 0); err != nil {
		return fmt.Errorf("vfio: %s: %w", fn.Addr, err)
	}
	if d.info.Flags&VFIO_DEVICE_FLAGS_PCI == 0 || d.info.NumRegions <= VFIO_PCI_CONFIG_REGION_INDEX {
		return &hintError{
			msg:      fmt.Sprintf("vfio: %s is not a vfio-pci device (flags %#x, %d regions)", fn.Addr, d.info.Flags, d.info.NumRegions),
			sentinel: ErrUnsupported,
		}
	}
	if d.config, err = d.regionInfo(VFIO_PCI_CONFIG_REGION_INDEX); err != nil {
		return err
	}
	return d.enable()
}

// setupIOVA asks the IOMMU for its page sizes and valid IOVA ranges and
// builds the allocator over them.
func (d *Device) setupIOVA() error {
	buf := make([]byte, unsafe.Sizeof(iommuType1Info{}))
	for {
		binary.NativeEndian.PutUint32(buf, uint32(len(buf))) // argsz
		if _, err := ioctl(d.container, VFIO_IOMMU_GET_INFO, unsafe.Pointer(&buf[0]), 0); err != nil {
			return fmt.Errorf("vfio: %w", err)
		}
		// The kernel raises argsz when the capability chain does not
		// fit; ask again with room for it.
		need := binary.NativeEndian.Uint32(buf)
		if int(need) <= len(buf) {
			break
		}
		if need > 1<<20 {
			return fmt.Errorf("vfio: VFIO_IOMMU_GET_INFO asks for %d bytes", need)
		}
		buf = make([]byte, need)
	}
	page := unix.Getpagesize()
	flags := binary.NativeEndian.Uint32(buf[4:])
	if pgsizes := binary.NativeEndian.Uint64(buf[8:]); flags&VFIO_IOMMU_INFO_PGSIZES != 0 && pgsizes != 0 {
		if smallest := pgsizes & -pgsizes; smallest > uint64(page) {
			return &hintError{
				msg:      fmt.Sprintf("vfio: the IOMMU's smallest page is %d bytes, larger than the %d-byte host page", smallest, page),
				sentinel: ErrUnsupported,
			}
		}
	}
	ranges, found, err := parseIOVARanges(buf)
	if err != nil {
		return err
	}
	if !found {
		ranges = fallbackIOVARanges
	}
	d.ranges = ranges
	if d.iova, err = dma.NewIOVASpace(ranges, page); err != nil {
		return fmt.Errorf("vfio: %w", err)
	}
	return nil
}

// notViable explains a group that cannot be used: the other devices in it
// and their drivers.
func notViable(sys *pci.Sysfs, fn pci.Function) error {
	var others []string
	if members, err := sys.Group(fn.IOMMUGroup); err == nil {
		for _, m := range members {
			if m.Addr == fn.Addr {
				continue
			}
			drv := m.Driver
			if drv == "" {
				drv = "no driver"
			}
			others = append(others, fmt.Sprintf("%s (%s)", m.Addr, drv))
		}
	}
	list := "none found in " + filepath.Join(sys.Root(), "kernel", "iommu_groups", fmt.Sprint(fn.IOMMUGroup), "devices")
	if len(others) > 0 {
		list = strings.Join(others, ", ")
	}
	return &hintError{
		msg: fmt.Sprintf("vfio: IOMMU group %d of %s is not viable: every device in it must be bound to vfio-pci or to no driver; "+
			"the others are: %s. Bind them to vfio-pci too (nvmectl bind ADDR) or unbind them", fn.IOMMUGroup, fn.Addr, list),
		sentinel: ErrGroupNotViable,
	}
}

func (d *Device) regionInfo(index int) (regionInfo, error) {
	ri := regionInfo{Argsz: uint32(unsafe.Sizeof(regionInfo{})), Index: uint32(index)}
	if _, err := ioctl(d.fd, VFIO_DEVICE_GET_REGION_INFO, unsafe.Pointer(&ri), 0); err != nil {
		return ri, fmt.Errorf("vfio: %s region %d: %w", d.addr, index, err)
	}
	return ri, nil
}

// enable sets memory-space decoding and bus mastering, which the device
// needs to answer BAR accesses and to DMA. A reset clears them.
func (d *Device) enable() error {
	var b [2]byte
	if err := d.readConfig(pciCommand, b[:]); err != nil {
		return err
	}
	cmd := binary.LittleEndian.Uint16(b[:])
	if cmd&(pciCommandMemory|pciCommandMaster) == pciCommandMemory|pciCommandMaster {
		return nil
	}
	binary.LittleEndian.PutUint16(b[:], cmd|pciCommandMemory|pciCommandMaster)
	return d.writeConfig(pciCommand, b[:])
}

// Addr is the normalized PCI address, "0000:00:03.0".
func (d *Device) Addr() string { return d.addr }

// IOVARanges returns the IOVA ranges (inclusive) the kernel allows for DMA,
// or, on kernels before 5.4 that do not report them, a conservative default.
func (d *Device) IOVARanges() []dma.Range { return append([]dma.Range(nil), d.ranges...) }

// BAR maps BAR i (0..5) on first use and returns it. The mapping lives until
// Close; do not use the Region after that.
func (d *Device) BAR(i int) (mmio.Region, error) {
	if i < 0 || i > VFIO_PCI_BAR5_REGION_INDEX {
		return mmio.Region{}, fmt.Errorf("vfio: %s: BAR %d does not exist (0..5)", d.addr, i)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.barLocked(i)
}

// barLocked is BAR with d.mu held.
func (d *Device) barLocked(i int) (mmio.Region, error) {
	if d.closed {
		return mmio.Region{}, d.errClosed()
	}
	if d.bars[i] != nil {
		return mmio.NewRegion(d.bars[i]), nil
	}
	ri, err := d.regionInfo(i)
	if err != nil {
		return mmio.Region{}, err
	}
	switch {
	case ri.Size == 0:
		return mmio.Region{}, fmt.Errorf("vfio: %s: BAR %d is not implemented", d.addr, i)
	case ri.Flags&VFIO_REGION_INFO_FLAG_MMAP == 0:
		return mmio.Region{}, fmt.Errorf("vfio: %s: BAR %d (%d bytes) cannot be mapped (an I/O port BAR, or smaller than a page)", d.addr, i, ri.Size)
	case ri.Size > math.MaxInt || ri.Offset > math.MaxInt64:
		return mmio.Region{}, fmt.Errorf("vfio: %s: BAR %d is %d bytes at offset %#x, too big to map", d.addr, i, ri.Size, ri.Offset)
	}
	mem, err := unix.Mmap(d.fd, int64(ri.Offset), int(ri.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return mmio.Region{}, fmt.Errorf("vfio: %s: mapping BAR %d (%d bytes): %w", d.addr, i, ri.Size, err)
	}
	d.bars[i] = mem
	return mmio.NewRegion(mem), nil
}

// ReadConfig reads len(b) bytes of PCI configuration space at off.
func (d *Device) ReadConfig(off int, b []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return d.errClosed()
	}
	return d.readConfig(off, b)
}

// WriteConfig writes b to PCI configuration space at off. vfio-pci filters
// what reaches the device (BARs and MSI-X are virtualized).
func (d *Device) WriteConfig(off int, b []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return d.errClosed()
	}
	return d.writeConfig(off, b)
}

func (d *Device) checkConfig(op string, off, n int) error {
	if off < 0 || n < 0 || uint64(off)+uint64(n) > d.config.Size {
		return fmt.Errorf("vfio: %s: %s of %d bytes at config offset %#x is outside the %#x-byte config space", d.addr, op, n, off, d.config.Size)
	}
	return nil
}

func (d *Device) readConfig(off int, b []byte) error {
	if err := d.checkConfig("read", off, len(b)); err != nil {
		return err
	}
	n, err := unix.Pread(d.fd, b, int64(d.config.Offset)+int64(off))
	if err == nil && n != len(b) {
		err = fmt.Errorf("short read of %d bytes", n)
	}
	if err != nil {
		return fmt.Errorf("vfio: %s: reading %d bytes of config space at %#x: %w", d.addr, len(b), off, err)
	}
	return nil
}

func (d *Device) writeConfig(off int, b []byte) error {
	if err := d.checkConfig("write", off, len(b)); err != nil {
		return err
	}
	n, err := unix.Pwrite(d.fd, b, int64(d.config.Offset)+int64(off))
	if err == nil && n != len(b) {
		err = fmt.Errorf("short write of %d bytes", n)
	}
	if err != nil {
		return fmt.Errorf("vfio: %s: writing %d bytes of config space at %#x: %w", d.addr, len(b), off, err)
	}
	return nil
}

// Reset resets the function with VFIO_DEVICE_RESET (a function-level or
// similar reset chosen by the kernel) and turns memory decoding and bus
// mastering back on. BAR mappings and DMA buffers stay valid; the device's
// registers start over. The error wraps ErrNoReset when the device does
// not offer a reset.
func (d *Device) Reset() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return d.errClosed()
	}
	if d.info.Flags&VFIO_DEVICE_FLAGS_RESET == 0 {
		return &hintError{
			msg:      fmt.Sprintf("vfio: %s offers no reset (VFIO_DEVICE_FLAGS_RESET is not set): reset the controller through its registers instead (CC.EN=0)", d.addr),
			sentinel: ErrNoReset,
		}
	}
	if _, err := ioctl(d.fd, VFIO_DEVICE_RESET, nil, 0); err != nil {
		return fmt.Errorf("vfio: %s: %w", d.addr, err)
	}
	return d.enable()
}

func (d *Device) errClosed() error {
	return fmt.Errorf("vfio: %s: %w", d.addr, ErrClosed)
}

// Close unmaps every DMA buffer and BAR and closes the device, group and
// container fds, in that order. It is safe to call more than once and on a
// nil Device; only the first call does anything. All failures are joined.
func (d *Device) Close() error {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	var errs []error
	// Interrupts first: the device must stop signalling before its
	// eventfds go away.
	if err := d.disableMSIX(); err != nil {
		errs = append(errs, err)
	}
	for iova, mem := range d.maps {
		if err := d.unmapDMA(iova, mem); err != nil {
			errs = append(errs, err)
		}
		if _, still := d.maps[iova]; still {
			// The kernel refused the unmap but still holds the
			// pages, so freeing our view is safe; closing the
			// container below drops the mapping.
			errs = append(errs, dma.UnmapHost(mem))
			delete(d.maps, iova)
		}
	}
	for i, mem := range d.bars {
		if mem != nil {
			if err := unix.Munmap(mem); err != nil {
				errs = append(errs, fmt.Errorf("vfio: %s: unmapping BAR %d: %w", d.addr, i, err))
			}
			d.bars[i] = nil
		}
	}
	// The device fd first: the group leaves its container only when no
	// device fd is open, and the container drops its IOMMU last.
	for _, p := range []*int{&d.fd, &d.group, &d.container} {
		if *p >= 0 {
			if err := unix.Close(*p); err != nil {
				errs = append(errs, fmt.Errorf("vfio: %s: closing fd %d: %w", d.addr, *p, err))
			}
			*p = -1
		}
	}
	return errors.Join(errs...)
}
