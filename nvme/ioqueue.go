package nvme

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/nvmepoll/nvmepoll/iopoll"
	"github.com/nvmepoll/nvmepoll/queue"
	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// QueuePair is one I/O submission queue and its own completion queue on the
// controller, with the iopoll reap loop on top.
//
// A QueuePair is used by one goroutine at a time: Submit, SubmitBatch and
// Poll take no lock of their own (only iopoll's short submitted-list lock),
// which is what makes them cheap. Give each submitting goroutine its own
// QueuePair; the synchronous Namespace API does that for you with a small
// set of shared ones.
type QueuePair struct {
	c         *Controller
	id        uint16
	pair      *queue.Pair
	ring      *iopoll.Ring
	sq, cq    dma.Buffer
	prp       dma.Buffer       // listPages PRP list pages per slot
	irq       iopoll.Interrupt // the CQ's MSI-X vector; nil in ModePoll (irq.go)
	listPages int
	// sqShadow and cqShadow are the pair's doorbells when the controller
	// has shadow doorbells (dbbuf.go), for their counters; nil otherwise.
	sqShadow, cqShadow *queue.ShadowDoorbell
	// inflight[cid] is the request posted with that command id. A fixed
	// array indexed by cid: the hot path never hashes or allocates.
	inflight []*Request

	idlePolls  int    // device polls without a completion, for the CSTS check
	blocksSeen uint64 // ring.Blocks() at the last idle check
	abandoned  int    // requests in flight whose synchronous caller gave up
	badCQEs    uint64
	lastBad    error

	// Recovery and timeouts (recovery.go, timeout.go); owner goroutine only.
	gen        uint64     // controller generation the queues were created in
	disables   uint64     // rec.disables then: once it moves, the queues are gone
	broken     error      // re-creating the queues after a reset failed
	recovering []*Request // scratch for recover
	tick       int64      // coarse clock (Controller.now), stamped on requests
	lastScan   int64      // tick of the last timeout scan
	lastHealth int64      // tick of the last CSTS check
	reaps      uint32     // Reap calls, for the clock refresh
	clock      clockGate  // when Reap reads the system clock for the timeout scan
	// idleClock is the idle path's own gate: sharing clock, the scan
	// (due first, every tickEvery Reaps with commands outstanding) took
	// every "due" and the CSTS check never ran while a pair spun on a
	// controller that had stopped answering.
	idleClock clockGate
	syncReq   *Request // the synchronous API's request (syncRequest)
	syncCtx   execContext

	// mayBeLive: a Create or Delete of this pair's queues went unanswered
	// or failed, so the controller may still use its rings (release).
	mayBeLive bool

	closing   atomic.Bool // Submit refuses new work
	dead      atomic.Bool // queues deleted: Reap fails what is left
	closeOnce sync.Once
	closeErr  error
}

// Request is one asynchronous command. The caller owns it: fill in the
// fields, Submit it, and get it back in Done, called by Poll on the polling
// goroutine. After Done returns (or from inside Done) it may be reused; it
// must not be touched while in flight.
type Request struct {
	// ioreq must stay the first field: deliver turns the *iopoll.Request
	// the ring hands back into the *Request around it.
	ioreq iopoll.Request

	// Opcode is NVMRead, NVMWrite, NVMCompare, NVMFlush, NVMWriteZeroes
	// or NVMDatasetManagement.
	Opcode NVMOpcode
	// Namespace the command addresses.
	Namespace *Namespace
	// LBA is the first block (not used by Flush and Dataset Management).
	LBA uint64
	// Blocks is the number of blocks (1..65536). For Read, Write and
	// Compare, 0 means Buf.Len()/BlockSize. For Dataset Management it is
	// the number of 16-byte ranges in Buf (1..256).
	Blocks int
	// Buf is the data, in DMA memory (a Pool buffer, or a slice of one).
	// It must start on a 4-byte boundary and hold Blocks blocks.
	Buf dma.Buffer
	// FUA (Force Unit Access) makes a Write durable before it completes.
	FUA bool
	// Done is called when the command has completed, with Err set. It runs
	// on the goroutine that called Poll.
	Done func(*Request)
	// Tag is for the caller (a user id, an index); nvmepoll ignores it.
	Tag uint64

	// Err is nil on success, a *StatusError if the controller reported an
	// error status (with NSID and LBA filled in), or ErrClosed if the queue
	// pair was deleted with the command outstanding.
	Err error
	// DW0 is completion dword 0 (command specific).
	DW0 uint32

	qp        *QueuePair
	cid       uint16
	finished  bool  // set on delivery; for the synchronous path
	stamp     int64 // posted at this coarse time (timeout.go)
	abortAt   int64 // Abort sent at this time, 0 if none
	resubmits uint8 // times re-posted after a controller reset
	timedOut  bool  // its timeout caused a reset: fail, do not resubmit
	abandoned bool  // the synchronous caller gave up (timeout)
	bounce    *Pool // pool to return Buf to if abandoned
}

