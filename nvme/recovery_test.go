package nvme

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
	"github.com/nvmepoll/nvmepoll/queue"
)

// faultRun is one asynchronous workload against a faulty model: n reads of
// one block each at LBAs 0..n-1 (each block holds its LBA), one of which
// (LBA victim) the fault hits. It returns each request's final error and
// how many times each was delivered.
type faultRun struct {
	c    *Controller
	m    *nvmetest.Controller
	ns   *Namespace
	qp   *QueuePair
	pool *Pool
	reqs []Request
	hits []int
}

const faultReads = 8

func newFaultRun(t *testing.T, opts *Options) *faultRun {
	t.Helper()
	return newFaultRunWith(t, nvmetest.Config{}, opts)
}

func newFaultRunWith(t *testing.T, cfg nvmetest.Config, opts *Options) *faultRun {
	t.Helper()
	checkGoroutines(t)
	if opts == nil {
		opts = &Options{}
	}
	if opts.IOTimeout == 0 {
		opts.IOTimeout = 200 * time.Millisecond
	}
	if opts.AbortTimeout == 0 {
		opts.AbortTimeout = 200 * time.Millisecond
	}
	c, m, ns, qp, pool := asyncSetup(t, cfg, opts, 32)
	fr := &faultRun{c: c, m: m, ns: ns, qp: qp, pool: pool, reqs: make([]Request, faultReads), hits: make([]int, faultReads)}
	// Each block carries its LBA, so a read that came back from the wrong
	// place (or not at all) is caught.
	blk := make([]byte, ns.BlockSize())
	for lba := range faultReads {
		blk[0] = byte(lba + 1)
		if err := ns.WriteBlocks(context.Background(), uint64(lba), blk); err != nil {
			t.Fatal(err)
		}
	}
	return fr
}

