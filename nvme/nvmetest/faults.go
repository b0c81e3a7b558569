package nvmetest

import (
	"encoding/binary"
	"slices"
	"sync/atomic"
	"time"
)

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

// Fault is an injected misbehaviour. Add it with Controller.Inject; it
// applies to commands for which Match returns true, when they are fetched.
// The first matching fault wins. Effects combine: a Fault with Delay and
// Status completes late with that status. Do not change a Fault's fields
// after Inject; Hits is safe to call at any time.
type Fault struct {
	// Match selects commands; nil matches every command. See MatchOpcode,
	// MatchCommand and MatchLBA. It runs with the controller locked, so it
	// must not call Controller methods.
	Match func(*Command) bool
	// Skip lets the first Skip matching commands through untouched, so
	// Skip: n-1, Count: 1 hits only the nth.
	Skip int
	// Count is how many commands the fault hits; 0 means no limit.
	Count int

	// Status completes the command with this status instead of running
	// it (no data moves). Include StatusDNR if the error is permanent.
	Status Status
	// Delay holds the command this long before it runs and completes.
	// While held, Abort can cancel it (it then completes with
	// StatusAbortRequested).
	Delay time.Duration
	// Hold keeps the command until it is aborted, its SQ is deleted, the
	// controller is reset, or ReleaseHeld is called.
	Hold bool
	// Drop runs the command but never posts its completion.
	Drop bool
	// Duplicate posts the completion twice.
	Duplicate bool
	// WrongPhase posts the completion with the previous pass's phase bit:
	// the slot is used but the host never sees the entry.
	WrongPhase bool
	// UnknownCID posts the completion with command id 0xFFFF, which no
	// queue of at most 65536 entries can have outstanding; the real
	// command never completes.
	UnknownCID bool
	// BadSQHead posts an SQ head pointer equal to the queue size, one past
	// the last valid slot (for a 65536-entry queue every value is valid,
	// so this has no effect there).
	BadSQHead bool

	seen, hits atomic.Int64
}

// Hits is how many commands the fault has been applied to.
func (f *Fault) Hits() int { return int(f.hits.Load()) }

// MatchOpcode matches admin (admin true) or I/O commands with opcode op.
func MatchOpcode(admin bool, op uint8) func(*Command) bool {
	return func(c *Command) bool { return (c.SQID == 0) == admin && c.Opcode == op }
}

// MatchCommand matches the command with id cid on submission queue sqid.
func MatchCommand(sqid, cid uint16) func(*Command) bool {
	return func(c *Command) bool { return c.SQID == sqid && c.CID == cid }
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

// MatchLBA matches I/O commands on namespace nsid whose block range
// overlaps [lba, lba+n). With no ops it matches Read, Write, Compare,
// Verify and Write Zeroes.
func MatchLBA(nsid uint32, lba, n uint64, ops ...uint8) func(*Command) bool {
	if len(ops) == 0 {
		ops = []uint8{OpRead, OpWrite, OpCompare, OpVerify, OpWriteZeroes}
	}
	return func(c *Command) bool {
		if c.SQID == 0 || c.NSID != nsid || !slices.Contains(ops, c.Opcode) {
			return false
		}
		s := c.SLBA()
		return s < lba+n && lba < s+c.NLB()
	}
}

// Inject adds f and returns it. Faults apply in the order added.
func (c *Controller) Inject(f *Fault) *Fault {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults = append(c.faults, f)
	return f
}

// Remove takes f out; commands it already holds stay held.
func (c *Controller) Remove(f *Fault) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults = slices.DeleteFunc(c.faults, func(g *Fault) bool { return g == f })
}

// FailLBA makes commands with opcode op on namespace nsid that touch blocks
// [lba, lba+n) complete with status st, e.g.
//
//	c.FailLBA(1, 100, 8, nvmetest.OpRead, nvmetest.StatusUnrecoveredRead|nvmetest.StatusDNR)
func (c *Controller) FailLBA(nsid uint32, lba, n uint64, op uint8, st Status) *Fault {
	return c.Inject(&Fault{Match: MatchLBA(nsid, lba, n, op), Status: st})
}