var _ [unsafe.Offsetof(Request{}.ioreq)]struct{} // must be 0 (see deliver)

// NewQueuePair creates an I/O completion queue and submission queue of
// depth entries (2 to CAP.MQES+1; depth-1 commands can be outstanding),
// each slot with pre-mapped PRP list pages for the largest transfer. Its
// Poll waits in ModeDefault: adaptive polling when the device can deliver
// interrupts, busy polling otherwise.
func (c *Controller) NewQueuePair(depth int) (*QueuePair, error) {
	return c.NewQueuePairWith(QueueOptions{Depth: depth})
}

// NewQueuePairWith is NewQueuePair with a completion mode (see
// QueueOptions).
func (c *Controller) NewQueuePairWith(o QueueOptions) (*QueuePair, error) {
	depth := o.Depth
	limit := c.cap.MaxQueueEntries()
	if depth < 2 || depth > limit {
		return nil, fmt.Errorf("nvme: %w: queue depth %d is outside 2..%d (CAP.MQES+1)", ErrInvalidArgument, depth, limit)
	}
	switch {
	case o.CQDepth == 0:
		o.CQDepth = defaultCQDepth(depth, limit)
	case o.CQDepth < depth || o.CQDepth > limit:
		return nil, fmt.Errorf("nvme: %w: CQ depth %d is outside %d..%d (the SQ depth to CAP.MQES+1)", ErrInvalidArgument, o.CQDepth, depth, limit)
	}
	if err := c.failedErr(); err != nil {
		return nil, fmt.Errorf("nvme: new queue pair: the controller failed (Reset to try again): %w", err)
	}
	qid, err := c.takeQID()
	if err != nil {
		return nil, err
	}
	q := &QueuePair{c: c, id: qid, inflight: make([]*Request, depth-1), gen: c.rec.gen.Load(), disables: c.rec.disables.Load()}
	if err := q.setup(depth, o); err != nil {
		q.release()
		return nil, err
	}
	c.qpMu.Lock()
	c.pairs[q] = struct{}{}
	c.qpMu.Unlock()
	return q, nil
}

// defaultCQDepth is QueueOptions.CQDepth's default for an SQ of depth
// entries: twice that, at least a page of entries (4096/16 = 256, memory a
// smaller CQ would leave unused), and no more than limit (CAP.MQES+1).
func defaultCQDepth(depth, limit int) int {
	return min(limit, max(2*depth, PageSize/queue.CQESize))
}

func (c *Controller) takeQID() (uint16, error) {
	c.qpMu.Lock()
	defer c.qpMu.Unlock()
	if c.qids == nil {
		return 0, fmt.Errorf("nvme: controller %w", ErrClosed)
	}
	for i, used := range c.qids {
		if !used {
			c.qids[i] = true
			return uint16(i), nil
		}
	}
	if n := c.heldQIDs(); n > 0 {
		return 0, fmt.Errorf("nvme: all %d I/O queue pairs the controller granted are in use, %d of them by queues it did not delete (a Reset frees them): %w",
			len(c.qids)-1, n, ErrQueueFull)
	}
	return 0, fmt.Errorf("nvme: all %d I/O queue pairs the controller granted are in use: %w", len(c.qids)-1, ErrQueueFull)
}

