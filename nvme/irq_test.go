package nvme

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nvmepoll/nvmepoll/iopoll"
	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
)

// Every mode moves the same data; the CQ has interrupts on exactly when the
// mode blocks, and interrupt mode is woken by them.
func TestCompletionModes(t *testing.T) {
	for _, mode := range []CompletionMode{ModePoll, ModeInterrupt, ModeAdaptive, ModeDefault} {
		t.Run(mode.String(), func(t *testing.T) {
			c, m := openModel(t, nvmetest.Config{}, nil)
			ns, err := c.Namespace(1)
			if err != nil {
				t.Fatal(err)
			}
			qp, err := c.NewQueuePairWith(QueueOptions{Depth: 16, Mode: mode})
			if err != nil {
				t.Fatal(err)
			}
			defer qp.Close()
			want := map[CompletionMode]iopoll.Mode{ModePoll: iopoll.ModePoll, ModeInterrupt: iopoll.ModeInterrupt,
				ModeAdaptive: iopoll.ModeAdaptive, ModeDefault: iopoll.ModeAdaptive}[mode]
			if got := qp.WaitStats().Mode; got != want {
				t.Errorf("WaitStats().Mode = %v, want %v", got, want)
			}
			info, ok := m.CompletionQueue(qp.ID())
			if !ok || info.IRQ != (want != iopoll.ModePoll) || info.IRQ && int(info.IRQVec) != int(qp.ID()) {
				t.Errorf("CQ %d: %+v, want interrupts %v on vector %d", qp.ID(), info, want != iopoll.ModePoll, qp.ID())
			}

			pool, err := c.NewPool(8, 4096)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			// Reads are held 2 ms by the model, long enough for the
			// blocking modes to go to sleep before each completes.
			m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Delay: 2 * time.Millisecond})
			var reqs [8]Request
			delivered := 0
			for i := range reqs {
				buf, err := pool.Get()
				if err != nil {
					t.Fatal(err)
				}
				for j := range buf.Bytes {
					buf.Bytes[j] = byte(i*7 + j)
				}
				reqs[i] = Request{Opcode: NVMWrite, Namespace: ns, LBA: uint64(i * 8), Buf: buf, Done: func(*Request) { delivered++ }}
				if err := qp.Submit(&reqs[i]); err != nil {
					t.Fatal(err)
				}
			}
			waitAll(t, qp, &delivered, len(reqs))
			for i := range reqs {
				if reqs[i].Err != nil {
					t.Fatalf("write %d: %v", i, reqs[i].Err)
				}
				clear(reqs[i].Buf.Bytes)
				reqs[i].Opcode = NVMRead
			}
			delivered = 0
			for i := range reqs {
				if err := qp.Submit(&reqs[i]); err != nil {
					t.Fatal(err)
				}
				// min 1, max 1: one at a time, each after a sleep.
				if n, err := qp.Poll(1, 1); n != 1 || err != nil {
					t.Fatalf("Poll(1, 1) = %d, %v", n, err)
				}
			}
			for i := range reqs {
				if reqs[i].Err != nil {
					t.Fatalf("read %d: %v", i, reqs[i].Err)
				}
				for j, b := range reqs[i].Buf.Bytes {
					if b != byte(i*7+j) {
						t.Fatalf("read %d byte %d = %#x, want %#x", i, j, b, byte(i*7+j))
					}
				}
			}
			st := qp.WaitStats()
			switch want {
			case iopoll.ModePoll:
				if st.Blocks != 0 || qp.Interrupts() != 0 {
					t.Errorf("poll mode blocked or took interrupts: %+v, %d interrupts", st, qp.Interrupts())
				}
			case iopoll.ModeInterrupt:
				if st.Wakeups < uint64(len(reqs)) || qp.Interrupts() < uint64(len(reqs)) || st.Timeouts != 0 {
					t.Errorf("interrupt mode: %+v, %d interrupts; want a wake-up per 2 ms read and no timeouts", st, qp.Interrupts())
				}
			case iopoll.ModeAdaptive:
				// 2 ms is far past the window: it blocked and shrank.
				if st.Wakeups == 0 || st.Shrinks == 0 || st.Window >= iopoll.DefaultWindowStart {
					t.Errorf("adaptive mode after 2 ms reads: %+v, want wake-ups and a shrunk window", st)
				}
			}
			if err := qp.Close(); err != nil {
				t.Fatal(err)
			}
			// Closing gave the vector back.
			irq, err := m.Interrupt(int(qp.ID()))
			if err != nil {
				t.Errorf("vector %d still taken after Close: %v", qp.ID(), err)
			} else {
				irq.(interface{ Close() error }).Close()
			}
		})
	}
}

