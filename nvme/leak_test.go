package nvme

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// checkGoroutines records the number of goroutines now and, when the test
// and every cleanup registered after this call have finished (the model's
// worker, the Controller), fails if more are left. Call it first in a
// test, before anything that starts goroutines.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		// Goroutines that were told to stop may need a moment to exit.
		deadline := time.Now().Add(2 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines left behind (%d before, %d after):\n%s", n-before, before, n, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// openUnmanaged brings up a Controller on a fresh model with short admin
// and shutdown timeouts, for tests that close it themselves and then look
// at what is still mapped (openModel closes it only at the end).
func openUnmanaged(t *testing.T, cfg nvmetest.Config) (*Controller, *nvmetest.Controller, *nvmetest.Memory) {
	t.Helper()
	m, err := nvmetest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Open(m, &Options{AdminTimeout: 200 * time.Millisecond, ShutdownTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c, m, m.DMA().(*nvmetest.Memory)
}

// recordReadPRP has the model note the PRP1 of every I/O Read it fetches
// (a fault that matches nothing) and returns the last one seen.
func recordReadPRP(m *nvmetest.Controller) func() uint64 {
	var mu sync.Mutex
	var prp uint64
	m.Inject(&nvmetest.Fault{Match: func(cmd *nvmetest.Command) bool {
		if cmd.SQID != 0 && cmd.Opcode == nvmetest.OpRead {
			mu.Lock()
			prp = cmd.PRP1
			mu.Unlock()
		}
		return false // only records
	}})
	return func() uint64 {
		mu.Lock()
		defer mu.Unlock()
		return prp
	}
}

// checkSlots fails if qp holds a slot or a request: after every request
// has been delivered, every command slot must be free again and nothing
// may still count as in flight.
func checkSlots(t *testing.T, qp *QueuePair) {
	t.Helper()
	if n := qp.Inflight(); n != 0 {
		t.Errorf("queue %d: %d requests still in flight", qp.id, n)
	}
	if free, slots := qp.pair.Free(), qp.pair.Slots(); free != slots {
		t.Errorf("queue %d: %d of %d slots free: %d leaked", qp.id, free, slots, slots-free)
	}
	for cid, r := range qp.inflight {
		if r != nil {
			t.Errorf("queue %d: cid %d still maps to a request (%v lba %d)", qp.id, cid, r.Opcode, r.LBA)
		}
	}
}

// Close gives back every DMA buffer and goroutine, after clean use, after a
// reset, and when the device has gone away, 50 rounds each.
func TestCloseReleasesEverything(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before func(*Controller, *nvmetest.Controller)
	}{
		{"clean", func(*Controller, *nvmetest.Controller) {}},
		{"after a reset", func(c *Controller, _ *nvmetest.Controller) {
			if err := c.Reset(context.Background()); err != nil {
				t.Fatal(err)
			}
		}},
		{"device gone", func(_ *Controller, m *nvmetest.Controller) { m.SetGone(true) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			for i := range 50 {
				c, m, mem := openUnmanaged(t, nvmetest.Config{ShadowDoorbells: i%2 == 0})
				ns, err := c.Namespace(1)
				if err != nil {
					t.Fatal(err)
				}
				if err := ns.WriteBlocks(context.Background(), 0, make([]byte, 4096)); err != nil {
					t.Fatal(err)
				}
				if _, err := c.NewQueuePair(16); err != nil {
					t.Fatal(err)
				}
				if _, err := c.NewPool(4, 8192); err != nil {
					t.Fatal(err)
				}
				if mem.Mapped() < 5 {
					t.Fatalf("only %d DMA buffers mapped while open: the check would see nothing", mem.Mapped())
				}
				tc.before(c, m)
				c.Close() // errors are expected when the device is gone
				if n := mem.Mapped(); n != 0 {
					t.Fatalf("round %d: %d DMA buffers still mapped after Close", i, n)
				}
			}
		})
	}
}

// A queue pair whose Delete the controller fails, or whose Create it never
// answers, may still be in use by the controller: nvmepoll resets it (as
// Linux does), which drops every queue, and only then frees the rings and
// the queue id; a new pair works at once.
func TestUndeletedQueueResets(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault *nvmetest.Fault
		// make leaves behind a pair the controller may hold.
		make func(t *testing.T, c *Controller)
	}{
		{"delete fails", &nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpDeleteSQ), Status: nvmetest.StatusInternalError, Count: 1},
			func(t *testing.T, c *Controller) {
				qp, err := c.NewQueuePair(16)
				if err != nil {
					t.Fatal(err)
				}
				if err := qp.Close(); err == nil || !strings.Contains(err.Error(), "Internal Error") {
					t.Errorf("Close with a failing Delete I/O SQ: %v, want the controller's error", err)
				}
			}},
		{"create unanswered", &nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpCreateCQ), Drop: true, Count: 1},
			func(t *testing.T, c *Controller) {
				if _, err := c.NewQueuePair(16); !errors.Is(err, ErrTimeout) {
					t.Errorf("NewQueuePair with Create I/O CQ unanswered: %v, want ErrTimeout", err)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, m := openModel(t, nvmetest.Config{MaxQueuePairs: 1}, &Options{AdminTimeout: 200 * time.Millisecond})
			mem := m.DMA().(*nvmetest.Memory)
			before := mem.Mapped()
			m.Inject(tc.fault)
			tc.make(t, c)
			if n := c.Counters().Resets; n != 1 {
				t.Errorf("%d resets, want 1 to drop the queue the controller may still hold", n)
			}
			if n := mem.Mapped(); n != before {
				t.Errorf("%d DMA buffers mapped after the reset, want %d", n, before)
			}
			qp, err := c.NewQueuePair(16)
			if err != nil {
				t.Fatalf("NewQueuePair on the same queue id after the reset: %v", err)
			}
			if err := qp.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// If that reset fails too, the pair's rings and queue id stay taken (the
// controller may still use them) until Close, after shutdown, frees them.
// (No new command reaches the controller meanwhile: it is failed until a
// reset succeeds, and that drops the queues.)
func TestUndeletedQueueHeldWhenResetFails(t *testing.T) {
	c, m, mem := openUnmanaged(t, nvmetest.Config{MaxQueuePairs: 2})
	qp, err := c.NewQueuePair(16)
	if err != nil {
		t.Fatal(err)
	}
	before := mem.Mapped()
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpDeleteSQ), Status: nvmetest.StatusInternalError, Count: 1})
	// The reset's Set Features (number of queues) fails, twice (it retries).
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpSetFeatures), Status: nvmetest.StatusInternalError, Count: 2})
	if err := qp.Close(); err == nil || !strings.Contains(err.Error(), "stay taken until the controller is reset or closed") {
		t.Errorf("Close with a failing Delete and a failing reset: %v, want that the pair stays held", err)
	}
	if n := mem.Mapped(); n != before {
		t.Errorf("%d DMA buffers mapped after the pair went, %d before: its rings were freed while the controller may use them", n, before)
	}
	c.Close()
	if n := mem.Mapped(); n != 0 {
		t.Errorf("%d DMA buffers still mapped after Close", n)
	}
}

