package nvme

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
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
				m, err := nvmetest.New(nvmetest.Config{ShadowDoorbells: i%2 == 0})
				if err != nil {
					t.Fatal(err)
				}
				mem := m.DMA().(*nvmetest.Memory)
				c, err := Open(m, &Options{AdminTimeout: 200 * time.Millisecond, ShutdownTimeout: 200 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
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
// answers, may still be in use by the controller: its rings stay mapped
// and its queue id taken (a new pair there would get the controller's
// completions for the old one) until a reset or Close frees them.
func TestUndeletedQueueIsHeld(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func() *nvmetest.Fault
		// make leaves behind a pair the controller may hold.
		make func(t *testing.T, c *Controller)
	}{
		{"delete fails", func() *nvmetest.Fault {
			return &nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpDeleteSQ), Status: nvmetest.StatusInternalError, Count: 1}
		},
			func(t *testing.T, c *Controller) {
				qp, err := c.NewQueuePair(16)
				if err != nil {
					t.Fatal(err)
				}
				if err := qp.Close(); err == nil || !strings.Contains(err.Error(), "stay taken until the controller is reset") {
					t.Errorf("Close with a failing Delete I/O SQ: %v, want the error and that the pair stays held", err)
				}
			}},
		{"create unanswered", func() *nvmetest.Fault {
			return &nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpCreateCQ), Drop: true, Count: 1}
		},
			func(t *testing.T, c *Controller) {
				if _, err := c.NewQueuePair(16); !errors.Is(err, ErrTimeout) {
					t.Errorf("NewQueuePair with Create I/O CQ unanswered: %v, want ErrTimeout", err)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, reset := range []bool{true, false} {
				m, err := nvmetest.New(nvmetest.Config{MaxQueuePairs: 1})
				if err != nil {
					t.Fatal(err)
				}
				mem := m.DMA().(*nvmetest.Memory)
				c, err := Open(m, &Options{AdminTimeout: 200 * time.Millisecond, ShutdownTimeout: 200 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				before := mem.Mapped()
				m.Inject(tc.fault())
				tc.make(t, c)
				if n := mem.Mapped(); n <= before {
					t.Errorf("%d DMA buffers mapped after the pair went, %d before it: its rings were freed while the controller may use them", n, before)
				}
				if _, err := c.NewQueuePair(16); !errors.Is(err, ErrQueueFull) || !strings.Contains(err.Error(), "1 of them by queues it did not delete") {
					t.Errorf("NewQueuePair on the held queue id: %v, want ErrQueueFull saying why", err)
				}
				if reset {
					if err := c.Reset(context.Background()); err != nil {
						t.Fatal(err)
					}
					if n := mem.Mapped(); n != before {
						t.Errorf("%d DMA buffers mapped after the reset, want %d: the held rings were not freed", n, before)
					}
					qp, err := c.NewQueuePair(16)
					if err != nil {
						t.Fatalf("NewQueuePair after the reset freed the queue id: %v", err)
					}
					if err := qp.Close(); err != nil {
						t.Fatal(err)
					}
				}
				c.Close()
				if n := mem.Mapped(); n != 0 {
					t.Errorf("reset %v: %d DMA buffers still mapped after Close", reset, n)
				}
			}
		})
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
