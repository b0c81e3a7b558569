// Queues, doorbells and the command pipeline: fetch an SQE, run it (or
// hold it for a fault), post the CQE when the completion queue has room.

package nvmetest

import (
	"fmt"
	"time"

	"github.com/nvmepoll/nvmepoll/queue"
)

type subQueue struct {
	id         uint16
	size       uint32
	base       uint64
	cqid       uint16
	head, tail uint32
	// awake: with shadow doorbells, the SQ's shadow tail is read only
	// from its MMIO doorbell write until the model finds it empty again
	// (and publishes EventIdx), as QEMU's nvme_process_sq runs only when
	// that SQ's doorbell scheduled it. A host that skips an MMIO write it
	// owed sees its commands sit, as on QEMU.
	awake bool
}

type compQueue struct {
	id         uint16
	size       uint32
	base       uint64
	ien        bool
	iv         uint16
	head, tail uint32
	phase      uint32
	nsq        int // submission queues using it
	backlog    []cqe
}

// free is how many entries can be posted before the CQ is full. A CQ of
// size n holds at most n-1 entries: full is tail+1 == head.
func (q *compQueue) free() int {
	used := (q.tail + q.size - q.head) % q.size
	return int(q.size - 1 - used)
}

// headOK reports whether v is a head the host may write: it can consume
// only entries the controller posted.
func (q *compQueue) headOK(v uint32) bool {
	if v >= q.size {
		return false
	}
	posted := (q.tail + q.size - q.head) % q.size
	return (v+q.size-q.head)%q.size <= posted
}

type cqe struct {
	dw0, dw1   uint32
	sqhd, sqid uint16
	cid        uint16
	status     Status
	wrongPhase bool
}

// doorbell is one doorbell register; Ring is Write32 at its offset.
type doorbell struct {
	c   *Controller
	off int
}

func (d doorbell) Ring(v uint32) { d.c.ring(d.off, v) }

// Doorbell returns the doorbell at off: 0x1000 + (2*qid + isCQ) * 4 (the
// model's CAP.DSTRD is 0). It fails for offsets that are not a doorbell of a
// queue id up to MaxQueuePairs.
func (c *Controller) Doorbell(off int) (queue.Doorbell, error) {
	idx := (off - regDB) / 4
	if off < regDB || off%4 != 0 || idx/2 > c.cfg.MaxQueuePairs {
		return nil, fmt.Errorf("nvmetest: offset %#x is not a doorbell (0x1000 + 4*n for queue ids 0..%d)", off, c.cfg.MaxQueuePairs)
	}
	return doorbell{c: c, off: off}, nil
}

// ring handles a doorbell write. A write that names no existing queue or a
// value out of range is ignored, counted in Stats.InvalidDoorbellWrites and
// reported by an asynchronous event, as the specification says.
func (c *Controller) ring(off int, v uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone || c.closed {
		return
	}
	idx := (off - regDB) / 4
	qid := idx / 2
	if off%4 != 0 || qid >= len(c.sqs) {
		c.invalidDoorbellLocked(aenInvalidDoorbell)
		return
	}
	if idx%2 == 0 {
		sq := c.sqs[qid]
		if sq == nil {
			c.invalidDoorbellLocked(aenInvalidDoorbell)
			return
		}
		if v >= sq.size {
			c.invalidDoorbellLocked(aenInvalidDoorbellValue)
			return
		}
		c.stats.SQDoorbellWrites++
		sq.tail, sq.awake = v, true
	} else {
		cq := c.cqs[qid]
		if cq == nil {
			c.invalidDoorbellLocked(aenInvalidDoorbell)
			return
		}
		if !cq.headOK(v) {
			c.invalidDoorbellLocked(aenInvalidDoorbellValue)
			return
		}
		c.stats.CQDoorbellWrites++
		cq.head = v
	}
	c.kickLocked()
}

func (c *Controller) processingLocked() bool {
	return c.csts&cstsRDY != 0 && !c.fatal && !c.gone && !c.closed && !c.shutdown
}

