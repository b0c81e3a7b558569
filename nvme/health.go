package nvme

import (
	"errors"
	"sync/atomic"

	"github.com/nvmepoll/nvmepoll/queue"
)

// Counters count what went wrong with the controller and what nvmepoll did
// about it, since Open. A storage daemon exports them; any non-zero value
// other than Resets asked for by the caller means the device misbehaved.
type Counters struct {
	// Timeouts: I/O commands found outstanding past Options.IOTimeout.
	Timeouts uint64
	// Aborts: Abort commands sent for them.
	Aborts uint64
	// Resets: controller resets started (Reset, or automatic), and
	// ResetFailures how many of them failed (the controller is then
	// failed until a Reset succeeds).
	Resets, ResetFailures uint64
	// Resubmitted: commands re-posted after a reset; FailedByReset:
	// commands a reset ended with an error instead (see recovery.go).
	Resubmitted, FailedByReset uint64
	// FatalStatus: resets started because CSTS.CFS was set. NotReady:
	// resets started because CSTS.RDY was found clear while the controller
	// should be running (a function reset behind nvmepoll's back). One
	// fault counts once however many pairs see it. DeviceGone: registers
	// read all ones.
	FatalStatus, NotReady, DeviceGone uint64
	// BadCQEs counts completion entries rejected by validation on any
	// queue (admin included), indexed by queue.CQEErrorKind: unknown cid,
	// idle or duplicate cid, SQ head out of range, wrong SQ id.
	BadCQEs [4]uint64
	// BadIdentify counts implausible Identify data the controller sent,
	// indexed by IdentifyAnomaly: one per check that fired, on the data
	// Open, IdentifyController, IdentifyNamespace, Namespace and
	// ActiveNamespaces read. A rejection during Open fails Open, so only
	// what Open clamped (MDTS, NPSS) and what later reads find shows here.
	BadIdentify [NumIdentifyAnomalies]uint64
}

// IdentifyAnomalies is the total of BadIdentify.
func (k Counters) IdentifyAnomalies() uint64 {
	var n uint64
	for _, v := range k.BadIdentify {
		n += v
	}
	return n
}

// counters is the atomic form of Counters, updated from any goroutine.
type counters struct {
	timeouts, aborts, resets, resetFailures atomic.Uint64
	resubmitted, failedByReset              atomic.Uint64
	fatalStatus, notReady, deviceGone       atomic.Uint64
	badCQEs                                 [4]atomic.Uint64
	badIdentify                             [NumIdentifyAnomalies]atomic.Uint64
}

// Counters returns a snapshot of the controller's error counters.
func (c *Controller) Counters() Counters {
	k := &c.rec.counts
	r := Counters{
		Timeouts: k.timeouts.Load(), Aborts: k.aborts.Load(),
		Resets: k.resets.Load(), ResetFailures: k.resetFailures.Load(),
		Resubmitted: k.resubmitted.Load(), FailedByReset: k.failedByReset.Load(),
		FatalStatus: k.fatalStatus.Load(), NotReady: k.notReady.Load(), DeviceGone: k.deviceGone.Load(),
	}
	for i := range r.BadCQEs {
		r.BadCQEs[i] = k.badCQEs[i].Load()
	}
	for i := range r.BadIdentify {
		r.BadIdentify[i] = k.badIdentify[i].Load()
	}
	return r
}

// countBadCQE counts a completion entry that failed validation.
func (c *Controller) countBadCQE(err error) {
	var ce *queue.CQEError
	if errors.As(err, &ce) && int(ce.Kind) < len(c.rec.counts.badCQEs) {
		c.rec.counts.badCQEs[ce.Kind].Add(1)
	}
}

// countIdentify counts an Identify check that fired (an anomalyFunc).
func (c *Controller) countIdentify(k IdentifyAnomaly) {
	if k < NumIdentifyAnomalies {
		c.rec.counts.badIdentify[k].Add(1)
	}
}