func (c *Controller) releaseQID(qid uint16) {
	c.qpMu.Lock()
	if int(qid) < len(c.qids) {
		c.qids[qid] = false
	}
	c.qpMu.Unlock()
}

func (q *QueuePair) setup(depth int, o QueueOptions) error {
	c := q.c
	a := c.dev.DMA()
	// Room for the largest transfer starting at the worst offset in its
	// first page.
	if !c.useSGL {
		q.listPages = prpListPages(PageSize-4, c.maxTransfer, PageSize)
	}
	sqSize, cqSize, prpSize := depth*queue.SQESize, o.CQDepth*queue.CQESize, (depth-1)*q.listPages*PageSize
	// All three buffers against RLIMIT_MEMLOCK before the first is mapped.
	bufs := []dmaBuf{{"SQ", sqSize}, {"CQ", cqSize}}
	if prpSize > 0 {
		bufs = append(bufs, dmaBuf{"PRP lists", prpSize})
	}
	if err := c.checkMemlock(fmt.Sprintf("queue pair %d of depth %d maps", q.id, depth), bufs); err != nil {
		return err
	}
	var err error
	if q.sq, err = a.Alloc(sqSize); err != nil {
		return fmt.Errorf("nvme: allocating SQ %d: %w", q.id, err)
	}
	if q.cq, err = a.Alloc(cqSize); err != nil {
		return fmt.Errorf("nvme: allocating CQ %d: %w", q.id, err)
	}
	if prpSize > 0 {
		if q.prp, err = a.Alloc(prpSize); err != nil {
			return fmt.Errorf("nvme: allocating PRP lists for queue %d: %w", q.id, err)
		}
	}
	sqdb, err := c.dev.Doorbell(DoorbellOffset(q.id, false, c.stride))
	if err != nil {
		return fmt.Errorf("nvme: SQ %d doorbell: %w", q.id, err)
	}
	cqdb, err := c.dev.Doorbell(DoorbellOffset(q.id, true, c.stride))
	if err != nil {
		return fmt.Errorf("nvme: CQ %d doorbell: %w", q.id, err)
	}
	sqdb, cqdb = q.shadowDoorbells(sqdb, cqdb)
	q.pair, err = queue.New(queue.Config{
		ID: q.id, Depth: depth, CQDepth: o.CQDepth, SQ: q.sq, CQ: q.cq, PageSize: PageSize, SQTail: sqdb, CQHead: cqdb,
	})
	if err != nil {
		return fmt.Errorf("nvme: %w", err)
	}
	if err := q.setupRing(o); err != nil { // the mode decides IEN on the CQ
		return err
	}
	ctx := context.Background()
	for attempt := 1; ; attempt++ {
		// q.gen must be the generation the queues live in. Resets bump it
		// under the admin lock, so if it is the same after both Creates as
		// before, no reset came between.
		q.gen, q.disables = c.rec.gen.Load(), c.rec.disables.Load()
		if err := q.createCQ(ctx); err != nil {
			q.mayBeLive = controllerMayHold(err)
			err = errors.Join(err, q.dropQueues(fmt.Sprintf("Create I/O CQ %d unanswered", q.id)))
			return fmt.Errorf("nvme: creating queue pair %d: %w", q.id, err)
		}
		if err := c.createIOSQ(ctx, q.id, depth, q.sq.IOVA, q.id); err != nil {
			q.mayBeLive = controllerMayHold(err)
			if derr := c.deleteIOCQ(ctx, q.id); derr != nil {
				q.mayBeLive = true
				err = errors.Join(err, derr)
			}
			err = errors.Join(err, q.dropQueues(fmt.Sprintf("queue pair %d half created", q.id)))
			return fmt.Errorf("nvme: creating queue pair %d: %w", q.id, err)
		}
		if c.rec.gen.Load() == q.gen {
			return nil
		}
		// A reset ran while the queues were being made: they are gone, or
		// were made after it. Delete what is left and make them again.
		c.deleteIOSQ(ctx, q.id) // errors ignored: either may be absent
		c.deleteIOCQ(ctx, q.id)
		q.pair.Reset()
		if attempt == MaxResubmits {
			q.mayBeLive = true // may exist: held, not freed (release)
			return fmt.Errorf("nvme: creating queue pair %d: %d controller resets while creating it: %w", q.id, attempt, ErrReset)
		}
	}
}

