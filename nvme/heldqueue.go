package nvme

import (
	"context"
	"errors"
	"fmt"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// heldQueue is the memory and queue id of a queue pair the controller may
// still hold: a Delete I/O SQ/CQ failed or timed out, or a Create timed
// out (it may yet succeed), and the reset that would drop the queues
// failed too. Freeing the rings would let the controller fetch commands
// from, or post completions into, whatever is mapped at those IOVAs next,
// and a new pair on the same id would be refused. So both stay taken until
// the controller drops every queue: a reset (CC.EN cleared) or Close
// (after shutdown).
type heldQueue struct {
	qid uint16
	mem [3]dma.Buffer // SQ, CQ, PRP lists
}

// notSentError is an admin command's error from before the command reached
// the admin SQ (the controller closed, every slot lost to timeouts): the
// controller never saw it.
type notSentError struct{ err error }

func (e *notSentError) Error() string { return e.err.Error() }
func (e *notSentError) Unwrap() error { return e.err }

// controllerMayHold reports whether, after a Create or Delete admin command
// failed with err, the controller may hold the queue: unless it answered
// (a completion with an error status) or never saw the command, the
// command may still take effect (a timeout, a dead controller).
func controllerMayHold(err error) bool {
	var se *StatusError
	var ns *notSentError
	return !errors.As(err, &se) && !errors.As(err, &ns)
}

// stillThere reports whether, after a Delete I/O SQ/CQ failed with err, the
// queue may still exist: unless the controller said there is no such queue
// (a reset dropped it, or it was never re-created), it may. The
// specification's answer is Invalid Queue Identifier; QEMU's nvme_del_cq
// answers Completion Queue Invalid for a CQ it does not have.
func stillThere(err error) bool {
	return !errors.Is(err, ErrInvalidQueueIdentifier) && !errors.Is(err, ErrCompletionQueueInvalid)
}

// giveBackBounce returns the bounce buffer of a command the controller is
// done with; while the pair is held (the controller may still use its
// queues) the buffer is held with it, since a late command could still
// write into it.
func (q *QueuePair) giveBackBounce(p *Pool, b dma.Buffer) {
	if !q.mayBeLive {
		p.Put(b)
		return
	}
	c := q.c
	c.qpMu.Lock()
	c.heldBounce = append(c.heldBounce, heldBuffer{p, b})
	c.qpMu.Unlock()
}

// heldBuffer is a pool buffer kept from reuse while a held queue may still
// write into it.
type heldBuffer struct {
	pool *Pool
	buf  dma.Buffer
}

// dropQueues resets the controller when it may still hold this pair's
// queues, as Linux does when it cannot delete one: a disabled controller
// holds no queue, so the rings, and the buffers of commands still
// outstanding on them, can be reused. The other pairs re-create their
// queues (recovery.go). If the reset fails, or the controller is fatal or
// gone (its state is the error the caller sees; resetting it is theirs to
// decide), the pair stays held (release).
func (q *QueuePair) dropQueues(why string) error {
	if !q.mayBeLive {
		return nil
	}
	if q.c.rec.disables.Load() != q.disables {
		// The controller was disabled since the queues were made: that
		// dropped them. (gen would also move on a failed reset or a
		// device found gone, neither of which drops anything.)
		q.mayBeLive = false
		return nil
	}
	held := func(err error) error {
		return fmt.Errorf("nvme: queue pair %d: its memory and id stay taken until the controller is reset or closed: %w", q.id, err)
	}
	if err := q.c.Status(); err != nil {
		return held(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), q.c.opts.AdminTimeout)
	defer cancel()
	// A reset after q.gen (another pair's, waited for here) dropped the
	// queues too.
	if _, err := q.c.resetSince(ctx, q.gen, why, nil); err != nil {
		return held(err)
	}
	q.mayBeLive = false
	return nil
}

// replaceAdminBuf holds the admin data page, into which a timed-out
// Identify or Get Log Page may still be written, and maps a fresh one for
// the next command. adminMu is held. If no page can be mapped the old one
// stays in use, and the error says so.
func (c *Controller) replaceAdminBuf() error {
	b, err := c.dev.DMA().Alloc(PageSize)
	if err != nil {
		return fmt.Errorf("mapping a fresh admin data page (the old one is reused, and the late data may land in it): %w", err)
	}
	c.qpMu.Lock()
	c.heldPages = append(c.heldPages, c.adminBuf)
	c.qpMu.Unlock()
	c.adminBuf = b
	return nil
}

// hold keeps q's queue id and rings from reuse instead of freeing them.
func (c *Controller) hold(q *QueuePair) {
	q.closeInterrupt()
	c.qpMu.Lock()
	c.held = append(c.held, heldQueue{qid: q.id, mem: [3]dma.Buffer{q.sq, q.cq, q.prp}})
	c.qpMu.Unlock()
	q.sq, q.cq, q.prp = dma.Buffer{}, dma.Buffer{}, dma.Buffer{}
}

// freeHeld frees every held queue's memory and id and every held admin
// data page, and joins the errors
// of freeing. Call it only once the controller is disabled or shut down.
func (c *Controller) freeHeld() error {
	c.qpMu.Lock()
	held, pages, bounce := c.held, c.heldPages, c.heldBounce
	c.held, c.heldPages, c.heldBounce = nil, nil, nil
	for _, h := range held {
		if int(h.qid) < len(c.qids) {
			c.qids[h.qid] = false
		}
	}
	c.qpMu.Unlock()
	if len(held) > 0 {
		c.qidFreed.Store(true)
	}
	var errs []error
	a := c.dev.DMA()
	for _, h := range held {
		for _, b := range h.mem {
			if b.Len() > 0 {
				errs = append(errs, a.Free(b))
			}
		}
	}
	for _, b := range pages {
		errs = append(errs, a.Free(b))
	}
	for _, h := range bounce {
		h.pool.Put(h.buf) // harmless if the pool is closed already
	}
	return errors.Join(errs...)
}

// heldQIDs is how many queue ids are held. qpMu is held.
func (c *Controller) heldQIDs() int { return len(c.held) }