// run submits the reads and polls until each was delivered; it fails the
// test if that takes more than 10 s (a hang) or anything is delivered twice.
func (fr *faultRun) run(t *testing.T, during func()) {
	t.Helper()
	delivered := 0
	for i := range fr.reqs {
		b, err := fr.pool.Get()
		if err != nil {
			t.Fatal(err)
		}
		clear(b.Bytes)
		fr.reqs[i] = Request{Opcode: NVMRead, Namespace: fr.ns, LBA: uint64(i), Blocks: 1, Buf: b, Tag: uint64(i),
			Done: func(r *Request) { fr.hits[r.Tag]++; delivered++ }}
		if err := fr.qp.Submit(&fr.reqs[i]); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
	}
	if during != nil {
		during()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for delivered < len(fr.reqs) {
		if _, err := fr.qp.PollContext(ctx, 1, 32); err != nil {
			t.Fatalf("Poll after %d of %d deliveries: %v (counters %+v)", delivered, len(fr.reqs), err, fr.c.Counters())
		}
	}
	fr.qp.Poll(0, 32) // nothing more may arrive
	for i, h := range fr.hits {
		if h != 1 {
			t.Errorf("request %d delivered %d times, want exactly once", i, h)
		}
	}
	for i := range fr.reqs {
		r := &fr.reqs[i]
		if r.Err == nil && r.Buf.Bytes[0] != byte(i+1) {
			t.Errorf("read of lba %d succeeded with the data of block %d", i, int(r.Buf.Bytes[0])-1)
		}
		fr.pool.Put(r.Buf)
	}
	checkSlots(t, fr.qp)
}

// ok checks that the requests other than the victims succeeded, and that
// the queue pair works afterwards.
func (fr *faultRun) ok(t *testing.T, victims ...int) {
	t.Helper()
	for i := range fr.reqs {
		isVictim := false
		for _, v := range victims {
			isVictim = isVictim || v == i
		}
		if !isVictim && fr.reqs[i].Err != nil {
			t.Errorf("request %d (not hit by the fault): %v", i, fr.reqs[i].Err)
		}
	}
	// The pair and the synchronous API still work.
	b, _ := fr.pool.Get()
	defer fr.pool.Put(b)
	r := Request{Opcode: NVMRead, Namespace: fr.ns, LBA: 3, Blocks: 1, Buf: b}
	if err := fr.qp.exec(context.Background(), &r); err != nil || b.Bytes[0] != 4 {
		t.Errorf("read after the fault: %v (byte %d, want 4)", err, b.Bytes[0])
	}
	if err := fr.ns.ReadBlocks(context.Background(), 5, make([]byte, fr.ns.BlockSize())); err != nil {
		t.Errorf("synchronous read after the fault: %v", err)
	}
	checkSlots(t, fr.qp)
}

func matchRead(lba uint64) func(*nvmetest.Command) bool {
	return nvmetest.MatchLBA(1, lba, 1, nvmetest.OpRead)
}

// Each injected fault ends in its documented outcome (recovery.go,
// timeout.go), with no hang, nothing delivered twice, no slot and no
// goroutine left behind.
func TestFaultOutcomes(t *testing.T) {
	t.Run("error status", func(t *testing.T) {
		fr := newFaultRun(t, nil)
		fr.m.FailLBA(1, 2, 1, nvmetest.OpRead, nvmetest.StatusUnrecoveredRead|nvmetest.StatusDNR)
		fr.run(t, nil)
		var se *StatusError
		if err := fr.reqs[2].Err; !errors.As(err, &se) || !errors.Is(err, ErrUnrecoveredRead) || se.LBA != 2 {
			t.Errorf("lba 2: %v, want Unrecovered Read Error at lba 2", err)
		}
		fr.ok(t, 2)
		if n := fr.c.Counters().Resets; n != 0 {
			t.Errorf("an error status caused %d resets", n)
		}
	})

	// A completion that never becomes visible: the command times out, the
	// Abort cannot end it (the model already ran it), the controller is
	// reset, the victim fails with ErrTimeout.
	for _, tc := range []struct {
		name string
		f    func() *nvmetest.Fault
		bad  int // queue.CQEErrorKind counted, -1 none
	}{
		{"dropped completion", func() *nvmetest.Fault { return &nvmetest.Fault{Drop: true} }, -1},
		{"unknown cid", func() *nvmetest.Fault { return &nvmetest.Fault{UnknownCID: true} }, int(queue.UnknownCID)},
		{"wrong phase", func() *nvmetest.Fault { return &nvmetest.Fault{WrongPhase: true} }, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fr := newFaultRun(t, nil)
			f := tc.f()
			f.Match, f.Count = matchRead(4), 1
			fr.m.Inject(f)
			start := time.Now()
			fr.run(t, nil)
			if err := fr.reqs[4].Err; !errors.Is(err, ErrTimeout) {
				t.Errorf("victim: %v, want ErrTimeout", err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %v (IOTimeout and AbortTimeout 200ms)", d)
			}
			fr.ok(t, 4)
			k := fr.c.Counters()
			if k.Timeouts < 1 || k.Aborts < 1 || k.Resets != 1 || k.FailedByReset != 1 {
				t.Errorf("counters %+v: want a timeout, an abort, one reset failing one command", k)
			}
			if tc.bad >= 0 && k.BadCQEs[tc.bad] != 1 {
				t.Errorf("BadCQEs %v: want one of kind %v", k.BadCQEs, queue.CQEErrorKind(tc.bad))
			}
		})
	}

	t.Run("duplicate completion", func(t *testing.T) {
		fr := newFaultRun(t, nil)
		fr.m.Inject(&nvmetest.Fault{Match: matchRead(1), Duplicate: true, Count: 1})
		fr.run(t, nil)
		fr.ok(t)
		if k := fr.c.Counters(); k.BadCQEs[queue.IdleCID] != 1 || k.Resets != 0 {
			t.Errorf("counters %+v: want one idle/duplicate cid, no reset", k)
		}
	})

	t.Run("delay longer than the timeout, abort succeeds", func(t *testing.T) {
		fr := newFaultRun(t, nil)
		fr.m.Inject(&nvmetest.Fault{Match: matchRead(6), Delay: 5 * time.Second, Count: 1})
		fr.run(t, nil)
		if err := fr.reqs[6].Err; !errors.Is(err, ErrAbortRequested) {
			t.Errorf("victim: %v, want Command Abort Requested", err)
		}
		fr.ok(t, 6)
		if k := fr.c.Counters(); k.Aborts != 1 || k.Resets != 0 {
			t.Errorf("counters %+v: want one abort, no reset", k)
		}
	})

	t.Run("controller fatal status", func(t *testing.T) {
		// CFS while commands are held: the poller sees it, resets, and
		// every command is resubmitted and succeeds.
		fr := newFaultRun(t, &Options{IOTimeout: 10 * time.Second})
		f := fr.m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Hold: true, Count: faultReads})
		fr.run(t, func() { waitHits(t, f, faultReads); fr.m.SetFatal() })
		fr.ok(t)
		if k := fr.c.Counters(); k.FatalStatus < 1 || k.Resets != 1 || k.Resubmitted != faultReads {
			t.Errorf("counters %+v: want CFS seen, one reset, %d resubmitted", k, faultReads)
		}
	})

	t.Run("registers all ones", func(t *testing.T) {
		fr := newFaultRun(t, nil)
		fr.m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Hold: true, Count: faultReads})
		fr.run(t, func() { fr.m.SetGone(true) })
		for i := range fr.reqs {
			if err := fr.reqs[i].Err; !errors.Is(err, ErrDeviceGone) {
				t.Errorf("request %d: %v, want ErrDeviceGone", i, err)
			}
		}
		b, _ := fr.pool.Get()
		defer fr.pool.Put(b)
		r := Request{Opcode: NVMRead, Namespace: fr.ns, Blocks: 1, Buf: b}
		if err := fr.qp.Submit(&r); !errors.Is(err, ErrDeviceGone) {
			t.Errorf("Submit on a gone device: %v, want ErrDeviceGone", err)
		}
		if err := fr.ns.ReadBlocks(context.Background(), 0, make([]byte, 512)); !errors.Is(err, ErrDeviceGone) {
			t.Errorf("ReadBlocks on a gone device: %v, want ErrDeviceGone", err)
		}
		if k := fr.c.Counters(); k.DeviceGone < 1 {
			t.Errorf("counters %+v: want DeviceGone", k)
		}
	})
}

