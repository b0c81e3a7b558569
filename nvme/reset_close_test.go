package nvme

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
)

// Closing pairs the controller may still hold, and the reset that drops
// them (heldqueue.go), against the rest of the driver: other pairs in use,
// Controller.Close, pairs whose queues are already gone.

// A pair closed while another goroutine's Reset runs: that reset drops the
// pair's queues, so its Delete fails with Invalid Queue Identifier, which
// must not cost a second reset.
func TestCloseDuringResetNoSecondReset(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{}, &Options{AdminTimeout: 2 * time.Second})
	qp, err := c.NewQueuePair(16)
	if err != nil {
		t.Fatal(err)
	}
	wg := startSlowReset(t, c, m) // holds the admin queue in its Set Features
	qp.Close()
	wg.Wait()
	if n := c.Counters().Resets; n != 1 {
		t.Errorf("%d resets, want 1 (the explicit one): closing a pair whose queues the reset already dropped reset the controller again", n)
	}
}

// When the reset that should drop a retired pair's queues fails, the pair
// is held, and so is the bounce buffer of the read abandoned on it: the
// pool must not hand it to the next caller while the controller may still
// write into it.
func TestHeldPairKeepsAbandonedBounceBuffer(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}}},
		&Options{SyncQueues: 1, AdminTimeout: 200 * time.Millisecond, IOTimeout: time.Minute})
	ns, _ := c.Namespace(1)
	ctx := context.Background()
	if err := ns.WriteBlocks(ctx, 0, make([]byte, 512)); err != nil { // makes the synchronous pair
		t.Fatal(err)
	}
	readPRP := recordReadPRP(m)
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Hold: true, Count: 1})
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpAbort), Status: nvmetest.StatusInternalError})
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpDeleteSQ), Hold: true, Count: 1})
	// The reset's Set Features fails, twice (it retries): the reset fails.
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpSetFeatures), Status: nvmetest.StatusInternalError, Count: 2})
	rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	err := ns.ReadBlocks(rctx, 0, make([]byte, 512)) // abandoned; its pair is retired
	cancel()
	if err == nil {
		t.Fatal("read held by the controller succeeded")
	}
	if k := c.Counters(); k.ResetFailures == 0 {
		t.Fatalf("counters %+v: want the failed reset this test is about", k)
	}
	prp := readPRP()
	if prp == 0 {
		t.Fatal("the read never reached the controller")
	}
	for {
		b, err := c.syncPool.Get()
		if err != nil {
			break
		}
		if b.IOVA == prp {
			t.Errorf("the pool handed out bounce buffer %#x of the read abandoned on a held pair", prp)
		}
	}
}

// Controller.Close with three pairs, the first of which the controller
// will not delete: the reset runs inside Close's loop over the pairs, and
// still every request is delivered and every DMA buffer freed.
func TestTeardownResetInsideLoop(t *testing.T) {
	checkGoroutines(t)
	for round := range 4 {
		c, m, mem := openUnmanaged(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}}, ShadowDoorbells: round%2 == 0})
		ns, _ := c.Namespace(1)
		pool, err := c.NewPool(8, 4096)
		if err != nil {
			t.Fatal(err)
		}
		m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Hold: true})
		done := 0
		for range 3 {
			qp, err := c.NewQueuePair(16)
			if err != nil {
				t.Fatal(err)
			}
			for k := range 2 {
				b, _ := pool.Get()
				r := &Request{Opcode: NVMRead, Namespace: ns, LBA: uint64(k), Blocks: 1, Buf: b, Done: func(*Request) { done++ }}
				if err := qp.Submit(r); err != nil {
					t.Fatal(err)
				}
			}
		}
		m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpDeleteSQ), Status: nvmetest.StatusInternalError, Count: 1})
		c.Close() // the failed Delete is in its error
		if n := c.Counters().Resets; n != 1 {
			t.Errorf("round %d: %d resets, want 1", round, n)
		}
		if done != 6 {
			t.Errorf("round %d: %d of 6 requests delivered", round, done)
		}
		if n := mem.Mapped(); n != 0 {
			t.Errorf("round %d: %d DMA buffers mapped after Close", round, n)
		}
		if n := m.DMAFaults(); n != 0 {
			t.Errorf("round %d: %d DMA accesses to unmapped memory", round, n)
		}
	}
}

