package nvme

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nvmepoll/nvmepoll/queue"
)

// Controller reset and recovery.
//
// A reset (Controller.Reset, or automatic: CSTS.CFS, CSTS.RDY found clear,
// a command that outlives its timeout and its Abort) runs in two halves:
//
//  1. The controller half, under recovery.mu and adminMu: CC.EN=0 and wait
//     for CSTS.RDY=0 (bounded by CAP.TO), which makes the controller drop
//     every queue and every command; re-create the admin queue over the same
//     DMA memory (it is still mapped); CC.EN=1 and wait for RDY; Set
//     Features Number of Queues as at Open. Then the generation goes up.
//  2. The queue half, lazily, on the goroutine that owns each QueuePair, at
//     its next Submit or Poll (a QueuePair is single-goroutine, so nothing
//     else may touch its rings): the pair notices the new generation,
//     resets its ring indices and phase (queue.Pair.Reset), creates its CQ
//     and SQ again with the same qid and memory, and re-posts what it had
//     outstanding. The user's *QueuePair stays valid throughout.
//
// Resubmission rule. Every command Submit accepts (Read, Write, Compare,
// Flush, Write Zeroes, Dataset Management) is idempotent for a block
// device: doing it twice leaves the same data as doing it once, and a
// reset guarantees the first attempt either happened or did not. So, as the
// Linux driver does (nvme_cancel_request, then blk-mq retries up to
// nvme_max_retries), outstanding commands are re-posted, at most
// MaxResubmits times each. Failed instead, with an error naming the
// command:
//   - the command whose timeout caused the reset (ErrTimeout): re-posting a
//     command that hung the controller would hang it again;
//   - a command whose synchronous caller already gave up (nobody waits);
//   - a command past MaxResubmits resets (ErrReset);
//   - everything, when the reset failed or the device is gone (the error
//     says why and wraps ErrDeviceGone, ErrControllerFatal or ErrTimeout).
//
// Nothing completes twice: the old rings are dead once CSTS.RDY reads 0,
// the CQ memory is zeroed before the queue is re-created, and a request
// is either re-posted (a fresh cid) or delivered, never both.

// ErrReset: a controller reset ended the command and it was not
// resubmitted (see MaxResubmits).
var ErrReset = errors.New("ended by a controller reset")

// MaxResubmits is how many controller resets one command may be re-posted
// after before it is failed with ErrReset (nvme_max_retries is 5 in Linux;
// a command caught in three resets in a row is more likely the problem than
// the victim).
const MaxResubmits = 3

// recovery is the Controller's reset state.
type recovery struct {
	mu sync.Mutex // one reset at a time; taken before adminMu
	// gen goes up after every reset and when the controller fails; a
	// QueuePair compares it with the generation its queues were made in.
	gen atomic.Uint64
	// disables goes up each time a reset saw CSTS.RDY clear: a disabled
	// controller holds no I/O queue. Unlike gen it does not move when a
	// reset fails before that (the controller may still use every queue)
	// or when the controller is found gone.
	disables atomic.Uint64
	failed   atomic.Pointer[error] // set when the controller cannot be used
	counts   counters
}

// failedErr is the reason the controller cannot be used, or nil.
func (c *Controller) failedErr() error {
	if p := c.rec.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// fail marks the controller unusable: every QueuePair fails what it holds
// and refuses new work at its next Submit or Poll.
func (c *Controller) fail(err error) {
	c.rec.failed.CompareAndSwap(nil, &err)
	c.rec.gen.Add(1)
}

// Reset resets the controller and recovers every queue pair (see the
// resubmission rule above): outstanding commands are re-posted when their
// owner next calls Submit or Poll. It returns once the controller is
// enabled again with its admin queue and queue count restored. A failed
// reset leaves the controller failed: I/O fails with the reason until a
// later Reset succeeds. ctx bounds the wait for the admin commands; the
// register waits are bounded by CAP.TO.
func (c *Controller) Reset(ctx context.Context) error {
	return c.reset(ctx, "requested", true)
}

// autoReset is a reset nvmepoll decides on by itself, because of what it
// saw in generation gen (see resetSince); cause, if not nil, counts the
// reason once per reset it starts. It does nothing if the controller is
// already failed or closed: a reset cannot help.
func (c *Controller) autoReset(gen uint64, why string, cause *atomic.Uint64) {
	if c.failedErr() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.AdminTimeout)
	c.resetSince(ctx, gen, why, cause)
	cancel()
}

