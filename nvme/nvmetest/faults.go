package nvmetest

import (
	"slices"
	"sync/atomic"
	"time"
)

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
	// Identify edits the 4 KiB data an Identify command returns before it
	// is sent to the host, to serve what a broken controller would (an
	// MDTS of 200, a block size of 2^40 bytes...). The command still
	// succeeds. It runs with the controller locked, like Match. Other
	// commands ignore it.
	Identify func(data []byte)

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

// MatchIdentify matches Identify commands for data structure cns (CDW10
// bits 7:0: 0 namespace, 1 controller, 2 active namespace list, 3
// namespace identification descriptors).
func MatchIdentify(cns uint8) func(*Command) bool {
	return func(c *Command) bool { return c.SQID == 0 && c.Opcode == OpIdentify && uint8(c.CDW10) == cns }
}

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
