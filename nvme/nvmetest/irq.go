// MSI-X: completion queues created with IEN signal their vector, so the
// driver's interrupt and adaptive completion modes run against the model.

package nvmetest

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nvmepoll/nvmepoll/iopoll"
)

// Interrupt is one MSI-X vector as the host sees it: a one-slot channel in
// place of VFIO's eventfd. Like MSI-X it is edge-like: the controller
// signals when it posts completions to a CQ with interrupts enabled, and
// signals that arrive before the host waits merge into one. It implements
// iopoll.Interrupt.
type Interrupt struct {
	c      *Controller
	vector int
	ch     chan struct{}
	count  atomic.Uint64
	closed bool // under c.mu
	// MSI-X masking (under c.mu): a signal while masked sets pending and
	// is sent on Unmask, as the PCI spec's pending bit does.
	masked, pending bool
}

// Interrupt returns what MSI-X vector v (0..Config.MaxQueuePairs) signals,
// as vfio.Device.Interrupt does for a real controller. A vector nobody
// asked for signals nothing. Close the Interrupt to detach it.
func (c *Controller) Interrupt(v int) (iopoll.Interrupt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("nvmetest: controller is closed")
	}
	if v < 0 || v > c.cfg.MaxQueuePairs {
		return nil, fmt.Errorf("nvmetest: MSI-X vector %d does not exist (0..%d)", v, c.cfg.MaxQueuePairs)
	}
	if c.irqs == nil {
		c.irqs = make([]*Interrupt, c.cfg.MaxQueuePairs+1)
	}
	if c.irqs[v] != nil {
		return nil, fmt.Errorf("nvmetest: MSI-X vector %d is already in use", v)
	}
	irq := &Interrupt{c: c, vector: v, ch: make(chan struct{}, 1)}
	c.irqs[v] = irq
	return irq, nil
}

// interruptLocked signals the vector of cq after completions were posted
// to it, if the CQ has interrupts enabled and someone listens.
func (c *Controller) interruptLocked(cq *compQueue) {
	if !cq.ien || int(cq.iv) >= len(c.irqs) || c.irqs[cq.iv] == nil {
		return
	}
	irq := c.irqs[cq.iv]
	if irq.masked {
		irq.pending = true
		c.stats.HeldInterrupts++
		return
	}
	irq.sendLocked()
}

// sendLocked signals the vector; c.mu is held.
func (irq *Interrupt) sendLocked() {
	irq.count.Add(1)
	irq.c.stats.Interrupts++
	select {
	case irq.ch <- struct{}{}:
	default: // one already pending: they merge
	}
}

// Mask sets the vector's MSI-X mask bit: signals are held until Unmask.
func (i *Interrupt) Mask() {
	i.c.mu.Lock()
	i.masked = true
	i.c.mu.Unlock()
}

// Unmask clears the mask bit and sends a signal held while masked.
func (i *Interrupt) Unmask() {
	i.c.mu.Lock()
	defer i.c.mu.Unlock()
	i.masked = false
	i.c.stats.Unmasks++
	if i.pending {
		i.pending = false
		i.sendLocked()
	}
}

// Vector is the MSI-X vector number.
func (i *Interrupt) Vector() int { return i.vector }

// Count is how many times the controller signalled the vector.
func (i *Interrupt) Count() uint64 { return i.count.Load() }

// Clear consumes a pending signal without blocking.
func (i *Interrupt) Clear() error {
	select {
	case <-i.ch:
	default:
	}
	return nil
}

// Wait blocks until the vector is signalled or timeout passes.
func (i *Interrupt) Wait(timeout time.Duration) (bool, error) {
	select {
	case <-i.ch:
		return true, nil
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-i.ch:
		return true, nil
	case <-t.C:
		return false, nil
	}
}

// Close detaches the vector. It is safe to call more than once.
func (i *Interrupt) Close() error {
	c := i.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !i.closed && i.vector < len(c.irqs) && c.irqs[i.vector] == i {
		c.irqs[i.vector] = nil
	}
	i.closed = true
	return nil
}