// resetSince resets the controller unless another reset came after
// generation gen: then the cause is gone already. The check is made under
// recovery.mu, so two pairs that see the same fault reset once, and the
// reason is counted once. It reports whether it reset; a controller that
// has failed is not reset, and its failure is the error.
func (c *Controller) resetSince(ctx context.Context, gen uint64, why string, cause *atomic.Uint64) (bool, error) {
	c.rec.mu.Lock()
	defer c.rec.mu.Unlock()
	if err := c.failedErr(); err != nil {
		return false, fmt.Errorf("nvme: reset (%s): %w", why, err)
	}
	if c.rec.gen.Load() != gen {
		return false, nil
	}
	if cause != nil {
		cause.Add(1)
	}
	return true, c.resetLocked(ctx, why, false)
}

func (c *Controller) reset(ctx context.Context, why string, explicit bool) error {
	c.rec.mu.Lock()
	defer c.rec.mu.Unlock()
	return c.resetLocked(ctx, why, explicit)
}

// resetLocked is a reset; recovery.mu is held.
func (c *Controller) resetLocked(ctx context.Context, why string, explicit bool) error {
	if err := c.failedErr(); err != nil && (!explicit || errors.Is(err, ErrDeviceGone)) {
		return fmt.Errorf("nvme: reset (%s): %w", why, err)
	}
	c.adminMu.Lock()
	defer c.adminMu.Unlock()
	if c.closed {
		return fmt.Errorf("nvme: reset (%s): controller %w", why, ErrClosed)
	}
	c.rec.counts.resets.Add(1)
	err := c.restart(ctx)
	if err != nil && !errors.Is(err, ErrDeviceGone) && ctx.Err() == nil {
		// Once more: a function reset behind our back may still have been
		// settling (config space restored by the kernel after the FLR).
		err = c.restart(ctx)
	}
	if err != nil {
		c.rec.counts.resetFailures.Add(1)
		err = fmt.Errorf("nvme: controller reset (%s) failed: %w", why, err)
		c.fail(err)
		return err
	}
	c.rec.failed.Store(nil)
	c.rec.gen.Add(1)
	return nil
}

// restart is the controller half of a reset. adminMu is held.
func (c *Controller) restart(ctx context.Context) error {
	cc := CC(c.dev.Read32(RegCC))
	if AllOnes(uint32(cc)) {
		c.rec.counts.deviceGone.Add(1)
		return fmt.Errorf("reading CC: %w", ErrDeviceGone)
	}
	// Clear EN and any shutdown request; a controller that is already
	// disabled (a function reset) still gets the RDY=0 wait.
	c.dev.Write32(RegCC, uint32(cc.WithEN(false).WithSHN(0)))
	if err := c.waitReady(false); err != nil {
		return err
	}
	c.rec.disables.Add(1)
	// Disabled, the controller holds no I/O queue: what Close could not
	// delete is free now.
	if err := c.freeHeld(); err != nil {
		return err
	}
	// Same memory, fresh rings: the controller starts at head 0, phase 1.
	c.admin.Reset()
	clear(c.adminLost)
	depth := c.admin.Depth()
	aqa, err := MakeAQA(depth, depth)
	if err != nil {
		return err
	}
	c.dev.Write32(RegAQA, uint32(aqa))
	c.write64(RegASQ, c.adminSQ.IOVA)
	c.write64(RegACQ, c.adminCQ.IOVA)
	// Enable exactly as Open does.
	ncc, err := NewCC(PageSize)
	if err != nil {
		return err
	}
	ncc = ncc.WithAMS(0)
	c.dev.Write32(RegCC, uint32(ncc))
	c.dev.Write32(RegCC, uint32(ncc.WithEN(true)))
	if err := c.waitReady(true); err != nil {
		return err
	}
	// The queue count is a feature, and features went back to their
	// defaults: ask for what Open asked for.
	cdw11, err := NumberOfQueues(c.opts.IOQueues, c.opts.IOQueues)
	if err != nil {
		return err
	}
	cmd := setFeaturesCmd(FeatureNumberOfQueues, cdw11)
	cqe, err := c.adminLocked(ctx, &cmd)
	if err != nil {
		return fmt.Errorf("restoring the number of queues: %w", err)
	}
	sq, cq := ParseNumberOfQueues(cqe.DW0)
	if sq < c.sqGranted || cq < c.cqGranted {
		return fmt.Errorf("after the reset the controller grants %d SQs and %d CQs, before it granted %d and %d: %w",
			sq, cq, c.sqGranted, c.cqGranted, ErrOutOfSpec)
	}
	// Shadow doorbells (dbbuf.go) were forgotten too: give the same pages
	// again, zeroed, so no old tail or EventIdx is taken for a new one.
	// Each pair zeroes its own slots again when it recovers.
	if c.dbbuf.on {
		clear(c.dbbuf.shadow.Bytes)
		clear(c.dbbuf.event.Bytes)
		cmd := queue.Command{Opcode: uint8(AdminDoorbellBufferConfig), PRP1: c.dbbuf.shadow.IOVA, PRP2: c.dbbuf.event.IOVA}
		if _, err := c.adminLocked(ctx, &cmd); err != nil {
			return fmt.Errorf("restoring shadow doorbells: %w", err)
		}
	}
	return nil
}

