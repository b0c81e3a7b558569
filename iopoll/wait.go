package iopoll

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
)

// Mode is how a Ring waits between two device polls that did not find
// enough completions. The reap loop (Poll's min/max contract, batching,
// delivery) is the same in every mode; only this wait step differs.
type Mode int

const (
	// ModePoll busy-polls the device, yielding the processor now and then:
	// the lowest latency, and a whole core while anything is in flight.
	ModePoll Mode = iota
	// ModeInterrupt blocks on the completion queue's interrupt as soon as
	// a device poll comes back empty.
	ModeInterrupt
	// ModeAdaptive polls for up to an adaptive window, then blocks on the
	// interrupt (QEMU aio-posix, shared/seeds/004). The window grows while
	// waits end a little after it, and shrinks when they run past Max.
	ModeAdaptive
)

func (m Mode) String() string {
	switch m {
	case ModePoll:
		return "poll"
	case ModeInterrupt:
		return "interrupt"
	case ModeAdaptive:
		return "adaptive"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode turns "poll", "interrupt" or "adaptive" into a Mode.
func ParseMode(s string) (Mode, error) {
	for _, m := range []Mode{ModePoll, ModeInterrupt, ModeAdaptive} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("iopoll: unknown completion mode %q: want poll, interrupt or adaptive", s)
}

// Interrupt is what a Ring blocks on in ModeInterrupt and ModeAdaptive: an
// MSI-X eventfd for a real controller, a channel in the nvmetest model.
// A notification is edge-like: the device signals once when it posts
// completions, and nothing is remembered but "signalled since the last
// Clear".
type Interrupt interface {
	// Clear consumes pending notifications without blocking (for an
	// eventfd: reads its counter to zero). The Ring polls the device once
	// more after Clear and before Wait, so a completion posted just
	// before Clear is found by that poll, and one posted after it makes
	// Wait return at once: no wake-up is lost.
	Clear() error
	// Wait blocks until a notification arrives or timeout passes and
	// reports whether one arrived.
	Wait(timeout time.Duration) (bool, error)
}

// Masker is an Interrupt whose source can be held off while the Ring
// polls: MSI-X's per-vector mask bit. A masked source does not signal but
// remembers that it should have (the pending bit) and signals once when
// unmasked. In ModeAdaptive the Ring keeps it masked while it spins, so a
// completion that polling finds anyway costs no interrupt, and unmasks it
// before it arms: no notification is lost.
type Masker interface {
	Mask()
	Unmask()
}

// Window bounds of ModeAdaptive.
const (
	// DefaultWindowStart is the first poll window, as in QEMU (4 µs).
	DefaultWindowStart = 4 * time.Microsecond
	// DefaultWindowMax caps the window. QEMU's iothread default
	// poll-max-ns is 32 µs, for generic event loops; NVMe reads are
	// slower: 50-150 µs for TLC flash at QD1 (70 µs p50 for QEMU's
	// emulated controller), and a wake-up through MSI-X, eventfd and the
	// scheduler costs a few µs of CPU and 5-20 µs of latency on real
	// hardware (much more under emulation). A 64 µs cap gave up on most
	// reads just before they ended (QD1 adaptive at 0.8x poll in the
	// guest, docs/PERFORMANCE.md); 256 µs catches them and bounds the
	// CPU spent on one wait at a quarter of a millisecond. An idle pair is
	// unaffected: waits of seconds shrink the window to 0.
	DefaultWindowMax = 256 * time.Microsecond
	// blockSlice bounds one blocking wait, so a context is looked at and
	// a lost interrupt (a misconfigured IOMMU, a device bug) costs a
	// stall, never a hang. It is counted in WaitStats.Timeouts.
	blockSlice = 100 * time.Millisecond
	// clockEvery is how many spins pass between two clock reads in the
	// adaptive window (a spin is a few loads: tens of ns natively).
	clockEvery = 16
)

// WaitOptions configures how a Ring waits (see NewWithWait).
type WaitOptions struct {
	Mode Mode
	// Interrupt is required by ModeInterrupt and ModeAdaptive.
	Interrupt Interrupt
	// WindowStart and WindowMax bound ModeAdaptive's poll window
	// (defaults DefaultWindowStart and DefaultWindowMax).
	WindowStart, WindowMax time.Duration
}

// WaitStats is a snapshot of how a Ring has been waiting, for diagnostics.
type WaitStats struct {
	Mode Mode
	// Window is ModeAdaptive's current poll window (0: it blocks at once).
	Window, WindowMax time.Duration
	// Arms counts the waits that armed the interrupt for blocking
	// (unmasked the vector, with a Masker, and cleared old notifications);
	// a poll right after may still find the completion, so Arms >= Blocks.
	// Blocks counts blocking waits; Wakeups those ended by a notification,
	// Timeouts those that ran their whole slice.
	Arms, Blocks, Wakeups, Timeouts uint64
	// Grows and Shrinks count window changes.
	Grows, Shrinks uint64
}

// NewWithWait is New with a completion mode: how Poll waits for the device
// when it has not found enough. New(c, deliver) is ModePoll.
func NewWithWait(c Completer, deliver func(batch []*Request), o WaitOptions) (*Ring, error) {
	r := New(c, deliver)
	switch o.Mode {
	case ModePoll:
	case ModeInterrupt, ModeAdaptive:
		if o.Interrupt == nil {
			return nil, fmt.Errorf("iopoll: %v mode needs an Interrupt to block on", o.Mode)
		}
	default:
		return nil, fmt.Errorf("iopoll: unknown completion mode %d", int(o.Mode))
	}
	if o.WindowStart <= 0 {
		o.WindowStart = DefaultWindowStart
	}
	if o.WindowMax <= 0 {
		o.WindowMax = DefaultWindowMax
	}
	if o.WindowStart > o.WindowMax {
		return nil, fmt.Errorf("iopoll: poll window start %v is above its maximum %v", o.WindowStart, o.WindowMax)
	}
	r.w = waiter{mode: o.Mode, irq: o.Interrupt, start: o.WindowStart, max: o.WindowMax}
	r.w.window.Store(int64(o.WindowStart))
	if o.Mode == ModeAdaptive {
		r.w.clock = ProcessClock()
	}
	if m, ok := o.Interrupt.(Masker); ok && o.Mode == ModeAdaptive {
		// ModeInterrupt blocks on every wait: masking would only add two
		// device writes to each.
		r.w.mask = m
		m.Mask()
	}
	return r, nil
}

// WaitStats returns the Ring's wait mode, adaptive window and counters. It
// may be called from any goroutine.
func (r *Ring) WaitStats() WaitStats {
	w := &r.w
	return WaitStats{
		Mode: w.mode, Window: time.Duration(w.window.Load()), WindowMax: w.max,
		Arms: w.arms.Load(), Blocks: w.blocks.Load(), Wakeups: w.wakeups.Load(), Timeouts: w.timeouts.Load(),
		Grows: w.grows.Load(), Shrinks: w.shrinks.Load(),
	}
}

// Blocks is WaitStats().Blocks, cheap enough for a Completer to call on
// every Reap: it changes when the reaper has slept since it last looked.
func (r *Ring) Blocks() uint64 { return r.w.blocks.Load() }

// waiter is the wait step's state. The zero value is ModePoll. Only the
// reaper touches the unexported non-atomic fields.
type waiter struct {
	mode       Mode
	irq        Interrupt
	start, max time.Duration

	// began is when the current wait for the device started, in Ticks;
	// timing says whether one is under way. waited sums this Poll's waits
	// so far, each up to the device poll that found completions: the time
	// spent delivering them (the caller's callbacks) is not time the
	// device took, as aio_poll takes block_ns before running handlers.
	// Only ModeAdaptive times its waits.
	began    int64
	timing   bool
	waited   int64     // Ticks
	measured bool      // this Poll waited at all
	clock    TickClock // ModeAdaptive: converts Ticks for the window
	armed    bool      // Clear done, the device polled since: Wait may block
	// mask, in ModeAdaptive with a Masker, is unmasked only from arming
	// to the end of the blocking wait (or of the Poll).
	mask     Masker
	unmasked bool

	window                          atomic.Int64 // ns
	arms, blocks, wakeups, timeouts atomic.Uint64
	grows, shrinks                  atomic.Uint64
}

// wait runs between two device polls of one Poll (or Close) call. spins
// counts the device polls so far in this call.
func (w *waiter) wait(ctx context.Context, spins int) error {
	if w.mode == ModePoll {
		if spins%yieldEvery == yieldEvery-1 {
			runtime.Gosched()
		}
		return nil
	}
	if w.mode == ModeAdaptive && !w.timing {
		w.began, w.timing = Ticks(), true
	}
	if w.mode == ModeAdaptive && !w.armed {
		// Spin while inside the window. Ticks is cheap, but the counter
		// is still read every clockEvery spins only.
		win := time.Duration(w.window.Load())
		if win > 0 && (spins%clockEvery != 0 || w.clock.Duration(Ticks()-w.began) < win) {
			if spins%yieldEvery == yieldEvery-1 {
				runtime.Gosched()
			}
			return nil
		}
	}
	if !w.armed {
		// Arm: let the vector signal again (one held while masked is sent
		// now), forget old notifications, then let the loop poll the
		// device once more before blocking.
		if w.mask != nil && !w.unmasked {
			w.mask.Unmask()
			w.unmasked = true
		}
		if err := w.irq.Clear(); err != nil {
			return err
		}
		w.armed = true
		w.arms.Add(1)
		return nil
	}
	w.armed = false
	d := blockSlice
	if ctx != nil {
		if err := ctx.Err(); err != nil {
			return err
		}
		if dl, ok := ctx.Deadline(); ok {
			d = max(min(d, time.Until(dl)), time.Microsecond)
		}
	}
	w.blocks.Add(1)
	got, err := w.irq.Wait(d)
	w.remask()
	if err != nil {
		return err
	}
	if got {
		w.wakeups.Add(1)
	} else {
		w.timeouts.Add(1)
	}
	return nil
}

// found ends the current wait: a device poll turned up completions.
func (w *waiter) found() {
	if w.timing {
		w.waited += Ticks() - w.began
		w.timing, w.measured = false, true
	}
}

// end closes one Poll: it adapts the window to how long the caller waited
// for the device, as aio_poll does with block_ns.
func (w *waiter) end() {
	w.armed = false
	w.remask()
	w.found() // a Poll that ends while waiting (ctx, error) waited until now
	if !w.measured {
		return
	}
	waited := w.clock.Duration(w.waited)
	w.waited, w.measured = 0, false
	w.adapt(waited)
}

// remask masks the vector again after arming: the reaper is about to poll.
func (w *waiter) remask() {
	if w.unmasked {
		w.mask.Mask()
		w.unmasked = false
	}
}

// adapt applies seeds/004's rule to one wait that lasted waited.
func (w *waiter) adapt(waited time.Duration) {
	win := time.Duration(w.window.Load())
	switch {
	case waited <= win:
		// The sweet spot: polling caught it.
	case waited > w.max:
		// Polling longer would not have helped: poll less. Halve it; below
		// the start it drops to 0, where every wait blocks at once (QEMU's
		// default poll_shrink of 0 resets straight to 0).
		win /= 2
		if win < w.start {
			win = 0
		}
		w.window.Store(int64(win))
		w.shrinks.Add(1)
	case win < w.max:
		// It ended after the window but within the cap: polling a bit
		// longer would have avoided a sleep.
		if win == 0 {
			win = w.start
		} else {
			win = min(win*2, w.max)
		}
		w.window.Store(int64(win))
		w.grows.Add(1)
	}
}