// release gives the pair's memory and queue id back, or, if the
// controller may still hold its queues, keeps both from reuse until the
// next reset (heldqueue.go).
func (q *QueuePair) release() {
	if q.mayBeLive {
		q.c.hold(q)
		return
	}
	q.free()
	q.c.releaseQID(q.id)
}

func (q *QueuePair) free() {
	q.closeInterrupt() // after the CQ is deleted: it no longer signals
	a := q.c.dev.DMA()
	for _, b := range []*dma.Buffer{&q.sq, &q.cq, &q.prp} {
		if b.Len() > 0 {
			a.Free(*b)
			*b = dma.Buffer{}
		}
	}
}

// ID is the queue identifier of the SQ and CQ.
func (q *QueuePair) ID() uint16 { return q.id }

// Depth is the number of ring entries; Depth()-1 commands fit at once.
func (q *QueuePair) Depth() int { return q.pair.Depth() }

// Inflight is the number of submitted requests not yet delivered.
func (q *QueuePair) Inflight() int { return q.ring.Inflight() }

// Stats returns the queue's counters (posted, completed, doorbell writes,
// rejected completion entries by kind).
func (q *QueuePair) Stats() queue.Stats { return q.pair.Stats() }

// Submit posts r and rings the SQ doorbell. When the queue is full it
// returns ErrQueueFull at once (retryable: Poll, then submit again); the
// request is then not in flight and Done will not be called. Other errors
// name the bad field. Submit does not allocate.
func (q *QueuePair) Submit(r *Request) error {
	if err := q.post(r); err != nil {
		return err
	}
	q.pair.UpdateTail()
	return nil
}

// SubmitBatch posts requests in order and rings the doorbell once. It
// returns how many were posted; on an error, reqs[n] is the one that failed
// and it and the rest are not in flight.
func (q *QueuePair) SubmitBatch(reqs []*Request) (int, error) {
	n := 0
	var err error
	for _, r := range reqs {
		if err = q.post(r); err != nil {
			break
		}
		n++
	}
	q.pair.UpdateTail()
	return n, err
}

func (q *QueuePair) post(r *Request) error {
	if q.closing.Load() {
		return fmt.Errorf("nvme: %v on queue %d: queue pair %w", r.Opcode, q.id, ErrClosed)
	}
	if r.qp != nil && !r.finished {
		return fmt.Errorf("nvme: %w: request (cid %d on queue %d) is still in flight", ErrInvalidArgument, r.cid, r.qp.id)
	}
	if q.gen != q.c.rec.gen.Load() {
		q.recover() // a controller reset happened: re-create the queues first
	}
	if q.broken != nil {
		return q.broken
	}
	r.resubmits, r.abortAt, r.timedOut = 0, 0, false
	return q.issue(r, true)
}

// issue builds r's command, takes a slot and posts it. track hands r to
// the ring (a new submission); a resubmission after a reset is on the ring
// already.
func (q *QueuePair) issue(r *Request, track bool) error {
	var cmd queue.Command
	n, err := q.build(r, &cmd)
	if err != nil {
		return err
	}
	cid, err := q.pair.Acquire()
	if err != nil {
		return ErrQueueFull
	}
	switch {
	case n > 0 && q.c.useSGL:
		// One SGL Data Block descriptor (type 0, subtype 0 in byte 15):
		// the buffer is contiguous in IOVA space.
		if r.Buf.IOVA%4 != 0 && q.c.id.SGLS.DwordAligned() {
			q.pair.Release(cid)
			return fmt.Errorf("nvme: %w: data address %#x is not dword aligned (the controller's SGLs must be)", ErrInvalidArgument, r.Buf.IOVA)
		}
		cmd.Flags |= psdtSGL
		cmd.PRP1, cmd.PRP2 = r.Buf.IOVA, uint64(n)
	case n > 0:
		list := dma.Buffer{}
		if q.listPages > 0 {
			list = q.prp.Slice(int(cid)*q.listPages*PageSize, q.listPages*PageSize)
		}
		cmd.PRP1, cmd.PRP2, err = buildPRP(r.Buf.IOVA, n, PageSize, list)
		if err != nil {
			q.pair.Release(cid)
			return err
		}
	}
	cmd.CID = cid
	r.qp, r.cid, r.Err, r.DW0, r.finished = q, cid, nil, 0, false
	q.stamp(r)
	q.inflight[cid] = r
	if !track {
		q.pair.Post(&cmd)
		return nil
	}
	if err := q.ring.Submitted(&r.ioreq); err != nil {
		r.qp = nil
		q.inflight[cid] = nil
		q.pair.Release(cid)
		return fmt.Errorf("nvme: %v on queue %d: queue pair %w", r.Opcode, q.id, ErrClosed)
	}
	q.pair.Post(&cmd)
	return nil
}