// Reset while commands are outstanding: they are resubmitted and complete
// once with the right data, the queue pair object stays valid, and the
// controller's queue count is restored.
func TestResetResubmits(t *testing.T) {
	for _, shadow := range []bool{false, true} {
		t.Run(fmt.Sprintf("shadow doorbells %v", shadow), func(t *testing.T) { testResetResubmits(t, shadow) })
	}
}

func testResetResubmits(t *testing.T, shadow bool) {
	fr := newFaultRunWith(t, nvmetest.Config{ShadowDoorbells: shadow}, &Options{IOTimeout: 10 * time.Second})
	if on, _ := fr.c.ShadowDoorbells(); on != shadow {
		t.Fatalf("shadow doorbells %v, want %v", on, shadow)
	}
	f := fr.m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Hold: true, Count: faultReads})
	fr.run(t, func() {
		waitHits(t, f, faultReads)
		if err := fr.c.Reset(context.Background()); err != nil {
			t.Fatalf("Reset: %v", err)
		}
	})
	fr.ok(t)
	k := fr.c.Counters()
	if k.Resets != 1 || k.Resubmitted != faultReads || k.FailedByReset != 0 {
		t.Errorf("counters %+v: want 1 reset, %d resubmitted, none failed", k, faultReads)
	}
	if sq, cq := fr.c.QueuesGranted(); sq < 1 || cq < 1 {
		t.Errorf("queues granted after the reset: %d, %d", sq, cq)
	}
}