// A pair whose re-creation after a reset the controller refused has no
// queues on the controller: closing it does not reset the controller
// again, and the other pair keeps working.
func TestCloseUnrecreatedPairNoReset(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}}}, &Options{AdminTimeout: 200 * time.Millisecond})
	ns, _ := c.Namespace(1)
	qp, err := c.NewQueuePair(16)
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.NewQueuePair(16)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpCreateCQ), Status: nvmetest.StatusInternalError, Count: 1})
	pool, _ := c.NewPool(2, 4096)
	b, _ := pool.Get()
	if err := qp.Submit(&Request{Opcode: NVMRead, Namespace: ns, Blocks: 1, Buf: b}); err == nil {
		t.Fatal("Submit on a pair whose queues the controller refused to re-create succeeded")
	}
	before := c.Counters().Resets
	qp.Close()
	if n := c.Counters().Resets - before; n != 0 {
		t.Errorf("closing a pair with no queues on the controller: %d resets, want 0", n)
	}
	r := &Request{Opcode: NVMRead, Namespace: ns, Blocks: 1, Buf: b}
	if err := other.Submit(r); err != nil {
		t.Fatal(err)
	}
	if n, err := other.Poll(1, 1); n != 1 || err != nil || r.Err != nil {
		t.Errorf("read on the other pair: Poll %d, %v; %v", n, err, r.Err)
	}
	other.Close()
}

// The reset a failed Delete causes lands while another goroutine keeps
// reading on its own pair, as the API allows: that pair re-creates its
// queues and its reads still succeed.
func TestResetFromCloseWhileOtherPairPolls(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}}, ShadowDoorbells: true},
		&Options{AdminTimeout: 500 * time.Millisecond})
	ns, _ := c.Namespace(1)
	a, err := c.NewQueuePair(16)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.NewQueuePair(16)
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := c.NewPool(4, 4096)
	buf, _ := pool.Get()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ios int
	var failed []error
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := &Request{Opcode: NVMRead, Namespace: ns, Blocks: 1, Buf: buf}
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := b.Submit(r); err != nil {
				t.Errorf("Submit on the other pair: %v", err)
				return
			}
			for !r.finished {
				if _, err := b.Poll(1, 1); err != nil {
					t.Errorf("Poll on the other pair: %v", err)
					return
				}
			}
			ios++
			if r.Err != nil {
				failed = append(failed, r.Err)
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpDeleteSQ), Status: nvmetest.StatusInternalError, Count: 1})
	a.Close()
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := c.Counters().Resets; n != 1 {
		t.Errorf("%d resets, want 1 from the failed Delete", n)
	}
	if ios == 0 || len(failed) != 0 {
		t.Errorf("other pair: %d reads, failed: %v; want reads and none failed", ios, failed)
	}
	b.Close()
}

// A controller that drops Create I/O CQ for every queue but the first: the
// synchronous API's failed attempt to make a second pair must not be made
// again by every contended call (each a timeout and a reset) just because
// the failed attempt gave its own queue id back.
func TestFailedSyncPairNotRetriedWithReset(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}}},
		&Options{SyncQueues: 2, AdminTimeout: 50 * time.Millisecond})
	ns, _ := c.Namespace(1)
	ctx := context.Background()
	if err := ns.WriteBlocks(ctx, 0, make([]byte, 512)); err != nil {
		t.Fatal(err)
	}
	m.Inject(&nvmetest.Fault{Match: func(cmd *nvmetest.Command) bool {
		return cmd.SQID == 0 && cmd.Opcode == nvmetest.OpCreateCQ && uint16(cmd.CDW10) != 1
	}, Drop: true})
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Delay: 2 * time.Millisecond})
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 512)
			for i := range 60 {
				ns.ReadBlocks(ctx, uint64(g*100+i), b) // some fail while the controller resets
			}
		}()
	}
	wg.Wait()
	if k := c.Counters(); k.Resets > 1 {
		t.Errorf("%d controller resets, want at most 1: each contended synchronous call tried to make the second pair again", k.Resets)
	}
}

// releaseOnShutdown is the model with one hook: just before the host's
// CC.SHN write reaches it, the controller runs the commands it held (a late
// answer arriving during Controller.Close, before the shutdown).
type releaseOnShutdown struct {
	*nvmetest.Controller
	released int
}