// psdtSGL is CDW0 PSDT = 01b: SGL for data, MPTR is an address.
const psdtSGL = 1 << 6

// build checks r and fills cmd (all but CID and PRPs). It returns the
// number of data bytes to describe with PRPs (0 for none).
func (q *QueuePair) build(r *Request, cmd *queue.Command) (int, error) {
	ns := r.Namespace
	if ns == nil || ns.c != q.c {
		return 0, fmt.Errorf("nvme: %w: request has no namespace of this controller", ErrInvalidArgument)
	}
	cmd.Opcode = uint8(r.Opcode)
	cmd.NSID = ns.id
	switch r.Opcode {
	case NVMFlush:
		return 0, nil
	case NVMDatasetManagement:
		if r.Blocks < 1 || r.Blocks > 256 {
			return 0, fmt.Errorf("nvme: %w: Dataset Management with %d ranges (1..256)", ErrInvalidArgument, r.Blocks)
		}
		n := r.Blocks * 16
		if r.Buf.Len() < n {
			return 0, fmt.Errorf("nvme: %w: buffer of %d bytes is too small for %d ranges (%d bytes)", ErrInvalidArgument, r.Buf.Len(), r.Blocks, n)
		}
		if err := ns.checkRanges(r.Buf.Bytes[:n]); err != nil {
			return 0, err
		}
		cmd.CDW10 = uint32(r.Blocks - 1)
		cmd.CDW11 = 1 << 2 // AD: deallocate
		return n, nil
	case NVMRead, NVMWrite, NVMCompare, NVMWriteZeroes:
	default:
		return 0, fmt.Errorf("nvme: %w: opcode %v is not supported by Submit", ErrInvalidArgument, r.Opcode)
	}
	blocks := r.Blocks
	if blocks < 0 {
		return 0, fmt.Errorf("nvme: %w: %v of %d blocks at lba %d (Blocks must be 0 to 65536)", ErrInvalidArgument, r.Opcode, blocks, r.LBA)
	}
	if blocks == 0 && r.Opcode != NVMWriteZeroes {
		blocks = r.Buf.Len() >> ns.shift
	}
	if err := ns.checkRange(r.LBA, uint64(blocks)); err != nil {
		return 0, err
	}
	if blocks > maxCommandBlocks {
		return 0, fmt.Errorf("nvme: %w: %d blocks in one command (at most %d)", ErrInvalidArgument, blocks, maxCommandBlocks)
	}
	cmd.CDW10, cmd.CDW11 = uint32(r.LBA), uint32(r.LBA>>32)
	cmd.CDW12 = uint32(blocks - 1)
	if r.FUA {
		cmd.CDW12 |= 1 << 30
	}
	if r.Opcode == NVMWriteZeroes {
		return 0, nil
	}
	n := blocks << ns.shift
	if r.Buf.Len() < n {
		return 0, fmt.Errorf("nvme: %w: buffer of %d bytes is too small for %d blocks of %d bytes", ErrInvalidArgument, r.Buf.Len(), blocks, ns.blockSize)
	}
	if n > q.c.maxTransfer {
		return 0, fmt.Errorf("nvme: %w: %d bytes in one command, the controller takes at most %d (MDTS)", ErrInvalidArgument, n, q.c.maxTransfer)
	}
	return n, nil
}

