package nvme

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nvmepoll/nvmepoll/iopoll"
	"github.com/nvmepoll/nvmepoll/queue"
)

// CompletionMode is how a QueuePair's Poll waits for the controller when it
// has not found enough completions (see iopoll.Mode).
type CompletionMode int

const (
	// ModeDefault is ModeAdaptive when the Device can deliver interrupts
	// (an InterruptDevice: VFIO with MSI-X, or nvmetest), else ModePoll.
	ModeDefault CompletionMode = iota
	// ModePoll busy-polls: lowest latency, a whole core while waiting.
	ModePoll
	// ModeInterrupt blocks on the completion queue's MSI-X vector as soon
	// as a poll comes back empty.
	ModeInterrupt
	// ModeAdaptive polls for an adaptive window (4 µs, growing x2 up to
	// QueueOptions.WindowMax while completions arrive just after it,
	// shrinking when they take longer than that), then blocks on the
	// interrupt. An idle pair costs almost no CPU.
	ModeAdaptive
)

func (m CompletionMode) String() string {
	if m == ModeDefault {
		return "default"
	}
	return m.iopoll().String()
}

func (m CompletionMode) iopoll() iopoll.Mode {
	switch m {
	case ModeInterrupt:
		return iopoll.ModeInterrupt
	case ModeAdaptive:
		return iopoll.ModeAdaptive
	}
	return iopoll.ModePoll
}

// ParseCompletionMode turns "poll", "interrupt" or "adaptive" into a mode.
func ParseCompletionMode(s string) (CompletionMode, error) {
	switch s {
	case "poll":
		return ModePoll, nil
	case "interrupt":
		return ModeInterrupt, nil
	case "adaptive":
		return ModeAdaptive, nil
	}
	return 0, fmt.Errorf("nvme: %w: unknown completion mode %q: want poll, interrupt or adaptive", ErrInvalidArgument, s)
}

// QueueOptions configures NewQueuePairWith.
type QueueOptions struct {
	// Depth is the number of SQ entries (2 to CAP.MQES+1); Depth-1
	// commands can be outstanding.
	Depth int
	// CQDepth is the number of CQ entries, Depth to CAP.MQES+1. 0 picks
	// twice Depth, at least one page (256 entries), within CAP.MQES+1. The
	// entries beyond Depth let the CQ head doorbell be written once per
	// CQDepth-Depth+1 completions instead of once per reap (see
	// queue.Pair.UpdateHead): one MMIO write, a trap into the hypervisor
	// under emulation, saved per I/O at queue depth 1. CQDepth == Depth
	// writes it on every reap that found completions.
	CQDepth int
	// Mode is how Poll waits (default: ModeDefault).
	Mode CompletionMode
	// WindowStart and WindowMax bound ModeAdaptive's poll window
	// (defaults iopoll.DefaultWindowStart, 4 µs, and
	// iopoll.DefaultWindowMax, 256 µs).
	WindowStart, WindowMax time.Duration
}

// InterruptDevice is a Device that can deliver completion-queue
// interrupts. A Controller checks for it with a type assertion, so a Device
// without interrupts keeps working (in ModePoll).
type InterruptDevice interface {
	Device
	// Interrupt returns what MSI-X vector v signals. If the result is an
	// io.Closer, the QueuePair closes it after deleting its CQ.
	Interrupt(v int) (iopoll.Interrupt, error)
}

// Interrupt attaches an eventfd to MSI-X vector v of the VFIO device.
func (d *pciDevice) Interrupt(v int) (iopoll.Interrupt, error) {
	irq, err := d.vd.Interrupt(v)
	if err != nil {
		return nil, err
	}
	return irq, nil
}

// setupRing picks the pair's completion mode, attaches its interrupt
// vector (the queue id: vector 0 is the admin queue's) if the mode needs
// one, and builds the reap loop. It runs before the CQ is created, which
// then gets IEN and the vector.
func (q *QueuePair) setupRing(o QueueOptions) error {
	mode := o.Mode
	if mode == ModeDefault || mode == ModeAdaptive || mode == ModeInterrupt {
		idev, ok := q.c.dev.(InterruptDevice)
		var err error
		if ok {
			q.irq, err = idev.Interrupt(int(q.id))
		}
		switch {
		case mode == ModeDefault && (!ok || err != nil):
			// The library default degrades to polling on a device
			// without interrupts; WaitStats().Mode says so.
			mode = ModePoll
		case !ok:
			return fmt.Errorf("nvme: %w: %v mode on queue %d: the device cannot deliver interrupts", ErrInvalidArgument, mode, q.id)
		case err != nil:
			return fmt.Errorf("nvme: %v mode on queue %d: interrupt vector %d: %w", mode, q.id, q.id, err)
		case mode == ModeDefault:
			mode = ModeAdaptive
		}
	}
	var err error
	q.ring, err = iopoll.NewWithWait(q, q.deliver, iopoll.WaitOptions{
		Mode: mode.iopoll(), Interrupt: q.irq, WindowStart: o.WindowStart, WindowMax: o.WindowMax,
	})
	if err != nil {
		return fmt.Errorf("nvme: queue %d: %w", q.id, err)
	}
	return nil
}

// createCQ creates the pair's I/O completion queue, with interrupts on its
// vector when its mode blocks. Controller recovery must use it too, so a
// re-created CQ interrupts as before.
func (q *QueuePair) createCQ(ctx context.Context) error {
	depth := q.pair.CQDepth()
	if q.irq == nil {
		return q.c.createIOCQ(ctx, q.id, depth, q.cq.IOVA)
	}
	cmd := queue.Command{
		Opcode: uint8(AdminCreateIOCQ), PRP1: q.cq.IOVA,
		CDW10: uint32(depth-1)<<16 | uint32(q.id),
		// IV in bits 31:16, IEN bit 1, PC bit 0.
		CDW11: uint32(q.id)<<16 | 1<<1 | 1,
	}
	if _, err := q.c.AdminCommand(ctx, &cmd); err != nil {
		return fmt.Errorf("I/O CQ %d of %d entries on interrupt vector %d: %w", q.id, depth, q.id, err)
	}
	return nil
}

func (q *QueuePair) closeInterrupt() error {
	if q.irq == nil {
		return nil
	}
	var err error
	if c, ok := q.irq.(io.Closer); ok {
		err = c.Close()
	}
	q.irq = nil
	return err
}

// WaitStats reports how the pair's Poll waits: its completion mode (what
// ModeDefault became), the adaptive poll window and blocking counters.
func (q *QueuePair) WaitStats() iopoll.WaitStats { return q.ring.WaitStats() }

// Interrupts is how many interrupts the pair's vector has delivered so far
// (as far as its waits have consumed them), or 0 in ModePoll.
func (q *QueuePair) Interrupts() uint64 {
	if c, ok := q.irq.(interface{ Count() uint64 }); ok {
		return c.Count()
	}
	return 0
}