// An adaptive pair keeps its MSI-X vector masked while it polls, so a
// steady stream of fast completions, each found inside the poll window,
// raises (almost) no interrupts: the controller only sets the pending bit.
// Without the mask every completion would interrupt the CPU that is
// already spinning for it.
func TestAdaptiveMasksVectorWhilePolling(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{}, nil)
	ns, _ := c.Namespace(1)
	qp, err := c.NewQueuePairWith(QueueOptions{Depth: 16, Mode: ModeAdaptive})
	if err != nil {
		t.Fatal(err)
	}
	defer qp.Close()
	pool, err := c.NewPool(1, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	buf, _ := pool.Get()
	before := m.Stats()
	const ios = 200
	for i := range ios {
		r := Request{Opcode: NVMRead, Namespace: ns, LBA: uint64(i), Blocks: 1, Buf: buf.Slice(0, 512)}
		if err := qp.Submit(&r); err != nil {
			t.Fatal(err)
		}
		if n, err := qp.Poll(1, 1); n != 1 || err != nil || r.Err != nil {
			t.Fatalf("read %d: Poll = %d, %v; %v", i, n, err, r.Err)
		}
	}
	// The model completes on another goroutine, sometimes after the
	// window: then the pair unmasks (and may block). Each unmasked spell
	// may see two interrupts (one held from a completion polling found
	// earlier, sent on unmask and consumed by Clear; the one completion in
	// flight); a completion found while spinning, masked, sends none.
	st, ws := m.Stats(), qp.WaitStats()
	sent, held, unmasks := st.Interrupts-before.Interrupts, st.HeldInterrupts-before.HeldInterrupts, st.Unmasks-before.Unmasks
	if held == 0 || sent > 2*unmasks {
		t.Errorf("%d reads, %d unmasks, %d blocking waits: %d interrupts sent, %d held by the mask; want none sent outside unmasked spells (%+v)",
			ios, unmasks, ws.Blocks, sent, held, ws)
	}
}

// pollOnly hides the model's Interrupt method: a Device without MSI-X.
type pollOnly struct{ Device }

func TestModeWithoutInterrupts(t *testing.T) {
	m := nvmetest.NewController(t, nvmetest.Config{})
	c, err := Open(pollOnly{m}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	qp, err := c.NewQueuePair(4)
	if err != nil {
		t.Fatal(err)
	}
	if got := qp.WaitStats().Mode; got != iopoll.ModePoll {
		t.Errorf("default mode on a device without interrupts = %v, want poll", got)
	}
	if info, _ := m.CompletionQueue(qp.ID()); info.IRQ {
		t.Errorf("CQ %d created with interrupts on a device that cannot deliver them", qp.ID())
	}
	qp.Close()
	for _, mode := range []CompletionMode{ModeInterrupt, ModeAdaptive} {
		if _, err := c.NewQueuePairWith(QueueOptions{Depth: 4, Mode: mode}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%v mode without interrupts: err = %v, want ErrInvalidArgument", mode, err)
		}
	}
	// The failed attempts leaked no queue id: a pair can still be made.
	qp, err = c.NewQueuePairWith(QueueOptions{Depth: 4, Mode: ModePoll})
	if err != nil {
		t.Fatalf("after refused modes: %v", err)
	}
	qp.Close()
}

// The synchronous API rides on default-mode pairs: it must work (and not
// hang) with interrupts on the asynchronous model.
func TestSyncAPIAdaptive(t *testing.T) {
	c, _ := openModel(t, nvmetest.Config{}, nil)
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("adaptive"), 512)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 50 {
		if _, err := ns.WriteAt(want, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(want))
		if _, err := ns.ReadAt(got, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("round %d: read back different data", i)
		}
		if ctx.Err() != nil {
			t.Fatal("50 synchronous round trips took over 10 s")
		}
	}
}

func TestParseCompletionMode(t *testing.T) {
	for _, m := range []CompletionMode{ModePoll, ModeInterrupt, ModeAdaptive} {
		if got, err := ParseCompletionMode(m.String()); got != m || err != nil {
			t.Errorf("ParseCompletionMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseCompletionMode("busy"); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf(`ParseCompletionMode("busy") = %v, want ErrInvalidArgument`, err)
	}
}

// A controller reset re-creates every queue pair's CQ; one made to interrupt
// must interrupt again, or a blocking pair sleeps through its completions
// until each wait times out.
func TestResetKeepsInterrupts(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{}, nil)
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	qp, err := c.NewQueuePairWith(QueueOptions{Depth: 8, Mode: ModeInterrupt})
	if err != nil {
		t.Fatal(err)
	}
	defer qp.Close()
	if err := c.Reset(context.Background()); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	pool, err := c.NewPool(1, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	buf, err := pool.Get()
	if err != nil {
		t.Fatal(err)
	}
	done := false
	req := Request{Opcode: NVMRead, Namespace: ns, LBA: 0, Buf: buf, Done: func(*Request) { done = true }}
	// Recovery is lazy: the pair re-creates its queues on its next Submit.
	if err := qp.Submit(&req); err != nil {
		t.Fatal(err)
	}
	info, ok := m.CompletionQueue(qp.ID())
	if !ok || !info.IRQ || int(info.IRQVec) != int(qp.ID()) {
		t.Fatalf("CQ %d after Reset: %+v, want interrupts on vector %d", qp.ID(), info, qp.ID())
	}
	if _, err := qp.Poll(1, 1); err != nil || !done || req.Err != nil {
		t.Fatalf("read after Reset: Poll err %v, done %v, request err %v", err, done, req.Err)
	}
	if st := qp.WaitStats(); st.Timeouts != 0 {
		t.Errorf("WaitStats after Reset: %+v: a wait ran out, so the re-created CQ did not interrupt", st)
	}
}