func (c *Controller) matchLocked(cmd *Command) *Fault {
	for _, f := range c.faults {
		if f.Match != nil && !f.Match(cmd) {
			continue
		}
		if f.Count > 0 && f.hits.Load() >= int64(f.Count) {
			continue
		}
		if f.seen.Add(1) <= int64(f.Skip) {
			continue
		}
		f.hits.Add(1)
		return f
	}
	return nil
}

type pendingCmd struct {
	cmd   Command
	sqhd  uint16
	f     *Fault
	timer *time.Timer
}

// submitLocked runs a fetched command, or holds it if a fault says so.
func (c *Controller) submitLocked(cmd *Command, sqhd uint16) {
	f := c.matchLocked(cmd)
	if cmd.SQID == 0 && cmd.Opcode == OpAsyncEvent && (f == nil || f.Status == 0) {
		c.asyncRequestLocked(cmd, sqhd)
		return
	}
	if f != nil && (f.Hold || f.Delay > 0) {
		p := &pendingCmd{cmd: *cmd, sqhd: sqhd, f: f}
		c.pending = append(c.pending, p)
		if !f.Hold {
			gen := c.gen
			p.timer = time.AfterFunc(f.Delay, func() {
				c.mu.Lock()
				defer c.mu.Unlock()
				if c.closed || c.gen != gen || !c.takePendingLocked(p) {
					return
				}
				c.completeLocked(&p.cmd, p.sqhd, p.f)
				c.runLocked()
			})
		}
		return
	}
	c.completeLocked(cmd, sqhd, f)
}

func (c *Controller) takePendingLocked(p *pendingCmd) bool {
	i := slices.Index(c.pending, p)
	if i < 0 {
		return false
	}
	c.pending = slices.Delete(c.pending, i, i+1)
	if p.timer != nil {
		p.timer.Stop()
	}
	return true
}

// ReleaseHeld runs and completes every command held by a fault (Hold or a
// Delay not yet expired), in the order they were fetched.
func (c *Controller) ReleaseHeld() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	held := c.pending
	c.pending = nil
	for _, p := range held {
		if p.timer != nil {
			p.timer.Stop()
		}
		c.completeLocked(&p.cmd, p.sqhd, p.f)
	}
	c.runLocked()
	return len(held)
}

// abortPendingLocked completes the held command (sqid, cid) with
// StatusAbortRequested; false if no such command is held.
func (c *Controller) abortPendingLocked(sqid, cid uint16) bool {
	for _, p := range c.pending {
		if p.cmd.SQID == sqid && p.cmd.CID == cid {
			c.takePendingLocked(p)
			c.finishLocked(&p.cmd, p.sqhd, nil, result{status: StatusAbortRequested})
			return true
		}
	}
	return false
}

// result is what executing a command produced.
type result struct {
	dw0    uint32
	status Status
	lba    uint64 // for the Error Information log
}

// completeLocked executes cmd (unless a fault replaces its status) and
// posts its completion as the fault says.
func (c *Controller) completeLocked(cmd *Command, sqhd uint16, f *Fault) {
	var r result
	if f != nil && f.Status != 0 {
		r.status = f.Status
		if cmd.SQID != 0 {
			r.lba = cmd.SLBA()
		}
	} else {
		r = c.executeLocked(cmd)
	}
	c.finishLocked(cmd, sqhd, f, r)
}

func (c *Controller) finishLocked(cmd *Command, sqhd uint16, f *Fault, r result) {
	if r.status != 0 {
		c.stats.Errors++
		c.logErrorLocked(cmd, r)
	}
	if f != nil && f.Drop {
		return
	}
	e := cqe{dw0: r.dw0, sqhd: sqhd, sqid: cmd.SQID, cid: cmd.CID, status: r.status}
	if f != nil {
		if f.UnknownCID {
			e.cid = 0xffff
		}
		if f.BadSQHead && int(cmd.SQID) < len(c.sqs) && c.sqs[cmd.SQID] != nil {
			e.sqhd = uint16(c.sqs[cmd.SQID].size)
		}
		e.wrongPhase = f.WrongPhase
	}
	c.postLocked(e)
	if f != nil && f.Duplicate {
		c.postLocked(e)
	}
}