// runLocked posts what waits for CQ space and executes commands until no
// queue makes progress. Each SQ gets at most a batch per round, so one busy
// queue cannot starve the others (round-robin arbitration).
func (c *Controller) runLocked() {
	for {
		progress := false
		c.readShadowLocked()
		for _, cq := range c.cqs {
			if cq != nil && len(cq.backlog) > 0 && c.drainLocked(cq) {
				progress = true
			}
		}
		if !c.processingLocked() {
			return
		}
		for qid := range c.sqs {
			for n := 0; n < 64; n++ {
				sq := c.sqs[qid]
				if sq == nil || sq.head == sq.tail || !c.processingLocked() {
					break
				}
				cq := c.cqs[sq.cqid]
				if cq.free() <= len(cq.backlog) {
					c.stats.CQFull++
					break // wait for the host to consume completions
				}
				c.fetchLocked(sq)
				progress = true
			}
		}
		if !progress {
			// With shadow doorbells, publish what was consumed, then look
			// again: the host may have moved a shadow tail after the last
			// read but before it saw the new EventIdx, and then it rings
			// no MMIO doorbell (it believes the controller is awake).
			if c.eventIdx == 0 {
				return
			}
			c.writeEventIdxLocked()
			if !c.readShadowLocked() {
				c.sleepEmptyLocked()
				return
			}
		}
	}
}

// fetchLocked reads the SQE at the head of sq and runs it.
func (c *Controller) fetchLocked(sq *subQueue) {
	var b [64]byte
	if !c.mem.read(sq.base+uint64(sq.head)*64, b[:]) {
		// The SQ ring is not mapped: as QEMU's nvme_process_sq when
		// nvme_addr_read fails, the controller fails (CSTS.CFS).
		c.fatal = true
		return
	}
	sq.head = (sq.head + 1) % sq.size
	// The command lives in the Controller, not on the stack: fault
	// matchers take its address, which would make it escape (an
	// allocation per command). Anything that keeps it copies it.
	cmd := &c.fetched
	*cmd = decodeCommand(b[:])
	cmd.SQID = sq.id
	if sq.id == 0 {
		c.stats.AdminCommands[cmd.Opcode]++
	} else {
		c.stats.IOCommands[cmd.Opcode]++
	}
	c.submitLocked(cmd, uint16(sq.head))
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
		r = c.executeLocked(cmd, f)
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

// postLocked queues a completion on the CQ of the command's SQ and posts
// what fits.
func (c *Controller) postLocked(e cqe) {
	if int(e.sqid) >= len(c.sqs) || c.sqs[e.sqid] == nil {
		return // the SQ was deleted while the command was pending
	}
	cq := c.cqs[c.sqs[e.sqid].cqid]
	cq.backlog = append(cq.backlog, e)
	c.drainLocked(cq)
}

// drainLocked writes backlog entries into cq while it has room: DW0-DW2
// first, then DW3 (status, phase, cid) with one atomic store, so a host that
// sees the new phase sees the whole entry.
func (c *Controller) drainLocked(cq *compQueue) bool {
	n := 0
	for ; n < len(cq.backlog) && cq.free() > 0; n++ {
		e := cq.backlog[n]
		at := cq.base + uint64(cq.tail)*16
		var b [12]byte
		le.PutUint32(b[0:], e.dw0)
		le.PutUint32(b[4:], e.dw1)
		le.PutUint32(b[8:], uint32(e.sqhd)|uint32(e.sqid)<<16)
		if !c.mem.write(at, b[:]) {
			// The CQ ring is not mapped: as QEMU's nvme_post_cqes when
			// the DMA write fails, the controller fails (CSTS.CFS).
			c.fatal = true
			break
		}
		phase := cq.phase
		if e.wrongPhase {
			phase ^= 1
		}
		c.mem.store32(at+12, uint32(e.status&0x7fff)<<17|phase<<16|uint32(e.cid))
		cq.tail++
		if cq.tail == cq.size {
			cq.tail = 0
			cq.phase ^= 1
		}
		c.stats.CQEsPosted++
	}
	// Keep the rest at the front, reusing the array: no allocation per
	// command in the steady state.
	cq.backlog = append(cq.backlog[:0], cq.backlog[n:]...)
	if len(cq.backlog) > 0 {
		c.stats.CQFull++
	}
	if n > 0 {
		c.interruptLocked(cq) // after the entries are visible, as MSI-X
	}
	return n > 0
}