// An admin queue whose every slot went to commands that timed out recovers
// once the controller answers them late: the next command reaps those
// answers and takes a slot, without a reset.
func TestFullAdminQueueRecoversOnLateCompletions(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{}, &Options{AdminDepth: 2, AdminTimeout: 100 * time.Millisecond})
	ctx := context.Background()
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpGetFeatures), Hold: true, Count: 1})
	if _, err := c.GetFeatures(ctx, FeatureNumberOfQueues, 0, 0); !errors.Is(err, ErrTimeout) {
		t.Fatalf("held Get Features: %v, want ErrTimeout", err)
	}
	if _, err := c.GetFeatures(ctx, FeatureNumberOfQueues, 0, 0); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("admin command with the one slot lost: %v, want ErrQueueFull", err)
	}
	m.ReleaseHeld()
	if _, err := c.GetFeatures(ctx, FeatureNumberOfQueues, 0, 0); err != nil {
		t.Errorf("admin command after the lost one was answered: %v", err)
	}
	if n := c.Counters().Resets; n != 0 {
		t.Errorf("%d resets, want none", n)
	}
}

// An Identify that timed out may still be answered, and its data written
// into the page it named: the next Identify gets a fresh page, and the old
// one is freed once a reset ends any late write.
func TestAdminTimeoutRetiresDataPage(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}, {Blocks: 1000}}},
		&Options{AdminTimeout: 100 * time.Millisecond})
	mem := m.DMA().(*nvmetest.Memory)
	var mu sync.Mutex
	var pages []uint64 // PRP1 of every Identify Namespace, in order
	m.Inject(&nvmetest.Fault{Match: func(cmd *nvmetest.Command) bool {
		if cmd.SQID == 0 && cmd.Opcode == nvmetest.OpIdentify && uint8(cmd.CDW10) == 0 {
			mu.Lock()
			pages = append(pages, cmd.PRP1)
			mu.Unlock()
		}
		return false // only records
	}})
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchIdentify(0), Hold: true, Count: 1})
	ctx := context.Background()
	before := mem.Mapped()
	if _, err := c.IdentifyNamespace(ctx, 1); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Identify held past AdminTimeout: %v, want ErrTimeout", err)
	}
	id, err := c.IdentifyNamespace(ctx, 2)
	if err != nil || id.NSZE != 1000 {
		t.Fatalf("Identify Namespace 2 after the timeout: %v, %v; want NSZE 1000", id, err)
	}
	mu.Lock()
	if len(pages) != 2 || pages[0] == pages[1] {
		t.Errorf("Identify data pages %#x: want the timed-out one not reused", pages)
	}
	mu.Unlock()
	if n := mem.Mapped(); n != before+1 {
		t.Errorf("%d DMA buffers mapped, %d before: want the old page kept and one new", n, before)
	}
	if m.ReleaseHeld() != 1 { // the late answer lands in the old page
		t.Fatal("the timed-out Identify was not held by the model")
	}
	if id, err := c.IdentifyNamespace(ctx, 2); err != nil || id.NSZE != 1000 {
		t.Fatalf("Identify Namespace 2 after the late answer: %v, %v", id, err)
	}
	if err := c.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if n := mem.Mapped(); n != before {
		t.Errorf("%d DMA buffers mapped after the reset, want %d: the old page was not freed", n, before)
	}
}

