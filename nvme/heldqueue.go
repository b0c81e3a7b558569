package nvme

import (
	"errors"
	"fmt"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// heldQueue is the memory and queue id of a queue pair the controller may
// still hold: a Delete I/O SQ/CQ failed or timed out, or a Create timed
// out (it may yet succeed). Freeing the rings would let the controller
// fetch commands from, or post completions into, whatever is mapped at
// those IOVAs next, and a new pair on the same id would be refused. So
// both stay taken until the controller drops every queue: a reset (CC.EN
// cleared) or Close (after shutdown).
type heldQueue struct {
	qid uint16
	mem [3]dma.Buffer // SQ, CQ, PRP lists
}

// controllerRefused reports whether err from a Create or Delete admin
// command is the controller's own answer (a completion with an error
// status), as opposed to no answer at all (a timeout, a dead controller),
// after which the command may still take effect.
func controllerRefused(err error) bool {
	var se *StatusError
	return errors.As(err, &se)
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
	held, pages := c.held, c.heldPages
	c.held, c.heldPages = nil, nil
	for _, h := range held {
		if int(h.qid) < len(c.qids) {
			c.qids[h.qid] = false
		}
	}
	c.qpMu.Unlock()
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
	return errors.Join(errs...)
}

// heldQIDs is how many queue ids are held. qpMu is held.
func (c *Controller) heldQIDs() int { return len(c.held) }
