package nvme

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
)

// startSlowReset starts a Reset whose Set Features the model delays, and
// returns once the reset holds adminMu (in that Set Features).
func startSlowReset(t *testing.T, c *Controller, m *nvmetest.Controller) *sync.WaitGroup {
	t.Helper()
	f := m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpSetFeatures), Delay: 300 * time.Millisecond, Count: 1})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := c.Reset(context.Background()); err != nil {
			t.Errorf("Reset: %v", err)
		}
	}()
	waitHits(t, f, 1)
	return &wg
}

// A reset that lands while NewQueuePair creates its queues must not leave
// the pair believing its (live) queues were dropped: Close deletes them,
// and the queue id works for the next pair.
func TestNewPairRacingResetCloseDeletesQueues(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{}, nil)
	wg := startSlowReset(t, c, m)
	qp, err := c.NewQueuePairWith(QueueOptions{Depth: 8, Mode: ModePoll}) // blocks on adminMu behind the reset
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	qid := qp.ID()
	if _, ok := m.CompletionQueue(qid); !ok {
		t.Fatalf("CQ %d not created", qid)
	}
	if err := qp.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if info, ok := m.CompletionQueue(qid); ok {
		t.Errorf("after Close the controller still has CQ %d at %#x (its memory was freed, its qid given back)", qid, info.Base)
	}
	if _, ok := m.SubmissionQueue(qid); ok {
		t.Errorf("after Close the controller still has SQ %d", qid)
	}
	qp2, err := c.NewQueuePairWith(QueueOptions{Depth: 8, Mode: ModePoll})
	if err != nil {
		t.Errorf("next NewQueuePair: %v (counters %+v)", err, c.Counters())
	} else {
		qp2.Close()
	}
}

// A second reset that lands while a pair re-creates its queues after the
// first: the pair must make them again in the new generation before it
// re-posts anything. Before, it re-posted into queues it thought one
// generation old; its next recovery deleted the SQ, the controller
// answered the held commands with Aborted: SQ Deletion, and those entries
// completed the commands re-posted after, which the controller still held.
func TestRecoverRacingResetDeliversOnce(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{}, &Options{IOTimeout: time.Minute})
	ns, _ := c.Namespace(1)
	qp, err := c.NewQueuePairWith(QueueOptions{Depth: 8, Mode: ModePoll})
	if err != nil {
		t.Fatal(err)
	}
	pool, err := c.NewPool(4, 4096)
	if err != nil {
		t.Fatal(err)
	}
	hold := m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Hold: true})
	const n = 4
	reqs := make([]Request, n)
	hits := make([]int, n)
	for i := range reqs {
		b, _ := pool.Get()
		reqs[i] = Request{Opcode: NVMRead, Namespace: ns, LBA: uint64(i), Blocks: 1, Buf: b, Tag: uint64(i),
			Done: func(r *Request) { hits[r.Tag]++ }}
		if err := qp.Submit(&reqs[i]); err != nil {
			t.Fatal(err)
		}
	}
	waitHits(t, hold, n)
	if err := c.Reset(context.Background()); err != nil { // reset 1
		t.Fatal(err)
	}
	wg := startSlowReset(t, c, m) // reset 2 holds adminMu
	qp.Poll(0, 32)                // recover for reset 1: its Create CQ waits for reset 2, then succeeds
	wg.Wait()
	waitHits(t, hold, 2*n)
	qp.Poll(0, 32) // nothing more to recover
	for i := range reqs {
		if hits[i] != 0 {
			t.Errorf("request %d delivered (%v) while the controller still holds it", i, reqs[i].Err)
		}
	}
	m.Remove(hold)
	if k := m.ReleaseHeld(); k != n {
		t.Errorf("the model held %d reads after the resets, want the %d re-posted", k, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for qp.Inflight() > 0 {
		if _, err := qp.PollContext(ctx, 1, 32); err != nil {
			t.Fatal(err)
		}
	}
	for i := range reqs {
		if hits[i] != 1 || reqs[i].Err != nil {
			t.Errorf("request %d: delivered %d times, err %v; want once, no error", i, hits[i], reqs[i].Err)
		}
	}
	qp.Close()
}

// A synchronous read past IOTimeout is aborted once, and counted: the
// Abort its caller sends marks it, so the timeout scan does not send
// another.
func TestSyncTimeoutAbortsOnce(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{}, &Options{IOTimeout: 200 * time.Millisecond, AbortTimeout: 200 * time.Millisecond})
	ns, _ := c.Namespace(1)
	buf := make([]byte, ns.BlockSize())
	if err := ns.ReadBlocks(context.Background(), 0, buf); err != nil {
		t.Fatal(err)
	}
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Drop: true, Count: 1})
	if err := ns.ReadBlocks(context.Background(), 0, buf); !errors.Is(err, ErrTimeout) {
		t.Errorf("dropped read: %v, want ErrTimeout", err)
	}
	k := c.Counters()
	if sent := m.Stats().AdminCommands[nvmetest.OpAbort]; k.Aborts != sent || sent != 1 || k.Timeouts != 1 {
		t.Errorf("counters %+v: Aborts %d, Timeouts %d, and %d Abort commands reached the controller; want 1 of each", k, k.Aborts, k.Timeouts, sent)
	}
}