// Poll reaps completions and calls each finished request's Done: at least
// min (spinning until then, or until nothing is in flight) and at most max.
// min 0 checks once without spinning. It returns how many it delivered.
func (q *QueuePair) Poll(min, max int) (int, error) {
	return q.ring.Poll(min, max)
}

// PollContext is Poll that gives up with ctx.Err() when ctx is done.
func (q *QueuePair) PollContext(ctx context.Context, min, max int) (int, error) {
	return q.ring.PollContext(ctx, min, max)
}

// idleCheckEvery is how many empty device polls pass between two looks at
// the TSC, which says when the idle work is due: a system clock read, the
// CSTS check and the timeout scan (clockDue, timeout.go). A Ring that slept
// since the last look (interrupt modes, up to 100 ms a wait) is checked at
// once.
const idleCheckEvery = 256

// Reap implements iopoll.Completer: it takes every completion the
// controller posted (up to max), matches it to its request by cid, and
// rings the CQ head doorbell once. Invalid entries (unknown or duplicate
// cid, bad SQ head) are counted and skipped; the command they should have
// completed times out on the synchronous path.
func (q *QueuePair) Reap(max int) (int, error) {
	n := 0
	if q.gen != q.c.rec.gen.Load() {
		n += q.recover() // a controller reset (or failure) happened
	}
	for n < max {
		cqe, ok, err := q.pair.Next()
		if err != nil {
			q.badCQEs++
			q.lastBad = err
			q.c.countBadCQE(err)
			continue
		}
		if !ok {
			break
		}
		q.finish(cqe.CID, cqe.Status, cqe.DW0)
		n++
	}
	q.pair.UpdateHead()
	if q.dead.Load() {
		n += q.failAll()
	}
	if q.reaps++; q.reaps%tickEvery == 0 && q.pair.Outstanding() > 0 && q.clockDue() && q.clockAndScan() {
		n += q.recover()
	}
	if n > 0 {
		return n, nil
	}
	q.idlePolls++
	// A Ring that slept (interrupt modes) is checked at once; a spinning
	// one when the clock is due.
	if b := q.ring.Blocks(); q.idlePolls%idleCheckEvery == 0 && q.idleClock.due(q.c.refreshTicks) || b != q.blocksSeen {
		q.blocksSeen = b
		if q.idleCheck() {
			n += q.recover()
		}
	}
	return n, nil
}

func (q *QueuePair) finish(cid, status uint16, dw0 uint32) {
	r := q.inflight[cid]
	q.inflight[cid] = nil
	if status != 0 && r != nil {
		// Name the id the controller saw (its error log has it), before
		// Release moves the slot's generation on.
		r.Err = q.statusError(r, q.pair.CommandID(cid), status)
	}
	q.pair.Release(cid)
	if r == nil {
		return
	}
	r.DW0 = dw0
	q.ring.Complete(&r.ioreq)
}

func (q *QueuePair) statusError(r *Request, cid, status uint16) error {
	err := StatusFromCompletion(status, cid, uint8(r.Opcode), false)
	if se, ok := err.(*StatusError); ok {
		if r.Namespace != nil {
			se.NSID = r.Namespace.id
		}
		switch r.Opcode {
		case NVMRead, NVMWrite, NVMCompare, NVMWriteZeroes:
			se.LBA, se.HasLBA = r.LBA, true
		}
	}
	return err
}

// failAll completes every outstanding request with ErrClosed once the
// queues are deleted: the controller will never answer them.
func (q *QueuePair) failAll() int {
	n := 0
	for cid, r := range q.inflight {
		if r == nil {
			continue
		}
		q.inflight[cid] = nil
		what := "queue deleted with the command outstanding"
		if q.mayBeLive {
			what = "the queue could not be deleted and the controller not reset: it may still write the command's buffer, keep it until Controller.Reset or Close"
		}
		r.Err = fmt.Errorf("nvme: %v cid %d on queue %d: %s: %w", r.Opcode, q.pair.CommandID(uint16(cid)), q.id, what, ErrClosed)
		q.ring.Complete(&r.ioreq)
		n++
	}
	return n
}