func (d *releaseOnShutdown) Write32(off int, v uint32) {
	if off == RegCC && v>>14&3 != 0 {
		d.released += d.Controller.ReleaseHeld()
	}
	d.Controller.Write32(off, v)
}

// A sync pair is held (Delete unanswered, controller fatal so no reset),
// with its abandoned read's bounce buffer in heldBounce. Controller.Close
// must keep that buffer mapped until the controller is shut down, as it
// does the pair's rings.
func TestHeldBounceMappedUntilShutdown(t *testing.T) {
	m, err := nvmetest.New(nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}}})
	if err != nil {
		t.Fatal(err)
	}
	dev := &releaseOnShutdown{Controller: m}
	c, err := Open(dev, &Options{SyncQueues: 1, AdminTimeout: 200 * time.Millisecond, IOTimeout: time.Minute, ShutdownTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ns, _ := c.Namespace(1)
	ctx := context.Background()
	if err := ns.WriteBlocks(ctx, 0, make([]byte, 512)); err != nil {
		t.Fatal(err)
	}
	deleting := make(chan struct{}, 1)
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Hold: true, Count: 1})
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpAbort), Status: nvmetest.StatusInternalError})
	m.Inject(&nvmetest.Fault{Match: func(cmd *nvmetest.Command) bool {
		if cmd.SQID == 0 && cmd.Opcode == nvmetest.OpDeleteSQ {
			select {
			case deleting <- struct{}{}:
			default:
			}
			return true
		}
		return false
	}, Hold: true, Count: 1})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); <-deleting; time.Sleep(20 * time.Millisecond); m.SetFatal() }()
	rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	err = ns.ReadBlocks(rctx, 0, make([]byte, 512)) // abandoned; pair retired and held
	cancel()
	wg.Wait()
	if err == nil {
		t.Fatal("read held by the controller succeeded")
	}
	c.qpMu.Lock()
	nheld, nbounce := len(c.held), len(c.heldBounce)
	c.qpMu.Unlock()
	if nheld != 1 || nbounce != 1 {
		t.Fatalf("held %d pairs, %d bounce buffers: the setup did not hold the pair", nheld, nbounce)
	}
	c.Close()
	if dev.released == 0 {
		t.Fatal("nothing was held at shutdown")
	}
	if n := m.DMAFaults(); n != 0 {
		t.Errorf("late read on a held queue during Close hit %d unmapped IOVAs: the held bounce buffer's pool was unmapped before shutdown", n)
	}
}

// After a failed reset, a contended synchronous call finds NewQueuePair
// refused (controller failed) and lowers syncMax to the pairs it has. A
// successful Reset must let the synchronous API use all its pairs again.
func TestSyncMaxAfterFailedThenSuccessfulReset(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}}},
		&Options{SyncQueues: 2, AdminTimeout: 200 * time.Millisecond})
	ns, _ := c.Namespace(1)
	ctx := context.Background()
	if err := ns.WriteBlocks(ctx, 0, make([]byte, 512)); err != nil { // makes sync pair 1
		t.Fatal(err)
	}
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpSetFeatures), Status: nvmetest.StatusInternalError, Count: 2})
	if err := c.Reset(ctx); err == nil {
		t.Fatal("reset with failing Set Features succeeded")
	}
	qp, err := c.takeSyncPair(ctx) // another goroutine's call holds pair 1
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	ns.ReadBlocks(wctx, 0, make([]byte, 512)) // fails: controller failed
	cancel()
	c.putSyncPair(qp)
	if err := c.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	qp, err = c.takeSyncPair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.putSyncPair(qp)
	wctx, cancel = context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if err := ns.ReadBlocks(wctx, 0, make([]byte, 512)); err != nil {
		c.syncMu.Lock()
		t.Errorf("second concurrent synchronous call after a successful Reset: %v (syncMax %d, syncLimit %d)", err, c.syncMax, c.syncLimit)
		c.syncMu.Unlock()
	}
}

