package nvme

import (
	"context"
	"time"

	"github.com/nvmepoll/nvmepoll/iopoll"
)

// execContext is the context exec polls with: the caller's, ended also by
// Options.IOTimeout. Each queue pair has one, reused by every synchronous
// call, because context.WithTimeout costs four allocations and a clock read
// per I/O, and in a guest with the HPET clocksource a clock read is a
// system call that waits for the hypervisor's device lock.
//
// It reads the system clock only when its clockGate opens, or when a poller
// about to block asks for the Deadline: the call's start is taken the first
// time (clockRefresh in by the TSC, so a spinning call that ends sooner
// never reads it) and the timeout is checked on later openings. A timeout
// therefore comes up to two clockRefresh late (or one blocking wait, which
// the Deadline bounds), never early, however the TSC behaves.
type execContext struct {
	context.Context // the caller's

	timeout    time.Duration
	interval   int64 // clockRefresh in ticks
	gate       clockGate
	startTicks int64
	start      time.Time     // zero until the gate first opens
	lead       time.Duration // TSC time from startTicks to start, for messages
	expired    bool          // the timeout has passed
}

// begin readies x for one call under ctx.
func (x *execContext) begin(ctx context.Context, timeout time.Duration, interval int64) {
	t := iopoll.Ticks()
	*x = execContext{Context: ctx, timeout: timeout, interval: interval, gate: clockGate{ticks: t}, startTicks: t}
}

// Err is the caller's error, or DeadlineExceeded once timeout has passed
// by the system clock since the start was taken.
func (x *execContext) Err() error {
	if err := x.Context.Err(); err != nil {
		return err
	}
	if x.expired {
		return context.DeadlineExceeded
	}
	if !x.gate.due(x.interval) {
		return nil
	}
	now := time.Now()
	if x.takeStart(now) {
		return nil
	}
	if now.Sub(x.start) >= x.timeout {
		x.expired = true // a context's Err stays set
		return context.DeadlineExceeded
	}
	return nil
}

// Deadline is the earlier of the caller's deadline and the I/O timeout's.
// Only a poller about to block asks for it (the interrupt modes bound
// their sleep by it), and it makes a system call then anyway, so the start
// is taken here if it was not yet.
func (x *execContext) Deadline() (time.Time, bool) {
	x.takeStart(time.Now())
	dl := x.start.Add(x.timeout)
	if pd, ok := x.Context.Deadline(); ok && pd.Before(dl) {
		return pd, true
	}
	return dl, true
}

// takeStart records now as the call's start if none was taken yet, and
// reports whether it did. The start is later than the true one, so every
// deadline measured from it is too.
func (x *execContext) takeStart(now time.Time) bool {
	if !x.start.IsZero() {
		return false
	}
	x.start = now
	x.lead = min(iopoll.ProcessClock().Duration(iopoll.Ticks()-x.startTicks), 2*clockRefresh)
	return true
}

// waited is how long the call has been waiting by the system clock, 0 if
// it never read it: the figure that decides an escalation.
func (x *execContext) waited() time.Duration {
	if x.start.IsZero() {
		return 0
	}
	return time.Since(x.start)
}

// elapsed is the call's age for messages: waited plus the TSC's estimate
// of the time before the start was taken.
func (x *execContext) elapsed() time.Duration {
	if x.start.IsZero() {
		return iopoll.ProcessClock().Duration(iopoll.Ticks() - x.startTicks)
	}
	return x.waited() + x.lead
}