// A pair's doorbell counters keep counting across a controller reset
// (the shadow doorbells are started over, their counters are not).
func TestShadowStatsAcrossReset(t *testing.T) {
	c, _ := openModel(t, nvmetest.Config{ShadowDoorbells: true}, nil)
	ns, _ := c.Namespace(1)
	qp, err := c.NewQueuePairWith(QueueOptions{Depth: 8, Mode: ModePoll})
	if err != nil {
		t.Fatal(err)
	}
	defer qp.Close()
	pool, _ := c.NewPool(1, 4096)
	b, _ := pool.Get()
	r := Request{Opcode: NVMRead, Namespace: ns, Blocks: 1, Buf: b}
	for range 5 {
		if err := qp.exec(context.Background(), &r); err != nil {
			t.Fatal(err)
		}
	}
	before := qp.Doorbells()
	if err := c.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := qp.exec(context.Background(), &r); err != nil {
		t.Fatal(err)
	}
	after := qp.Doorbells()
	if after.Updates() < before.Updates() {
		t.Errorf("doorbell updates went from %d to %d across a reset (stats %+v -> %+v)", before.Updates(), after.Updates(), before, after)
	}
}

// CSTS.CFS while a pair polls with a read held: the poller notices within
// the health interval, whatever the mode and Poll's min, resets the
// controller and resubmits the read. Before, a spinning pair's timeout
// scan took every look at the clock and CFS was seen only at IOTimeout.
func TestFatalSeenWhilePolling(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode CompletionMode
		min  int
	}{
		{"poll mode, Poll(0)", ModePoll, 0},
		{"poll mode, Poll(1)", ModePoll, 1},
		{"default mode, Poll(0)", ModeDefault, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, m := openModel(t, nvmetest.Config{}, &Options{IOTimeout: 5 * time.Second})
			ns, _ := c.Namespace(1)
			qp, err := c.NewQueuePairWith(QueueOptions{Depth: 8, Mode: tc.mode})
			if err != nil {
				t.Fatal(err)
			}
			defer qp.Close()
			pool, _ := c.NewPool(1, 4096)
			b, _ := pool.Get()
			hold := m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Hold: true, Count: 1})
			done := false
			r := Request{Opcode: NVMRead, Namespace: ns, Blocks: 1, Buf: b, Done: func(*Request) { done = true }}
			if err := qp.Submit(&r); err != nil {
				t.Fatal(err)
			}
			waitHits(t, hold, 1)
			m.SetFatal()
			start := time.Now()
			for !done {
				qp.Poll(tc.min, 8)
			}
			if k := c.Counters(); k.FatalStatus != 1 || r.Err != nil || time.Since(start) > 2*time.Second {
				t.Errorf("CSTS.CFS with one read held: after %v, read %v, counters %+v; want it seen at once and the read resubmitted",
					time.Since(start).Round(time.Millisecond), r.Err, k)
			}
		})
	}
}

// Two pairs see one CSTS.CFS: one reset, counted once.
func TestFatalCountedOnce(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{}, &Options{IOTimeout: 10 * time.Second})
	ns, _ := c.Namespace(1)
	hold := m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Hold: true, Count: 2})
	var wg sync.WaitGroup
	var start sync.WaitGroup
	start.Add(2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			qp, err := c.NewQueuePairWith(QueueOptions{Depth: 8})
			if err != nil {
				t.Error(err)
				return
			}
			defer qp.Close()
			pool, _ := c.NewPool(1, 4096)
			defer pool.Close()
			b, _ := pool.Get()
			done := false
			r := Request{Opcode: NVMRead, Namespace: ns, LBA: uint64(i), Blocks: 1, Buf: b, Done: func(*Request) { done = true }}
			if err := qp.Submit(&r); err != nil {
				t.Error(err)
				return
			}
			start.Done()
			for !done {
				qp.Poll(1, 8)
			}
			if r.Err != nil {
				t.Error(r.Err)
			}
		}()
	}
	waitHits(t, hold, 2)
	start.Wait()
	m.SetFatal()
	wg.Wait()
	if k := c.Counters(); k.FatalStatus != 1 || k.Resets != 1 {
		t.Errorf("one CSTS.CFS: counters %+v", k)
	}
}