// deliver is the iopoll callback: it hands finished requests to their
// owners.
func (q *QueuePair) deliver(batch []*iopoll.Request) {
	for _, ir := range batch {
		r := (*Request)(unsafe.Pointer(ir)) // ioreq is Request's first field
		r.finished = true
		if r.abandoned {
			// The synchronous caller gave up; the controller is done
			// with the bounce buffer now.
			q.abandoned--
			if r.bounce != nil {
				q.giveBackBounce(r.bounce, r.Buf)
			}
			continue
		}
		if r.Done != nil {
			r.Done(r)
		}
	}
}

// syncRequest is the pair's request for one synchronous call (a caller
// holds a synchronous pair for the whole call), set up for op on ns with
// the rest zero: reused, so the synchronous path does not allocate. A call
// that timed out left its request with the controller; the next gets a
// new one.
func (q *QueuePair) syncRequest(op NVMOpcode, ns *Namespace) *Request {
	r := q.syncReq
	if r == nil || r.abandoned {
		r = new(Request)
		q.syncReq = r
	}
	r.Opcode, r.Namespace, r.LBA, r.Blocks, r.Buf, r.FUA = op, ns, 0, 0, dma.Buffer{}, false
	r.Done, r.Tag, r.bounce = nil, 0, nil
	return r
}

// exec runs r synchronously: submit, then poll until it completes, ctx is
// done or Options.IOTimeout passes. On a timeout the request is abandoned:
// its slot (and bounce buffer, if any) stays with the controller until it
// answers or the queue pair is closed.
func (q *QueuePair) exec(parent context.Context, r *Request) error {
	x := &q.syncCtx
	x.begin(parent, q.c.opts.IOTimeout, q.c.refreshTicks)
	ctx := context.Context(x)
	for {
		err := q.Submit(r)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrQueueFull) {
			return err
		}
		// Slots held by abandoned commands: reap and retry.
		if _, err := q.ring.PollContext(ctx, 0, iopoll.Batch); err != nil {
			return q.giveUp(r, err, x, false)
		}
		if ctx.Err() != nil {
			return q.giveUp(r, ctx.Err(), x, false)
		}
	}
	for !r.finished {
		if _, err := q.ring.PollContext(ctx, 1, iopoll.Batch); err != nil {
			if r.finished {
				break
			}
			return q.giveUp(r, err, x, true)
		}
	}
	return r.Err
}

