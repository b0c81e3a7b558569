package queue

import "github.com/nvmepoll/nvmepoll/vfio/mmio"

// Doorbell tells the controller a new SQ tail or CQ head.
//
// The MMIO doorbell writes the register directly. Other implementations
// (shadow doorbells with EventIdx, the nvmetest model) slot in behind the
// same interface.
type Doorbell interface {
	Ring(v uint32)
}

// MMIODoorbell is a doorbell register in a mapped BAR0.
type MMIODoorbell struct {
	reg *uint32
}

// NewMMIODoorbell returns a doorbell that stores to reg, which must point
// into mapped BAR0 (see mmio.Region.Word).
func NewMMIODoorbell(reg *uint32) *MMIODoorbell { return &MMIODoorbell{reg: reg} }

// Ring writes v with one plain 32-bit store (never an atomic exchange).
func (d *MMIODoorbell) Ring(v uint32) { mmio.Store32(d.reg, v) }
