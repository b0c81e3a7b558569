package queue

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"
)

// Entry sizes fixed by the NVMe base specification (SQES = 6, CQES = 4).
const (
	SQESize = 64
	CQESize = 16
)

// Command is a 64-byte submission queue entry in wire layout (NVMe base
// specification, "Common Command Format"). The host is little endian, like
// the device, so the struct is copied into the ring as is.
type Command struct {
	Opcode uint8  // CDW0 bits 7:0
	Flags  uint8  // CDW0 bits 15:8: FUSE (1:0), PSDT (7:6)
	CID    uint16 // CDW0 bits 31:16: command identifier (Pair.Post adds the slot's generation)
	NSID   uint32 // CDW1
	CDW2   uint32
	CDW3   uint32
	MPTR   uint64 // CDW4-5: metadata pointer
	PRP1   uint64 // CDW6-7: data pointer, first PRP entry
	PRP2   uint64 // CDW8-9: second PRP entry or PRP list pointer
	CDW10  uint32
	CDW11  uint32
	CDW12  uint32
	CDW13  uint32
	CDW14  uint32
	CDW15  uint32
}

// Completion is a decoded 16-byte completion queue entry.
type Completion struct {
	DW0    uint32 // command specific
	DW1    uint32 // command specific
	SQHead uint16 // DW2 bits 15:0: SQ head pointer after this command
	SQID   uint16 // DW2 bits 31:16: the SQ the command came from
	CID    uint16 // DW3 bits 15:0
	// Status is DW3 bits 31:17, the status field without the phase bit:
	// SC = Status&0xff, SCT = Status>>8&7, CRD = Status>>11&3,
	// More = Status>>13&1, DNR = Status>>14&1.
	Status uint16
}

// Static size checks: a field added or reordered breaks the build, not the
// device.
var (
	_ [SQESize - unsafe.Sizeof(Command{})]byte
	_ [unsafe.Sizeof(Command{}) - SQESize]byte
	_ [unsafe.Offsetof(Command{}.PRP1) - 24]byte
	_ [24 - unsafe.Offsetof(Command{}.PRP1)]byte
	_ [unsafe.Offsetof(Command{}.CDW10) - 40]byte
	_ [40 - unsafe.Offsetof(Command{}.CDW10)]byte
)

// phaseBit is the phase tag in CQE DW3.
const phaseBit = 1 << 16

// Marshal writes c in wire layout into b, which must hold SQESize bytes.
// The ring itself is written with one struct copy (see Pair.Post); Marshal
// and ParseCommand are for models and tests that want bytes.
func (c *Command) Marshal(b []byte) {
	_ = b[SQESize-1]
	b[0] = c.Opcode
	b[1] = c.Flags
	le := binary.LittleEndian
	le.PutUint16(b[2:], c.CID)
	le.PutUint32(b[4:], c.NSID)
	le.PutUint32(b[8:], c.CDW2)
	le.PutUint32(b[12:], c.CDW3)
	le.PutUint64(b[16:], c.MPTR)
	le.PutUint64(b[24:], c.PRP1)
	le.PutUint64(b[32:], c.PRP2)
	for i, v := range [6]uint32{c.CDW10, c.CDW11, c.CDW12, c.CDW13, c.CDW14, c.CDW15} {
		le.PutUint32(b[40+4*i:], v)
	}
}

// ParseCommand decodes a submission queue entry from the first SQESize bytes
// of b. A controller model uses it to read the SQ ring.
func ParseCommand(b []byte) Command {
	_ = b[SQESize-1]
	le := binary.LittleEndian
	return Command{
		Opcode: b[0], Flags: b[1], CID: le.Uint16(b[2:]), NSID: le.Uint32(b[4:]),
		CDW2: le.Uint32(b[8:]), CDW3: le.Uint32(b[12:]),
		MPTR: le.Uint64(b[16:]), PRP1: le.Uint64(b[24:]), PRP2: le.Uint64(b[32:]),
		CDW10: le.Uint32(b[40:]), CDW11: le.Uint32(b[44:]), CDW12: le.Uint32(b[48:]),
		CDW13: le.Uint32(b[52:]), CDW14: le.Uint32(b[56:]), CDW15: le.Uint32(b[60:]),
	}
}

// ParseCompletion decodes a completion queue entry from the first CQESize
// bytes of b and returns it with its phase tag.
func ParseCompletion(b []byte) (c Completion, phase bool) {
	_ = b[CQESize-1]
	le := binary.LittleEndian
	dw2, dw3 := le.Uint32(b[8:]), le.Uint32(b[12:])
	return decode(le.Uint32(b[0:]), le.Uint32(b[4:]), dw2, dw3), dw3&phaseBit != 0
}

// PostCompletion writes c with the given phase tag into a CQ ring slot of
// CQESize bytes the way a controller does: DW0-2 first, then DW3 (which
// holds the phase tag) with an atomic store, so a reaper that loads DW3
// first never sees a new phase with stale DW0-2. It is for controller
// models; slot must be 4-byte aligned DMA memory.
func PostCompletion(slot []byte, c Completion, phase bool) {
	_ = slot[CQESize-1]
	w := (*[4]uint32)(unsafe.Pointer(&slot[0]))
	w[0] = c.DW0
	w[1] = c.DW1
	w[2] = uint32(c.SQHead) | uint32(c.SQID)<<16
	dw3 := uint32(c.CID) | uint32(c.Status&0x7fff)<<17
	if phase {
		dw3 |= phaseBit
	}
	atomic.StoreUint32(&w[3], dw3)
}

func decode(dw0, dw1, dw2, dw3 uint32) Completion {
	return Completion{
		DW0: dw0, DW1: dw1,
		SQHead: uint16(dw2), SQID: uint16(dw2 >> 16),
		CID: uint16(dw3), Status: uint16(dw3 >> 17),
	}
}