func (q *QueuePair) giveUp(r *Request, err error, x *execContext, posted bool) error {
	what := fmt.Sprintf("nvme: %v nsid %d lba %d+%d on queue %d", r.Opcode, r.Namespace.id, r.LBA, r.Blocks, q.id)
	gen := q.c.rec.gen.Load() // before CSTS: a reset after it found what we did
	serr := q.c.Status()
	if posted {
		r.abandoned = true
		q.abandoned++
		what += fmt.Sprintf(" (cid %d)", q.pair.CommandID(r.cid))
		if serr == nil {
			// Ask the controller to abort it, so the slot comes back
			// soon. Best effort: many controllers decline.
			// Counted as the scan counts its own; past IOTimeout the
			// request is marked, so the scan does not abort it again.
			if x.waited() >= q.c.opts.IOTimeout {
				q.c.rec.counts.timeouts.Add(1)
				r.abortAt = q.c.now()
			}
			q.c.rec.counts.aborts.Add(1)
			actx, cancel := context.WithTimeout(context.Background(), time.Second)
			if aborted, aerr := q.c.Abort(actx, q.id, q.pair.CommandID(r.cid)); aerr == nil && aborted {
				q.ring.Poll(0, iopoll.Batch)
			}
			cancel()
			// Past the I/O timeout (not just the caller's own deadline):
			// if the abort does not end it, reset the controller.
			if x.waited() >= q.c.opts.IOTimeout {
				q.resolveOrReset(r)
			}
		}
	}
	if errors.Is(serr, ErrControllerFatal) {
		// Reset now, so the next call finds a working controller; r
		// (abandoned) is failed by the recovery, the rest resubmitted.
		q.c.autoReset(gen, fmt.Sprintf("CSTS.CFS seen by a timed-out call on queue %d", q.id), &q.c.rec.counts.fatalStatus)
		q.ring.Poll(0, iopoll.Batch)
	}
	if serr != nil {
		return fmt.Errorf("%s: %w", what, serr)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("no completion after %v: %w (%w)", x.elapsed().Round(time.Millisecond), ErrTimeout, err)
	}
	if q.badCQEs > 0 {
		err = fmt.Errorf("%w (queue saw %d bad completion entries, last: %v)", err, q.badCQEs, q.lastBad)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Close drains the queue pair (waits for every request in flight, bounded
// by Options.AdminTimeout), deletes the SQ and then the CQ, and frees their
// memory. Requests the controller never completes are delivered with an
// error wrapping ErrClosed. Call it from the goroutine that uses the pair.
// It is safe to call more than once, and on nil.
func (q *QueuePair) Close() error {
	if q == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), q.c.opts.AdminTimeout)
	defer cancel()
	return q.close(ctx, true)
}

func (q *QueuePair) close(ctx context.Context, deleteQueues bool) error {
	q.closeOnce.Do(func() { q.closeErr = q.doClose(ctx, deleteQueues) })
	return q.closeErr
}

func (q *QueuePair) doClose(ctx context.Context, deleteQueues bool) error {
	c := q.c
	q.closing.Store(true)
	var errs []error
	alive := c.Status() == nil
	// Drain: wait for everything in flight except commands a synchronous
	// caller already gave up on (they timed out once; no point waiting
	// again). Running out of time is not an error by itself: deleting the
	// SQ below makes the controller abort what it still holds, and
	// whatever it never answers is failed with ErrClosed to its owner.
	for alive && q.ring.Inflight() > q.abandoned && ctx.Err() == nil {
		if _, err := q.ring.PollContext(ctx, 0, iopoll.Batch); err != nil {
			break
		}
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	q.ring.Close(done) // stop Submit; the rest is reaped below
	// After a controller reset the pair's queues exist only if it
	// recovered since (the reset dropped them).
	if deleteQueues && !alive && q.disables == c.rec.disables.Load() && errors.Is(c.Status(), ErrControllerFatal) {
		// Fatal, the controller will not delete the queues, nor was it
		// disabled since they were made (a reset that failed before RDY
		// cleared moved gen, not disables): it may still use them.
		q.mayBeLive = true
		if err := q.dropQueues(fmt.Sprintf("queue pair %d closed on a fatal controller", q.id)); err != nil {
			errs = append(errs, err)
		}
	}
	if deleteQueues && alive && q.gen == c.rec.gen.Load() {
		bg := context.Background()
		// Deleting the SQ aborts what is still outstanding; then the CQ.
		// If either fails the controller may still use the rings.
		if err := c.deleteIOSQ(bg, q.id); err != nil {
			q.mayBeLive = q.mayBeLive || stillThere(err)
			errs = append(errs, fmt.Errorf("nvme: deleting queue pair %d: %w", q.id, err))
		}
		if err := c.deleteIOCQ(bg, q.id); err != nil {
			q.mayBeLive = q.mayBeLive || stillThere(err)
			errs = append(errs, fmt.Errorf("nvme: deleting queue pair %d: %w", q.id, err))
		}
		if err := q.dropQueues(fmt.Sprintf("deleting queue pair %d failed", q.id)); err != nil {
			errs = append(errs, err)
		}
	}
	// The controller will not answer anything still outstanding: fail it.
	q.dead.Store(true)
	if err := q.ring.Close(context.Background()); err != nil {
		errs = append(errs, err)
	}
	if !q.mayBeLive {
		c.qidFreed.Store(true) // the synchronous API may make a pair on it
	}
	q.release()
	c.qpMu.Lock()
	delete(c.pairs, q)
	c.qpMu.Unlock()
	return errors.Join(errs...)
}
