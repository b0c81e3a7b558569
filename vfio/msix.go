package vfio

import (
	"encoding/binary"
	"fmt"

	"github.com/nvmepoll/nvmepoll/vfio/mmio"
)

// PCI configuration space offsets and the MSI-X capability (PCI 3.0 6.8.2).
const (
	pciStatus         = 0x06
	pciStatusCapList  = 1 << 4
	pciCapPointer     = 0x34
	pciCapIDMSIX      = 0x11
	msixEntrySize     = 16
	msixVectorControl = 12 // in an entry; bit 0 is Mask
)

// msixTableLocked finds the MSI-X table through the capability list: the
// BAR that holds it and its offset there. d.mu is held.
func (d *Device) msixTableLocked() (bar, off int, err error) {
	var b [4]byte
	if err := d.readConfig(pciStatus, b[:2]); err != nil {
		return 0, 0, err
	}
	if binary.LittleEndian.Uint16(b[:2])&pciStatusCapList == 0 {
		return 0, 0, fmt.Errorf("vfio: %s has no PCI capability list", d.addr)
	}
	if err := d.readConfig(pciCapPointer, b[:1]); err != nil {
		return 0, 0, err
	}
	// 48 capabilities fill the 192 bytes after the header: more is a loop.
	for ptr, n := int(b[0]&^3), 0; ptr >= 0x40 && n < 48; n++ {
		if err := d.readConfig(ptr, b[:2]); err != nil {
			return 0, 0, err
		}
		if b[0] == pciCapIDMSIX {
			if err := d.readConfig(ptr+4, b[:4]); err != nil {
				return 0, 0, err
			}
			v := binary.LittleEndian.Uint32(b[:4])
			return int(v & 7), int(v &^ 7), nil
		}
		ptr = int(b[1] &^ 3)
	}
	return 0, 0, fmt.Errorf("vfio: %s has no MSI-X capability", d.addr)
}

// msixControlLocked maps the Vector Control word of MSI-X table entry v,
// so the vector can be masked while its queue is polled. d.mu is held.
func (d *Device) msixControlLocked(v int) (*uint32, error) {
	bar, off, err := d.msixTableLocked()
	if err != nil {
		return nil, err
	}
	if bar > VFIO_PCI_BAR5_REGION_INDEX {
		return nil, fmt.Errorf("vfio: %s: MSI-X table in BAR %d, which does not exist", d.addr, bar)
	}
	r, err := d.barLocked(bar)
	if err != nil {
		return nil, fmt.Errorf("vfio: %s: MSI-X table in BAR %d: %w", d.addr, bar, err)
	}
	w, err := r.Word(off + v*msixEntrySize + msixVectorControl)
	if err != nil {
		return nil, fmt.Errorf("vfio: %s: MSI-X entry %d at BAR %d offset %#x: %w", d.addr, v, bar, off, err)
	}
	return w, nil
}

// Mask sets the vector's MSI-X mask bit. A masked vector does not signal:
// the device sets its pending bit instead and signals once on Unmask. A
// reaper that is polling masks its vector, so a completion it is about to
// find costs no interrupt. One uncached store; a no-op when the table
// could not be mapped or after Close.
func (i *Interrupt) Mask() {
	if i.ctl != nil && !i.closed.Load() {
		mmio.Store32(i.ctl, i.ctl0|1)
	}
}

// Unmask clears the mask bit; a signal held while masked is sent now.
func (i *Interrupt) Unmask() {
	if i.ctl != nil && !i.closed.Load() {
		mmio.Store32(i.ctl, i.ctl0&^1)
	}
}