// A command caught in more than MaxResubmits resets fails with ErrReset
// instead of looping forever.
func TestResetGivesUp(t *testing.T) {
	fr := newFaultRun(t, nil)
	fr.m.Inject(&nvmetest.Fault{Match: matchRead(0), Hold: true})
	fr.run(t, func() {
		// Let the others complete, then reset again and again.
		for fr.qp.Inflight() > 1 {
			fr.qp.Poll(0, 32)
		}
		for range MaxResubmits + 1 {
			if err := fr.c.Reset(context.Background()); err != nil {
				t.Fatal(err)
			}
			fr.qp.Poll(0, 32) // the pair recovers: re-posts or fails lba 0
		}
	})
	if err := fr.reqs[0].Err; !errors.Is(err, ErrReset) {
		t.Errorf("request held across %d resets: %v, want ErrReset", MaxResubmits+1, err)
	}
	for i := 1; i < faultReads; i++ {
		if fr.reqs[i].Err != nil {
			t.Errorf("request %d: %v", i, fr.reqs[i].Err)
		}
	}
}

// waitHits waits until the model has applied f to n commands (fetched
// them), so a test acts on commands the controller really holds.
func waitHits(t *testing.T, f *nvmetest.Fault, n int) {
	t.Helper()
	for start := time.Now(); f.Hits() < n; time.Sleep(time.Millisecond) {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("the model fetched %d of %d commands", f.Hits(), n)
		}
	}
}

// A queue left on the controller with the pair's qid (an earlier
// re-creation that a second reset raced) must not wedge the pair: it
// deletes the leftover and re-creates its own queues.
func TestResetClearsLeftoverQueue(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{}, nil)
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	qp, err := c.NewQueuePairWith(QueueOptions{Depth: 8, Mode: ModePoll})
	if err != nil {
		t.Fatal(err)
	}
	defer qp.Close()
	pool, err := c.NewPool(2, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	stray, err := pool.Get()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Reset(ctx); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	// The leftover: a CQ with the pair's qid the pair did not make.
	leftover := queue.Command{Opcode: uint8(AdminCreateIOCQ), PRP1: stray.IOVA,
		CDW10: uint32(8-1)<<16 | uint32(qp.ID()), CDW11: 1}
	if _, err := c.AdminCommand(ctx, &leftover); err != nil {
		t.Fatalf("creating the leftover CQ %d: %v", qp.ID(), err)
	}

	buf, err := pool.Get()
	if err != nil {
		t.Fatal(err)
	}
	done := false
	req := Request{Opcode: NVMRead, Namespace: ns, Buf: buf, Done: func(*Request) { done = true }}
	if err := qp.Submit(&req); err != nil {
		t.Fatalf("Submit after Reset with a leftover CQ: %v", err)
	}
	if _, err := qp.Poll(1, 1); err != nil || !done || req.Err != nil {
		t.Fatalf("read after Reset with a leftover CQ: Poll err %v, done %v, request err %v", err, done, req.Err)
	}
	if info, ok := m.CompletionQueue(qp.ID()); !ok || info.Base == stray.IOVA {
		t.Errorf("CQ %d after recovery: %+v: still the leftover at %#x", qp.ID(), info, stray.IOVA)
	}
}

// TestStaleClockNoSpuriousTimeout: a pair left idle (and unpolled) for an
// hour has a coarse clock an hour old. Requests posted on it must be timed
// from when the driver next reads the clock, not from that stale tick, or
// every one would be aborted as an hour overdue.
func TestStaleClockNoSpuriousTimeout(t *testing.T) {
	fr := newFaultRun(t, &Options{IOTimeout: 300 * time.Millisecond})
	fr.qp.tick = fr.c.now() - int64(time.Hour) // as after an hour without a Poll
	// Slow enough that a timeout scan runs while they are outstanding.
	fr.m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Delay: 150 * time.Millisecond, Count: faultReads})
	fr.run(t, nil)
	fr.ok(t)
	if n := fr.c.Counters(); n.Timeouts != 0 || n.Aborts != 0 {
		t.Errorf("requests that took 150 ms (IOTimeout 300 ms) after an idle hour: %d timeouts, %d aborts, want none", n.Timeouts, n.Aborts)
	}
}
