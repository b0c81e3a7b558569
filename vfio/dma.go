package vfio

import (
	"errors"
	"fmt"
	"math"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// DMA returns the allocator for memory this device can reach: host memory
// from dma.MapHost, mapped through the IOMMU at an IOVA from the kernel's
// allowed ranges. Buffers still allocated are released by Close.
func (d *Device) DMA() dma.Allocator { return allocator{d} }

type allocator struct{ d *Device }

func (a allocator) Alloc(size int) (dma.Buffer, error) { return a.d.alloc(size) }
func (a allocator) Free(b dma.Buffer) error            { return a.d.free(b) }
func (a allocator) PageSize() int                      { return a.d.iova.PageSize() }

// dmaSize is how many bytes Alloc maps for a request of size bytes: size
// rounded up to the IOMMU page.
func (d *Device) dmaSize(size int) (int, error) {
	page := d.iova.PageSize()
	if size <= 0 || size > math.MaxInt-page {
		return 0, fmt.Errorf("vfio: %s: cannot allocate %d bytes for DMA", d.addr, size)
	}
	return (size + page - 1) &^ (page - 1), nil
}

// CheckMemlock reports whether DMA buffers of these sizes could all be
// mapped now without passing RLIMIT_MEMLOCK. It maps nothing and counts as
// Alloc does: each size rounded up to the IOMMU page, each byte twice
// (mlock, then VFIO's pinning), on top of what the process has locked
// already. A caller about to map several buffers calls it first with all of
// them, so that a low limit fails before anything is half-built and the
// error gives the total; each Alloc still checks its own buffer. The error
// wraps ErrMemlock and names the bytes needed, the limit and how to raise
// it.
func (d *Device) CheckMemlock(sizes ...int) error {
	var total uint64
	for _, size := range sizes {
		n, err := d.dmaSize(size)
		if err != nil {
			return err
		}
		if total > math.MaxInt64-uint64(n) {
			return fmt.Errorf("vfio: %s: %d DMA buffers add up to more than %d bytes", d.addr, len(sizes), int64(math.MaxInt64))
		}
		total += uint64(n)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return d.errClosed()
	}
	ml, err := readMemlock(2 * d.pinned)
	if err != nil {
		return err
	}
	return ml.check(total)
}

func (d *Device) alloc(size int) (dma.Buffer, error) {
	n, err := d.dmaSize(size)
	if err != nil {
		return dma.Buffer{}, err
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return dma.Buffer{}, d.errClosed()
	}
	// Check the limit first, so the user gets numbers and a fix
	// instead of an mlock or MAP_DMA failure.
	ml, err := readMemlock(2 * d.pinned)
	if err != nil {
		return dma.Buffer{}, err
	}
	if err := ml.check(uint64(n)); err != nil {
		return dma.Buffer{}, err
	}
	mem, err := dma.MapHost(n)
	if err != nil {
		return dma.Buffer{}, fmt.Errorf("vfio: %s: %w", d.addr, err)
	}
	iova, err := d.iova.Alloc(uint64(n))
	if err != nil {
		dma.UnmapHost(mem)
		return dma.Buffer{}, fmt.Errorf("vfio: %s: %w", d.addr, err)
	}
	m := dmaMap{
		Argsz: uint32(unsafe.Sizeof(dmaMap{})),
		Flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		// mem is an mmap outside the Go heap: its address is stable.
		Vaddr: uint64(uintptr(unsafe.Pointer(&mem[0]))),
		IOVA:  iova,
		Size:  uint64(n),
	}
	if _, err := ioctl(d.container, VFIO_IOMMU_MAP_DMA, unsafe.Pointer(&m), 0); err != nil {
		d.iova.Free(iova, uint64(n))
		dma.UnmapHost(mem)
		return dma.Buffer{}, d.mapError(n, iova, err)
	}
	d.maps[iova] = mem
	d.pinned += uint64(n)
	return dma.Buffer{Bytes: mem, IOVA: iova}, nil
}

// mapError explains a VFIO_IOMMU_MAP_DMA failure.
func (d *Device) mapError(n int, iova uint64, err error) error {
	switch {
	case errors.Is(err, unix.ENOMEM):
		// type1 says ENOMEM when pinning would pass RLIMIT_MEMLOCK.
		lim := "unknown"
		if ml, e := currentMemlock(0); e == nil {
			lim = fmt.Sprintf("%d bytes, %d locked", ml.limit, ml.locked)
		}
		return &hintError{
			msg: fmt.Sprintf("vfio: %s: mapping %d bytes at IOVA %#x: %v (RLIMIT_MEMLOCK: %s; %d bytes already mapped for DMA): "+
				"raise it with `ulimit -l unlimited`, LimitMEMLOCK=infinity in a systemd unit, or run as root", d.addr, n, iova, err, lim, d.pinned),
			sentinel: ErrMemlock, cause: err,
		}
	case errors.Is(err, unix.ENOSPC):
		return fmt.Errorf("vfio: %s: mapping %d bytes at IOVA %#x: %w (too many DMA mappings: see vfio_iommu_type1's dma_entry_limit; allocate fewer, larger buffers)", d.addr, n, iova, err)
	}
	return fmt.Errorf("vfio: %s: mapping %d bytes at IOVA %#x: %w", d.addr, n, iova, err)
}

func (d *Device) free(b dma.Buffer) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		// Close released every buffer already.
		return d.errClosed()
	}
	mem, ok := d.maps[b.IOVA]
	if !ok || len(b.Bytes) == 0 || len(mem) != len(b.Bytes) || &mem[0] != &b.Bytes[0] {
		return fmt.Errorf("vfio: %s: freeing DMA buffer at IOVA %#x (%d bytes): not allocated by this device, or freed already", d.addr, b.IOVA, len(b.Bytes))
	}
	return d.unmapDMA(b.IOVA, mem)
}

// unmapDMA removes a buffer from the IOMMU, then releases its IOVA range and
// host memory. If the kernel refuses, the buffer stays recorded so its IOVA
// is not handed out again.
func (d *Device) unmapDMA(iova uint64, mem []byte) error {
	u := dmaUnmap{Argsz: uint32(unsafe.Sizeof(dmaUnmap{})), IOVA: iova, Size: uint64(len(mem))}
	if _, err := ioctl(d.container, VFIO_IOMMU_UNMAP_DMA, unsafe.Pointer(&u), 0); err != nil {
		return fmt.Errorf("vfio: %s: unmapping %d bytes at IOVA %#x: %w", d.addr, len(mem), iova, err)
	}
	if u.Size != uint64(len(mem)) {
		return fmt.Errorf("vfio: %s: unmapping %d bytes at IOVA %#x: the kernel unmapped %d", d.addr, len(mem), iova, u.Size)
	}
	delete(d.maps, iova)
	d.pinned -= uint64(len(mem))
	var errs []error
	if err := d.iova.Free(iova, uint64(len(mem))); err != nil {
		errs = append(errs, err)
	}
	if err := dma.UnmapHost(mem); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
