package nvme

import (
	"fmt"

	"github.com/nvmepoll/nvmepoll/queue"
	"github.com/nvmepoll/nvmepoll/vfio"
	"github.com/nvmepoll/nvmepoll/vfio/dma"
	"github.com/nvmepoll/nvmepoll/vfio/mmio"
)

// OpenPCI opens the NVMe controller at PCI address addr ("0000:01:00.0" or
// "01:00.0"), which must be bound to vfio-pci, and brings it up with Open.
// Close on the Controller shuts the controller down and releases the VFIO
// device.
func OpenPCI(addr string, opts *Options) (*Controller, error) {
	vd, err := vfio.Open(addr)
	if err != nil {
		return nil, fmt.Errorf("nvme: %w", err)
	}
	bar, err := vd.BAR(0)
	if err != nil {
		vd.Close()
		return nil, fmt.Errorf("nvme: %s: BAR0: %w", addr, err)
	}
	// BAR0 must hold the registers and at least the admin doorbells.
	if bar.Len() < RegDoorbellBase+8 {
		vd.Close()
		return nil, fmt.Errorf("nvme: %s: BAR0 is %d bytes, too small for NVMe registers and doorbells: %w", addr, bar.Len(), ErrOutOfSpec)
	}
	c, err := Open(&pciDevice{vd: vd, bar: bar}, opts)
	if err != nil {
		return nil, fmt.Errorf("%w (device %s)", err, addr)
	}
	return c, nil
}

// pciDevice is a VFIO-bound PCI function as a Device: registers and
// doorbells in the mapped BAR0, DMA through the IOMMU, counted against
// RLIMIT_MEMLOCK (a MemlockChecker).
type pciDevice struct {
	vd  *vfio.Device
	bar mmio.Region
}

var _ MemlockChecker = (*pciDevice)(nil)

func (d *pciDevice) Read32(off int) uint32     { return d.bar.Read32(off) }
func (d *pciDevice) Write32(off int, v uint32) { d.bar.Write32(off, v) }
func (d *pciDevice) DMA() dma.Allocator        { return d.vd.DMA() }
func (d *pciDevice) Close() error              { return d.vd.Close() }

// CheckMemlock checks RLIMIT_MEMLOCK for buffers of these sizes as the VFIO
// allocator would count them; the error wraps vfio.ErrMemlock.
func (d *pciDevice) CheckMemlock(sizes ...int) error { return d.vd.CheckMemlock(sizes...) }

// Doorbell returns the register at off as an MMIO doorbell (one plain
// 32-bit store per ring), or an error if off is outside BAR0, which a
// doorbell stride or queue id from the controller can cause.
func (d *pciDevice) Doorbell(off int) (queue.Doorbell, error) {
	w, err := d.bar.Word(off)
	if err != nil {
		return nil, fmt.Errorf("doorbell at %#x: %w", off, err)
	}
	return queue.NewMMIODoorbell(w), nil
}
