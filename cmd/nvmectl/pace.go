package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nvmepoll/nvmepoll/nvme"
)

// perf's completion modes and paced load (issue 6): how the process waits for
// the controller, and what that costs in CPU when it is mostly idle.

// paceFlags adds --mode and --rate to perf's flags.
func paceFlags(fs *flag.FlagSet, c *perfConfig) {
	c.mode = nvme.ModePoll
	fs.Func("mode", "completion `MODE`: poll (busy-poll, the default), interrupt (sleep on MSI-X) or adaptive (poll a short window, then sleep)",
		func(s string) (err error) {
			c.mode, err = nvme.ParseCompletionMode(s)
			return err
		})
	fs.DurationVar(&c.window, "window-max", 0, "cap of the adaptive poll `WINDOW` (default 256µs)")
	fs.Float64Var(&c.rate, "rate", 0, "paced load: `N` I/Os per second in total over all queues (default: as fast as the depth allows)")
}

// cpuTime is the process's user + system CPU time so far (getrusage).
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuPct is CPU time over wall time as a percentage of one core, 1 decimal.
func cpuPct(cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return float64(int64(float64(cpu)/float64(wall)*1000+0.5)) / 10
}

// runPaced issues I/Os at a fixed rate (interval apart on this queue) while a
// slot is free, until stop, then drains. Between two I/Os it waits the way the
// mode says: poll mode keeps polling the queue (what a polling daemon does),
// the other modes sleep until the next I/O is due, and block in Poll while one
// is in flight.
func (w *perfWorker) runPaced(stop *atomic.Bool, interval time.Duration, mode nvme.CompletionMode) {
	for i := range w.reqs {
		w.free = append(w.free, &w.reqs[i])
	}
	next := time.Now()
	for !stop.Load() && w.firstErr == nil {
		now := time.Now()
		if now.Sub(next) > time.Second {
			next = now // far behind (a stall): do not fire a burst to catch up
		}
		for !now.Before(next) && len(w.free) > 0 {
			r := w.free[len(w.free)-1]
			w.prepare(r)
			if err := w.qp.Submit(r); err != nil {
				if errors.Is(err, nvme.ErrQueueFull) {
					break
				}
				w.errs++
				w.firstErr = fmt.Errorf("submitting: %w", err)
				break
			}
			w.free = w.free[:len(w.free)-1]
			next = next.Add(interval)
		}
		var err error
		switch {
		case mode == nvme.ModePoll:
			_, err = w.qp.Poll(0, len(w.reqs))
		case w.qp.Inflight() > 0:
			// Block for a completion, but not past the next I/O's time.
			ctx, cancel := context.WithDeadline(context.Background(), next)
			_, err = w.qp.PollContext(ctx, 1, len(w.reqs))
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				err = nil
			}
		default:
			// Bounded, so stop is seen within a second even at --rate 1;
			// every extra wake-up shows in an idle run's CPU figure.
			time.Sleep(min(time.Until(next), time.Second))
		}
		if err != nil {
			w.errs++
			w.firstErr = fmt.Errorf("polling: %w", err)
			break
		}
	}
	w.drain()
}

// printPace prints the completion mode, the CPU it cost and how each queue
// waited.
func printPace(out io.Writer, r perfJSON, workers []*perfWorker) {
	rate := "unpaced"
	if r.Rate > 0 {
		rate = fmt.Sprintf("paced at %g I/Os per second", r.Rate)
	}
	fmt.Fprintf(out, "completion mode %s, %s: CPU %.1f%% of one core (user+system over wall time), %.2f us per I/O\n",
		r.Mode, rate, r.CPUPct, r.CPUPerIO)
	for _, w := range workers {
		st := w.qp.WaitStats()
		if st.Blocks == 0 && st.Mode.String() == "poll" {
			continue
		}
		window := ""
		if st.Mode.String() == "adaptive" {
			window = fmt.Sprintf(", poll window %v (max %v, %d grows, %d shrinks)", st.Window, st.WindowMax, st.Grows, st.Shrinks)
		}
		fmt.Fprintf(out, "  queue %d waits: %d blocking (%d woken by an interrupt, %d timed out)%s, %d interrupts\n",
			w.qp.ID(), st.Blocks, st.Wakeups, st.Timeouts, window, w.qp.Interrupts())
	}
	fmt.Fprintln(out)
}