// A synchronous read that timed out is abandoned on its pair, which is then
// retired; when the controller fails the pair's Delete I/O SQ, the read's
// bounce buffer must not go to the next caller while the controller may
// still write into it. nvmepoll resets the controller (dropping the read)
// before the buffer is reused.
func TestAbandonedBounceBufferNotReusedWhileQueueLives(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}}},
		&Options{SyncQueues: 1, AdminTimeout: 200 * time.Millisecond, IOTimeout: time.Minute})
	ns, _ := c.Namespace(1)
	ctx := context.Background()
	pattern := bytes.Repeat([]byte("LATE"), 128)
	if err := ns.WriteBlocks(ctx, 0, pattern); err != nil {
		t.Fatal(err)
	}
	readPRP := recordReadPRP(m)
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Hold: true, Count: 1})
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpAbort), Status: nvmetest.StatusInternalError})
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpDeleteSQ), Hold: true, Count: 1})
	rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	err := ns.ReadBlocks(rctx, 0, make([]byte, 512)) // abandoned; its pair is retired
	cancel()
	if !errors.Is(err, ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("held read: %v", err)
	}
	if n := c.Counters().Resets; n != 1 {
		t.Errorf("%d resets after the retired pair's Delete failed, want 1", n)
	}
	var bufs []dma.Buffer
	for {
		b, err := c.syncPool.Get()
		if err != nil {
			break
		}
		bufs = append(bufs, b)
	}
	prp := readPRP()
	if prp == 0 {
		t.Fatal("the model saw no read")
	}
	for _, b := range bufs {
		if b.IOVA == prp {
			clear(b.Bytes[:512])
			m.ReleaseHeld() // the controller finally runs the read
			time.Sleep(50 * time.Millisecond)
			if bytes.Equal(b.Bytes[:512], pattern) {
				t.Errorf("the late read landed in bounce buffer %#x, which the pool had handed out again", prp)
			}
		}
	}
	for _, b := range bufs {
		c.syncPool.Put(b)
	}
	m.ReleaseHeld()
}

