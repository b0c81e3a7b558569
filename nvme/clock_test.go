package nvme

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nvmepoll/nvmepoll/iopoll"
)

// TestClockDue checks when a polling pair reads the system clock: only once
// the TSC says clockRefresh has passed, or it went backwards, or
// refreshEvery looks went by. In a guest with the HPET clocksource each
// read is a system call that waits for the hypervisor's device lock, so a
// pair that read it every few hundred polls lost a fifth of its IOPS.
func TestClockDue(t *testing.T) {
	q, _, _ := newEchoPair(t, 8)
	if q.c.refreshTicks <= 0 {
		t.Fatalf("refreshTicks %d: Open's clock calibration gave no interval", q.c.refreshTicks)
	}
	if !q.clockDue() {
		t.Fatal("the first look is not due: a new pair would wait clockRefresh for its first clock read")
	}
	// Just read: not due again until the TSC moves clockRefresh on.
	for i := 1; i < refreshEvery; i++ {
		if q.clockDue() {
			if d := iopoll.ProcessClock().Duration(iopoll.Ticks() - q.clock.ticks); d < clockRefresh/2 {
				t.Fatalf("look %d was due %v after the last read, want at least %v", i, d, clockRefresh)
			}
			break // the test was slow enough for the TSC to pass it: fine
		}
	}

	q.clock.ticks = iopoll.Ticks() - q.c.refreshTicks - 1
	q.clock.looks = 0
	if !q.clockDue() {
		t.Error("not due with clockRefresh past by the TSC")
	}
	q.clock.ticks = iopoll.Ticks() + q.c.refreshTicks*1000 // another CPU's TSC, far ahead
	if !q.clockDue() {
		t.Error("not due after the TSC went backwards: a jump back would stop the clock for as long")
	}

	// A TSC that does not move: the clock is still read every refreshEvery looks.
	q.clock.ticks, q.clock.looks = iopoll.Ticks(), 0
	q.c.refreshTicks = 1 << 62
	due := 0
	for range 3 * refreshEvery {
		if q.clockDue() {
			due++
		}
	}
	if due != 3 {
		t.Errorf("%d reads in %d looks with the TSC never due, want 3", due, 3*refreshEvery)
	}
}

// TestSpinningPairReadsClockRarely runs I/O for a while on a pair that
// never waits and counts how often Reap asked for the system clock.
func TestSpinningPairReadsClockRarely(t *testing.T) {
	q, ns, pool := newEchoPair(t, 16)
	var again []*Request
	reqs := make([]Request, 4) // always some in flight, as under load
	for i := range reqs {
		buf, _ := pool.Get()
		reqs[i] = Request{Opcode: NVMRead, Namespace: ns, Blocks: 8, Buf: buf, Done: func(r *Request) { again = append(again, r) }}
		again = append(again, &reqs[i])
	}
	reads, last := 0, q.clock.ticks
	start := time.Now()
	for time.Since(start) < 50*time.Millisecond {
		for range 1000 {
			for _, r := range again {
				if err := q.Submit(r); err != nil {
					t.Fatal(err)
				}
			}
			again = again[:0]
			if _, err := q.Poll(1, 1); err != nil {
				t.Fatal(err)
			}
			if q.clock.ticks != last { // clockDue said yes: Reap read the clock
				reads, last = reads+1, q.clock.ticks
			}
		}
	}
	elapsed := time.Since(start)
	// One per clockRefresh, one per refreshEvery looks, and one at the start.
	limit := int(elapsed/clockRefresh) + int(q.reaps)/(tickEvery*refreshEvery) + 2
	if reads == 0 || reads > limit {
		t.Errorf("the clock was read %d times in %v (%d Reaps), want 1 to %d", reads, elapsed, q.reaps, limit)
	}
}

// TestExecContext checks the synchronous path's deadline: the I/O timeout
// never fires early (a false timeout aborts a command and can reset the
// controller), the caller's own deadline and cancellation still count, and
// Deadline bounds a blocking wait by the earlier of the two.
func TestExecContext(t *testing.T) {
	interval := iopoll.ProcessClock().Ticks(clockRefresh)
	var x execContext
	const timeout = 30 * time.Millisecond
	start := time.Now()
	x.begin(context.Background(), timeout, interval)
	for x.Err() == nil {
		if time.Since(start) > 5*time.Second {
			t.Fatal("no DeadlineExceeded 5 s into a 30 ms timeout")
		}
	}
	d := time.Since(start)
	if err := x.Err(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Err = %v, want DeadlineExceeded", err)
	}
	if d < timeout {
		t.Errorf("timed out after %v, before the %v timeout", d, timeout)
	}
	if e := x.elapsed(); e < timeout || e > d+time.Millisecond {
		t.Errorf("elapsed() = %v for a wait of %v", e, d)
	}

	// Deadline: the timeout's, or the caller's when that is earlier.
	x.begin(context.Background(), time.Hour, interval)
	if dl, ok := x.Deadline(); !ok || time.Until(dl) < 59*time.Minute {
		t.Errorf("Deadline() = %v, %v; want about an hour from now", dl, ok)
	}
	parent, cancel := context.WithTimeout(context.Background(), time.Minute)
	x.begin(parent, time.Hour, interval)
	want, _ := parent.Deadline()
	if dl, ok := x.Deadline(); !ok || !dl.Equal(want) {
		t.Errorf("Deadline() = %v, want the caller's %v", dl, want)
	}
	cancel()
	if err := x.Err(); !errors.Is(err, context.Canceled) {
		t.Errorf("Err after the caller cancelled = %v, want Canceled", err)
	}
	if x.Done() != parent.Done() {
		t.Error("Done is not the caller's channel")
	}
}