// A pair closed while the controller is fatal: it cannot delete the queues
// and was not reset since they were made, so it may still use them; the
// rings stay mapped (held) and Close says so.
func TestFatalCloseHoldsRings(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}}}, &Options{AdminTimeout: 200 * time.Millisecond})
	mem := m.DMA().(*nvmetest.Memory)
	ns, _ := c.Namespace(1)
	pool, _ := c.NewPool(1, 4096)
	b, _ := pool.Get()
	qp, err := c.NewQueuePair(16)
	if err != nil {
		t.Fatal(err)
	}
	hf := m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Hold: true, Count: 1})
	if err := qp.Submit(&Request{Opcode: NVMRead, Namespace: ns, Blocks: 1, Buf: b}); err != nil {
		t.Fatal(err)
	}
	for hf.Hits() == 0 {
		time.Sleep(time.Millisecond)
	}
	m.SetFatal()
	before := mem.Mapped()
	if err := qp.Close(); err == nil || !strings.Contains(err.Error(), "stay taken until the controller is reset or closed") {
		t.Errorf("Close on a fatal controller: %v, want that the pair stays held", err)
	}
	if n := mem.Mapped(); n != before {
		t.Errorf("%d DMA buffers mapped after Close, %d before: the rings were freed", n, before)
	}
	if n := m.ReleaseHeld(); n != 1 { // the controller posts the held read's completion
		t.Fatalf("the model released %d held reads, want 1", n)
	}
	if n := m.DMAFaults(); n != 0 {
		t.Errorf("%d DMA accesses to unmapped IOVAs: the undeleted pair's rings were freed while the fatal controller held its queues", n)
	}
	c.Reset(context.Background())
}

// Deleting queues the controller no longer has is answered with Invalid
// Queue Identifier by the specification, and with Completion Queue Invalid
// for a CQ by QEMU (nvme_del_cq): neither means the queue may still be
// there, so neither costs a reset.
func TestDeleteOfMissingQueueNoReset(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{}, nil)
	qp, err := c.NewQueuePair(16)
	if err != nil {
		t.Fatal(err)
	}
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpDeleteSQ), Status: nvmetest.StatusInvalidQueueID | nvmetest.StatusDNR, Count: 1})
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpDeleteCQ), Status: nvmetest.StatusInvalidCQ | nvmetest.StatusDNR, Count: 1})
	qp.Close()
	if n := c.Counters().Resets; n != 0 {
		t.Errorf("%d resets after Deletes answered \"no such queue\", want none", n)
	}
	// The controller model still has them (the faults answered for it):
	// reset now so Close does not leave it holding freed rings.
	if err := c.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A reset that times out waiting for CSTS.RDY to clear leaves the
// controller failed but not disabled: it may still use every queue. A pair
// closed then holds its rings, as on a fatal controller never reset, though
// the failed reset moved the generation the pair compares.
func TestFailedResetBeforeDisableHoldsRings(t *testing.T) {
	c, m, mem := openUnmanaged(t, nvmetest.Config{NeverDisables: true, Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}}})
	ns, _ := c.Namespace(1)
	pool, _ := c.NewPool(1, 4096)
	b, _ := pool.Get()
	qp, err := c.NewQueuePair(16)
	if err != nil {
		t.Fatal(err)
	}
	hf := m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Hold: true, Count: 1})
	if err := qp.Submit(&Request{Opcode: NVMRead, Namespace: ns, Blocks: 1, Buf: b}); err != nil {
		t.Fatal(err)
	}
	for hf.Hits() == 0 {
		time.Sleep(time.Millisecond)
	}
	m.SetFatal()
	if err := c.Reset(context.Background()); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Reset of a controller that never clears RDY: %v, want a CAP.TO timeout", err)
	}
	before := mem.Mapped()
	if err := qp.Close(); err == nil || !strings.Contains(err.Error(), "stay taken until the controller is reset or closed") {
		t.Errorf("Close after a reset that never disabled the controller: %v, want that the pair stays held", err)
	}
	if n := mem.Mapped(); n != before {
		t.Errorf("%d DMA buffers mapped after Close, %d before: the rings were freed", n, before)
	}
	if n := m.ReleaseHeld(); n != 1 { // the controller posts the held read's completion
		t.Fatalf("the model released %d held reads, want 1", n)
	}
	if n := m.DMAFaults(); n != 0 {
		t.Errorf("%d DMA accesses to unmapped IOVAs: the pair's rings were freed while the controller still held its queues", n)
	}
	c.Close()
}
