package nvmetest

import "encoding/binary"

var le = binary.LittleEndian

// Command is a submission queue entry as the model decoded it (NVMe base
// specification 2.0, Figure 88), plus the queue it came from. Fault
// matchers receive it.
type Command struct {
	SQID   uint16 // submission queue it was fetched from; 0 is admin
	Opcode uint8  // CDW0 bits 7:0
	Flags  uint8  // CDW0 bits 15:8: FUSE (1:0), PSDT (7:6)
	CID    uint16 // CDW0 bits 31:16
	NSID   uint32
	CDW2   uint32
	CDW3   uint32
	MPTR   uint64
	PRP1   uint64 // DPTR bytes 24-31 (SGL1 address when PSDT != 0)
	PRP2   uint64 // DPTR bytes 32-39
	CDW10  uint32
	CDW11  uint32
	CDW12  uint32
	CDW13  uint32
	CDW14  uint32
	CDW15  uint32
}

func decodeCommand(b []byte) Command {
	return Command{
		Opcode: b[0], Flags: b[1], CID: le.Uint16(b[2:]),
		NSID: le.Uint32(b[4:]), CDW2: le.Uint32(b[8:]), CDW3: le.Uint32(b[12:]),
		MPTR: le.Uint64(b[16:]), PRP1: le.Uint64(b[24:]), PRP2: le.Uint64(b[32:]),
		CDW10: le.Uint32(b[40:]), CDW11: le.Uint32(b[44:]), CDW12: le.Uint32(b[48:]),
		CDW13: le.Uint32(b[52:]), CDW14: le.Uint32(b[56:]), CDW15: le.Uint32(b[60:]),
	}
}

// Encode writes c as a 64-byte SQE into b (SQID is not part of it). It is
// the model's own encoder, for tests and examples that drive the model
// without the driver.
func (c *Command) Encode(b []byte) {
	_ = b[63]
	b[0], b[1] = c.Opcode, c.Flags
	le.PutUint16(b[2:], c.CID)
	le.PutUint32(b[4:], c.NSID)
	le.PutUint32(b[8:], c.CDW2)
	le.PutUint32(b[12:], c.CDW3)
	le.PutUint64(b[16:], c.MPTR)
	le.PutUint64(b[24:], c.PRP1)
	le.PutUint64(b[32:], c.PRP2)
	for i, v := range []uint32{c.CDW10, c.CDW11, c.CDW12, c.CDW13, c.CDW14, c.CDW15} {
		le.PutUint32(b[40+4*i:], v)
	}
}

// SLBA is the starting LBA of an NVM I/O command (CDW10-11).
func (c *Command) SLBA() uint64 { return uint64(c.CDW11)<<32 | uint64(c.CDW10) }

// NLB is the number of logical blocks of an NVM I/O command (CDW12 bits
// 15:0 plus one).
func (c *Command) NLB() uint64 { return uint64(c.CDW12&0xffff) + 1 }

// Completion is a decoded 16-byte CQE.
type Completion struct {
	DW0, DW1 uint32
	SQHead   uint16
	SQID     uint16
	CID      uint16
	Phase    bool
	Status   Status
}

// DecodeCompletion decodes a 16-byte CQE. A host polling a live queue must
// read DW3 (bytes 12-15) first, atomically, and the rest only when the phase
// matches; this helper is for entries already known to be complete.
func DecodeCompletion(b []byte) Completion {
	dw3 := le.Uint32(b[12:])
	return Completion{
		DW0: le.Uint32(b[0:]), DW1: le.Uint32(b[4:]),
		SQHead: le.Uint16(b[8:]), SQID: le.Uint16(b[10:]),
		CID: uint16(dw3), Phase: dw3>>16&1 != 0, Status: Status(dw3 >> 17),
	}
}

// NVM command set opcodes (NVM Command Set Specification 1.0, Figure 18).
const (
	OpFlush       = 0x00
	OpWrite       = 0x01
	OpRead        = 0x02
	OpCompare     = 0x05
	OpWriteZeroes = 0x08
	OpDSM         = 0x09 // Dataset Management
	OpVerify      = 0x0c
)

// Admin opcodes (base specification 2.0, Figure 138).
const (
	OpDeleteSQ    = 0x00
	OpCreateSQ    = 0x01
	OpGetLogPage  = 0x02
	OpDeleteCQ    = 0x04
	OpCreateCQ    = 0x05
	OpIdentify    = 0x06
	OpAbort       = 0x08
	OpSetFeatures = 0x09
	OpGetFeatures = 0x0a
	OpDoorbellBuf = 0x7c // Doorbell Buffer Config
	OpFormatNVM   = 0x80
	OpAsyncEvent  = 0x0c // Asynchronous Event Request
)
