package nvme

import (
	"context"
	"fmt"
	"time"

	"github.com/nvmepoll/nvmepoll/iopoll"
	"github.com/nvmepoll/nvmepoll/queue"
)

// Command timeouts on the asynchronous path.
//
// A request carries the pair's coarse clock (QueuePair.tick) from the
// moment it was posted: no clock read per I/O. Reap refreshes the clock
// every tickEvery calls and, at most every scanInterval, walks the
// in-flight table:
//
//   - a request older than Options.IOTimeout gets an Abort (admin command,
//     bounded by Options.AbortTimeout) and is marked;
//   - a marked request still outstanding AbortTimeout later is what the
//     abort did not resolve: the controller is reset (recovery.go), that
//     request fails with ErrTimeout and the others are resubmitted.
//
// So the first action comes between IOTimeout and IOTimeout+scanInterval
// after submission, provided somebody polls the pair: timeouts, like
// completions, are noticed by Poll. The submit side never reads the clock:
// a pair that was idle may not have been polled for hours, so a request
// posted on it is stamped stampUnknown and gets its time at the next scan.
// Its first action then comes up to one scanInterval later.

// tickEvery is how many Reap calls pass between two looks at the clock.
const tickEvery = 256

// clockRefresh is how often, at most, Reap reads the system clock; between
// two reads it looks only at the TSC (iopoll.Ticks). In a guest whose kernel
// distrusts the TSC (QEMU with two vCPUs uses the HPET), time.Now is a
// system call and an HPET read that waits for QEMU's big lock while the
// emulated controller works: reading it every 256 Reaps kept the polling
// vCPU off the CQ while QEMU posted completions, and cost a fifth of QD1's
// IOPS and a seventh of QD32's (docs/PERFORMANCE.md). The TSC only says when
// to read; every timeout and health decision uses the system clock, so a
// TSC that jumps, differs between CPUs or stops makes a check early or
// late, never a false timeout. Stamps are as coarse as this, far finer than
// scanInterval.
const clockRefresh = 10 * time.Millisecond

// refreshEvery bounds the wait on a TSC that does not advance: after this
// many looks the clock is read whatever the TSC says.
const refreshEvery = 1024

// clockGate says when a poller should read the system clock: once
// clockRefresh has passed by the TSC since it last said so, or the TSC went
// backwards (another CPU's), or refreshEvery looks went by.
type clockGate struct {
	ticks int64 // iopoll.Ticks when it last said yes
	looks int   // due calls since then
}

// due reports whether to read the clock now; interval is clockRefresh in
// ticks (Controller.refreshTicks).
func (g *clockGate) due(interval int64) bool {
	t := iopoll.Ticks()
	g.looks++
	if d := t - g.ticks; d >= 0 && d < interval && g.looks < refreshEvery {
		return false
	}
	g.ticks, g.looks = t, 0
	return true
}

// clockDue is Reap's gate.
func (q *QueuePair) clockDue() bool { return q.clock.due(q.c.refreshTicks) }

// scanInterval is how often the in-flight table is walked for old requests
// (the resolution of IOTimeout): a quarter of the timeout, at most a second.
func (c *Controller) scanInterval() int64 {
	return int64(min(c.opts.IOTimeout/4, time.Second))
}

// now is the monotonic clock in nanoseconds since the controller opened.
func (c *Controller) now() int64 { return int64(time.Since(c.opened)) }

// stampUnknown marks a request whose posting time the coarse clock cannot
// tell: the next scan stamps it.
const stampUnknown = -1

// stamp marks r as posted now (the coarse clock).
func (q *QueuePair) stamp(r *Request) {
	if q.pair.Outstanding() == 0 {
		// An idle pair's clock may be stale, and so is every stamp taken
		// from it until Reap next reads the clock.
		q.tick = stampUnknown
	}
	r.stamp = q.tick
}

// clockAndScan is Reap's periodic work: refresh the coarse clock, and walk
// the in-flight table for requests past their timeout. It reports whether
// a reset happened (the caller then recovers the pair).
func (q *QueuePair) clockAndScan() bool {
	c := q.c
	now := c.now()
	q.tick = now
	if now-q.lastScan < c.scanInterval() {
		return false
	}
	q.lastScan = now
	timeout, abortWait := int64(c.opts.IOTimeout), int64(c.opts.AbortTimeout)
	gen := c.rec.gen.Load()
	for _, r := range q.inflight {
		if r == nil {
			continue
		}
		if r.stamp == stampUnknown {
			r.stamp = now
		}
		switch {
		case r.abortAt != 0 && now-r.abortAt > abortWait:
			// The abort did not end it: reset. The others are resubmitted.
			r.timedOut = true
			c.autoReset(gen, fmt.Sprintf("%v lba %d on queue %d outstanding %v, Abort did not end it within %v",
				r.Opcode, r.LBA, q.id, time.Duration(now-r.stamp).Round(time.Millisecond), c.opts.AbortTimeout), nil)
			return c.rec.gen.Load() != q.gen
		case r.abortAt == 0 && now-r.stamp > timeout:
			c.rec.counts.timeouts.Add(1)
			r.abortAt = now
			q.sendAbort(q.pair.CommandID(r.cid))
		}
	}
	return false
}

// sendAbort asks the controller to abort cid (the command id on the wire,
// from queue.Pair.CommandID) on this pair's SQ, bounded by
// AbortTimeout. Whether it agrees does not matter here: an aborted command
// completes (with Command Abort Requested) and one that does not is
// handled by the next scan.
func (q *QueuePair) sendAbort(cid uint16) {
	c := q.c
	c.rec.counts.aborts.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.AbortTimeout)
	c.Abort(ctx, q.id, cid)
	cancel()
}

// resolveOrReset is the synchronous path's escalation (exec's giveUp has
// already sent the Abort): poll until r completes or AbortTimeout passes,
// then reset the controller, which fails r (abandoned) and resubmits the
// rest.
func (q *QueuePair) resolveOrReset(r *Request) {
	c := q.c
	gen := c.rec.gen.Load()
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.AbortTimeout)
	for !r.finished && ctx.Err() == nil {
		if _, err := q.ring.PollContext(ctx, 0, iopoll.Batch); err != nil {
			break
		}
	}
	cancel()
	if r.finished {
		return
	}
	r.timedOut = true
	c.autoReset(gen, fmt.Sprintf("synchronous %v lba %d on queue %d timed out, Abort did not end it within %v",
		r.Opcode, r.LBA, q.id, c.opts.AbortTimeout), nil)
	q.ring.Poll(0, iopoll.Batch) // recover the pair: r is delivered (failed)
}

// healthInterval is how often an idle pair reads CSTS while polling.
const healthInterval = int64(10 * time.Millisecond)

// idleCheck is Reap's periodic work when it finds nothing: refresh the
// clock, read CSTS every healthInterval, and scan for timeouts. It reports
// whether the generation changed (the caller recovers its pair).
func (q *QueuePair) idleCheck() bool {
	now := q.c.now()
	q.tick = now
	if now-q.lastHealth >= healthInterval {
		q.lastHealth = now
		if q.checkHealth() {
			return true
		}
	}
	return q.pair.Outstanding() > 0 && q.clockAndScan()
}

// setFeaturesCmd is a Set Features command (not saved) for use under
// adminMu.
func setFeaturesCmd(fid FeatureID, cdw11 uint32) queue.Command {
	return queue.Command{Opcode: uint8(AdminSetFeatures), CDW10: uint32(fid), CDW11: cdw11}
}