// A Create I/O CQ that never reached the controller (the admin queue's one
// slot is lost to a timed-out command) leaves no queue behind: no reset,
// the pair's memory freed at once, and its queue id free for the next pair.
func TestUnsentCreateIsNotHeld(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{MaxQueuePairs: 1}, &Options{AdminDepth: 2, AdminTimeout: 100 * time.Millisecond})
	mem := m.DMA().(*nvmetest.Memory)
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpGetFeatures), Hold: true, Count: 1})
	if _, err := c.GetFeatures(context.Background(), FeatureNumberOfQueues, 0, 0); !errors.Is(err, ErrTimeout) {
		t.Fatalf("held Get Features: %v, want ErrTimeout", err)
	}
	before := mem.Mapped()
	if _, err := c.NewQueuePair(16); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("NewQueuePair with the admin queue full: %v, want ErrQueueFull", err)
	}
	if n := mem.Mapped(); n != before {
		t.Errorf("%d DMA buffers mapped after the failed NewQueuePair, %d before: a queue never created is held", n, before)
	}
	if n := c.Counters().Resets; n != 0 {
		t.Errorf("%d resets for a Create the controller never received, want none", n)
	}
	m.ReleaseHeld()
	qp, err := c.NewQueuePair(16)
	if err != nil {
		t.Fatalf("NewQueuePair once the admin slot is back: %v", err)
	}
	qp.Close()
}

// A Create I/O CQ that times out while another goroutine finds the
// controller failed (here: the failure lands as the controller fetches the
// Create) leaves the CQ possibly made: the failure moved the generation but
// disabled nothing, so the pair's memory stays held, not freed for the
// controller to write into.
func TestCreateTimeoutDuringFailureIsHeld(t *testing.T) {
	c, m, mem := openUnmanaged(t, nvmetest.Config{})
	m.Inject(&nvmetest.Fault{Match: func(cmd *nvmetest.Command) bool {
		if cmd.SQID != 0 || cmd.Opcode != nvmetest.OpCreateCQ {
			return false
		}
		c.fail(fmt.Errorf("test: another pair found the controller failed: %w", ErrControllerFatal))
		return true
	}, Drop: true, Count: 1})
	before := mem.Mapped()
	_, err := c.NewQueuePair(16)
	if err == nil || !strings.Contains(err.Error(), "stay taken until the controller is reset or closed") {
		t.Errorf("NewQueuePair whose Create CQ timed out on a failed controller: %v, want that its memory stays held", err)
	}
	if _, ok := m.CompletionQueue(1); !ok {
		t.Fatal("the model has no CQ 1: the dropped Create did not run")
	}
	if n := mem.Mapped(); n <= before {
		t.Errorf("%d DMA buffers mapped after the failed NewQueuePair, %d before: the rings of a CQ the controller made were freed", n, before)
	}
	c.Close()
	if n := mem.Mapped(); n != 0 {
		t.Errorf("%d DMA buffers still mapped after Close", n)
	}
}