// resetShadowDoorbells starts the pair's shadow doorbells over (zero slots,
// zero last value, counters kept) in place: the queue.Pair holds pointers
// to them.
func (q *QueuePair) resetShadowDoorbells() error {
	if q.sqShadow == nil {
		return nil
	}
	c := q.c
	sqdb, err := c.dev.Doorbell(DoorbellOffset(q.id, false, c.stride))
	if err != nil {
		return err
	}
	cqdb, err := c.dev.Doorbell(DoorbellOffset(q.id, true, c.stride))
	if err != nil {
		return err
	}
	q.sqShadow.Reset(sqdb)
	q.cqShadow.Reset(cqdb)
	return nil
}

// recover is the queue half of a reset, run by the pair's owner when it
// sees a new generation. It returns how many requests it completed (failed)
// so Reap can count them.
func (q *QueuePair) recover() int {
	c := q.c
	if q.closing.Load() && q.dead.Load() {
		q.gen = c.rec.gen.Load()
		return 0 // Reap's failAll handles a deleted pair
	}
	// Another reset may land while this pair re-creates its queues (a
	// second pair saw the same fault, or the function reset was still
	// settling): the queue it just made is gone again, so start over.
	for attempt := 1; ; attempt++ {
		gen := c.rec.gen.Load()
		q.gen = gen
		if err := c.failedErr(); err != nil {
			q.broken = err
			n := q.failAllWith(err)
			q.pair.Reset() // nothing will be posted again: give the slots back
			return n
		}
		// disables is taken only now, as queues are about to be made: a
		// failed controller gets none, and for it the old value still
		// says whether the old queues were dropped.
		q.disables = c.rec.disables.Load()
		err := q.recreate()
		if err == nil && c.rec.gen.Load() != gen && attempt < MaxResubmits {
			// Another reset came while the queues were being made: they
			// may be gone, or live in its generation. Nothing is posted
			// yet; make them again before posting anything.
			continue
		}
		if err == nil {
			q.broken = nil
			break
		}
		if c.rec.gen.Load() != gen && attempt < MaxResubmits {
			continue
		}
		q.broken = fmt.Errorf("nvme: re-creating queue pair %d after a controller reset: %w", q.id, err)
		return q.failAllWith(q.broken)
	}

	// Take the outstanding requests out of the old slots, then re-post
	// or fail each one.
	old := q.recovering[:0]
	for cid, r := range q.inflight {
		if r != nil {
			old = append(old, r)
			q.inflight[cid] = nil
		}
	}
	failed := 0
	for _, r := range old {
		var why error
		switch {
		case r.timedOut:
			why = fmt.Errorf("no completion after the I/O timeout (%v), Abort did not end it, the controller was reset: %w", c.opts.IOTimeout, ErrTimeout)
		case r.abandoned:
			why = fmt.Errorf("its caller gave up: %w", ErrReset)
		case r.resubmits >= MaxResubmits:
			why = fmt.Errorf("outstanding across %d controller resets: %w", r.resubmits+1, ErrReset)
		default:
			r.resubmits++
			r.abortAt = 0
			if err := q.issue(r, false); err == nil {
				c.rec.counts.resubmitted.Add(1)
				continue
			} else {
				why = err
			}
		}
		r.Err = fmt.Errorf("nvme: %v nsid %d lba %d on queue %d: %w", r.Opcode, nsidOf(r), r.LBA, q.id, why)
		c.rec.counts.failedByReset.Add(1)
		q.ring.Complete(&r.ioreq)
		failed++
	}
	clear(old)
	q.recovering = old
	q.pair.UpdateTail()
	return failed
}

// recreate resets the pair's ring and shadow doorbells and creates its CQ
// and SQ again on the controller, same qid, same memory.
func (q *QueuePair) recreate() error {
	c := q.c
	q.pair.Reset()
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.AdminTimeout)
	defer cancel()
	depth := q.pair.Depth()
	if err := q.resetShadowDoorbells(); err != nil {
		return err
	}
	err := q.createQueues(ctx, depth)
	if errors.Is(err, ErrInvalidQueueIdentifier) {
		// The controller still has a queue with this qid: one an earlier
		// attempt made before a second reset raced it (seen in the guest
		// when two pairs noticed one function reset). The qid is this
		// pair's own, so delete the leftovers and create them once more.
		c.deleteIOSQ(ctx, q.id) // errors ignored: either may be absent
		c.deleteIOCQ(ctx, q.id)
		// Deleting the SQ may have posted aborts for what it held:
		// clear them out of the ring before the queues are made again.
		q.pair.Reset()
		if err := q.resetShadowDoorbells(); err != nil {
			return err
		}
		err = q.createQueues(ctx, depth)
	}
	return err
}

// createQueues creates the pair's CQ (with its interrupt vector, if any)
// and then its SQ.
func (q *QueuePair) createQueues(ctx context.Context, depth int) error {
	if err := q.createCQ(ctx); err != nil {
		return err
	}
	return q.c.createIOSQ(ctx, q.id, depth, q.sq.IOVA, q.id)
}

// failAllWith completes every outstanding request with err: the controller
// will not answer them.
func (q *QueuePair) failAllWith(err error) int {
	n := 0
	for cid, r := range q.inflight {
		if r == nil {
			continue
		}
		q.inflight[cid] = nil
		r.Err = fmt.Errorf("nvme: %v nsid %d lba %d (cid %d) on queue %d: %w", r.Opcode, nsidOf(r), r.LBA, q.pair.CommandID(uint16(cid)), q.id, err)
		q.ring.Complete(&r.ioreq)
		n++
	}
	return n
}

func nsidOf(r *Request) uint32 {
	if r.Namespace == nil {
		return 0
	}
	return r.Namespace.id
}

// checkHealth reads CSTS (from idleCheck, every healthInterval) and acts on
// it: all ones fails the controller (ErrDeviceGone), CFS or RDY clear
// (the function was reset under us) start a reset. It reports whether the
// generation changed, so the caller recovers its pair.
func (q *QueuePair) checkHealth() bool {
	c := q.c
	gen := c.rec.gen.Load()
	csts := CSTS(c.dev.Read32(RegCSTS))
	switch {
	case AllOnes(uint32(csts)):
		c.rec.counts.deviceGone.Add(1)
		c.fail(fmt.Errorf("nvme: CSTS reads %#x while polling queue %d: %w", uint32(csts), q.id, ErrDeviceGone))
	case csts.CFS():
		c.autoReset(gen, fmt.Sprintf("CSTS.CFS set, seen polling queue %d", q.id), &c.rec.counts.fatalStatus)
	case !csts.RDY():
		c.autoReset(gen, fmt.Sprintf("CSTS.RDY clear while running, seen polling queue %d", q.id), &c.rec.counts.notReady)
	}
	return c.rec.gen.Load() != q.gen
}
