package nvme

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nvmepoll/nvmepoll/iopoll"
	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
	"github.com/nvmepoll/nvmepoll/queue"
	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// asyncSetup opens a model, namespace 1, one queue pair and a pool.
func asyncSetup(t testing.TB, cfg nvmetest.Config, opts *Options, depth int) (*Controller, *nvmetest.Controller, *Namespace, *QueuePair, *Pool) {
	t.Helper()
	c, m := openModel(t, cfg, opts)
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	qp, err := c.NewQueuePair(depth)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := c.NewPool(depth, 128<<10)
	if err != nil {
		t.Fatal(err)
	}
	return c, m, ns, qp, pool
}

// wait polls qp until every request in reqs has been delivered, or fails.
func waitAll(t *testing.T, qp *QueuePair, delivered *int, want int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for *delivered < want {
		if _, err := qp.PollContext(ctx, 1, 32); err != nil {
			t.Fatalf("Poll after %d of %d completions: %v", *delivered, want, err)
		}
	}
}

func TestAsyncWriteRead(t *testing.T) {
	_, m, ns, qp, pool := asyncSetup(t, nvmetest.Config{}, nil, 32)
	delivered := 0
	done := func(r *Request) {
		delivered++
		if r.Err != nil {
			t.Errorf("request %d: %v", r.Tag, r.Err)
		}
	}
	// 16 writes of 8 KiB, then read each back into another buffer.
	var writes, reads [16]Request
	for i := range writes {
		b, err := pool.Get()
		if err != nil {
			t.Fatal(err)
		}
		b = b.Slice(0, 8192)
		for j := range b.Bytes {
			b.Bytes[j] = byte(i*7 + j)
		}
		writes[i] = Request{Opcode: NVMWrite, Namespace: ns, LBA: uint64(i * 64), Buf: b, Done: done, Tag: uint64(i)}
		if err := qp.Submit(&writes[i]); err != nil {
			t.Fatal(err)
		}
	}
	waitAll(t, qp, &delivered, 16)
	delivered = 0
	for i := range reads {
		b, err := pool.Get()
		if err != nil {
			t.Fatal(err)
		}
		reads[i] = Request{Opcode: NVMRead, Namespace: ns, LBA: uint64(i * 64), Blocks: 16, Buf: b, Done: done, Tag: uint64(i)}
	}
	ptrs := make([]*Request, len(reads))
	for i := range reads {
		ptrs[i] = &reads[i]
	}
	if n, err := qp.SubmitBatch(ptrs); n != 16 || err != nil {
		t.Fatalf("SubmitBatch: %d, %v", n, err)
	}
	waitAll(t, qp, &delivered, 16)
	for i := range reads {
		if !bytes.Equal(reads[i].Buf.Bytes[:8192], writes[i].Buf.Bytes) {
			t.Errorf("request %d: read back differs", i)
		}
	}
	if s := qp.Stats(); s.Bad() != 0 || s.Posted != 32 || s.Completed != 32 {
		t.Errorf("queue stats %+v: want 32 posted and completed, 0 bad", s)
	}
	if st := m.Stats(); st.Errors != 0 {
		t.Errorf("model saw %d errors", st.Errors)
	}
}

// TestPRPShapes moves data whose PRPs take every shape through the model,
// which walks PRP lists like hardware: single page, two pages, a list, a
// first buffer that does not start on a page boundary, and (with no MDTS
// limit and 4 MiB transfers) list pages chained by their last entry.
func TestPRPShapes(t *testing.T) {
	_, m, ns, qp, _ := asyncSetup(t, nvmetest.Config{MDTS: -1, Namespaces: []nvmetest.NamespaceConfig{{Blocks: 1 << 16}}},
		&Options{MaxTransfer: 8 << 20}, 8)
	big, err := ns.c.NewPool(2, 8<<20+4096)
	if err != nil {
		t.Fatal(err)
	}
	wbuf, _ := big.Get()
	rbuf, _ := big.Get()
	cases := []struct {
		name     string
		off, len int
	}{
		{"single page", 0, 4096},
		{"one sector", 0, 512},
		{"two pages", 0, 8192},
		{"list", 0, 64 << 10},
		{"unaligned first buffer, two pages", 512, 4096},
		{"unaligned first buffer, list", 3584, 40 << 10},
		{"full list page", 0, 2 << 20},
		{"chained list pages", 0, 4 << 20},
		{"chained, unaligned first buffer", 1024, 8 << 20},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i, tc := range cases {
		lba := uint64(i * 17000 % (1<<16 - 16384))
		w := wbuf.Slice(tc.off, tc.len)
		for j := range w.Bytes {
			w.Bytes[j] = byte(rng.Uint32())
		}
		r := rbuf.Slice(tc.off, tc.len)
		clear(r.Bytes)
		for _, req := range []*Request{
			{Opcode: NVMWrite, Namespace: ns, LBA: lba, Buf: w},
			{Opcode: NVMRead, Namespace: ns, LBA: lba, Buf: r},
		} {
			if err := qp.exec(context.Background(), req); err != nil {
				t.Fatalf("%s: %v %d bytes: %v", tc.name, req.Opcode, tc.len, err)
			}
		}
		if !bytes.Equal(w.Bytes, r.Bytes) {
			t.Errorf("%s: read back differs", tc.name)
		}
	}
	if n := m.DMAFaults(); n != 0 {
		t.Errorf("%d DMA faults: a PRP pointed outside the buffers", n)
	}
}

func TestQueueFull(t *testing.T) {
	_, m, ns, qp, pool := asyncSetup(t, nvmetest.Config{}, nil, 4)
	hold := m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Hold: true})
	delivered := 0
	reqs := make([]Request, 4)
	for i := range reqs {
		b, _ := pool.Get()
		reqs[i] = Request{Opcode: NVMRead, Namespace: ns, LBA: 0, Blocks: 1, Buf: b, Done: func(*Request) { delivered++ }}
	}
	for i := range 3 {
		if err := qp.Submit(&reqs[i]); err != nil {
			t.Fatalf("submit %d of 3 slots: %v", i, err)
		}
	}
	err := qp.Submit(&reqs[3])
	if !errors.Is(err, ErrQueueFull) || !Retryable(err) {
		t.Fatalf("submit into a full queue: %v, want retryable ErrQueueFull", err)
	}
	if n, _ := qp.Poll(0, 8); n != 0 || delivered != 0 {
		t.Fatalf("a rejected submit produced %d completions", n)
	}
	m.Remove(hold)
	m.ReleaseHeld()
	waitAll(t, qp, &delivered, 3)
	if err := qp.Submit(&reqs[3]); err != nil {
		t.Fatalf("submit after the queue drained: %v", err)
	}
	waitAll(t, qp, &delivered, 4)
}

func TestCloseDrains(t *testing.T) {
	c, m, ns, qp, pool := asyncSetup(t, nvmetest.Config{}, nil, 16)
	m.Inject(&nvmetest.Fault{Delay: 30 * time.Millisecond})
	var errs []error
	reqs := make([]Request, 8)
	for i := range reqs {
		b, _ := pool.Get()
		reqs[i] = Request{Opcode: NVMWrite, Namespace: ns, LBA: uint64(i), Blocks: 1, Buf: b, Done: func(r *Request) { errs = append(errs, r.Err) }}
		if err := qp.Submit(&reqs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := qp.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if len(errs) != 8 {
		t.Fatalf("Close delivered %d of 8 requests in flight", len(errs))
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("request %d: %v", i, err)
		}
	}
	if _, ok := m.SubmissionQueue(qp.ID()); ok {
		t.Error("SQ still exists on the controller after Close")
	}
	if _, ok := m.CompletionQueue(qp.ID()); ok {
		t.Error("CQ still exists on the controller after Close")
	}
	if err := qp.Submit(&reqs[0]); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Close: %v, want ErrClosed", err)
	}
	if err := qp.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// The queue id is free again.
	qp2, err := c.NewQueuePair(8)
	if err != nil {
		t.Fatal(err)
	}
	if qp2.ID() != qp.ID() {
		t.Errorf("new queue pair got id %d, want the freed %d", qp2.ID(), qp.ID())
	}
}

// TestFaults drives each misbehaviour of the model through the synchronous
// API and checks that it ends in a named error, without a panic, and that
// the queue keeps working (no slot leaked).
func TestFaults(t *testing.T) {
	opts := &Options{IOTimeout: 300 * time.Millisecond, AbortTimeout: 300 * time.Millisecond}
	ctx := context.Background()
	check := func(t *testing.T, ns *Namespace) {
		t.Helper()
		// Every later command still works: no slot or buffer leaked.
		for i := range 20 {
			if err := ns.ReadBlocks(ctx, uint64(i), make([]byte, 512)); err != nil {
				t.Fatalf("read %d after the fault: %v", i, err)
			}
		}
		if p := ns.c.syncPool; p.Available() != p.Len() {
			t.Errorf("%d of %d bounce buffers back in the pool", p.Available(), p.Len())
		}
	}

	t.Run("error status at LBA", func(t *testing.T) {
		c, m := openModel(t, nvmetest.Config{}, opts)
		ns, _ := c.Namespace(1)
		m.FailLBA(1, 100, 8, nvmetest.OpRead, nvmetest.StatusUnrecoveredRead|nvmetest.StatusDNR)
		// Reads before it reuse its slot, so its command id carries a
		// generation: the error must name the id in the error log.
		for range 3 {
			if err := ns.ReadBlocks(ctx, 0, make([]byte, 512)); err != nil {
				t.Fatal(err)
			}
		}
		err := ns.ReadBlocks(ctx, 96, make([]byte, 16*512))
		var se *StatusError
		if !errors.Is(err, ErrUnrecoveredRead) || !errors.As(err, &se) {
			t.Fatalf("err = %v, want a *StatusError matching ErrUnrecoveredRead", err)
		}
		if se.LBA != 96 || !se.HasLBA || se.NSID != 1 || !se.DNR || se.Opcode != uint8(NVMRead) {
			t.Errorf("StatusError %+v: want lba 96, nsid 1, DNR, Read", se)
		}
		if !strings.Contains(err.Error(), "Unrecovered Read Error") || !strings.Contains(err.Error(), "lba 96") {
			t.Errorf("message %q does not say what the device said", err)
		}
		// A read beside the bad range works.
		if err := ns.ReadBlocks(ctx, 200, make([]byte, 512)); err != nil {
			t.Errorf("read elsewhere: %v", err)
		}
		log, err := c.ErrorLog(ctx, 4)
		if err != nil {
			t.Fatal(err)
		}
		if len(log) == 0 || log[0].LBA != 96 || log[0].Status.SC() != 0x81 {
			t.Fatalf("error log %v: want the failed read at lba 96", log)
		}
		if log[0].CID != se.CID || log[0].CID == 0 || !strings.Contains(se.Error(), fmt.Sprintf("cid %d", log[0].CID)) {
			t.Errorf("error names cid %d (%q), the controller's error log cid %d: want the same, non-zero after reuse", se.CID, se, log[0].CID)
		}
	})

	t.Run("delayed completion", func(t *testing.T) {
		c, m := openModel(t, nvmetest.Config{}, opts)
		ns, _ := c.Namespace(1)
		m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Delay: 100 * time.Millisecond, Count: 1})
		start := time.Now()
		if err := ns.ReadBlocks(ctx, 0, make([]byte, 512)); err != nil {
			t.Fatalf("delayed read: %v", err)
		}
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Errorf("delayed read returned after %v, before the controller answered", d)
		}
		check(t, ns)
	})

	// Faults after which the command never completes visibly: each must
	// turn into a timeout, not a hang.
	for _, tc := range []struct {
		name string
		f    func() *nvmetest.Fault
		bad  bool // the queue sees a bad completion entry
	}{
		{"dropped completion", func() *nvmetest.Fault { return &nvmetest.Fault{Drop: true} }, false},
		{"unknown cid", func() *nvmetest.Fault { return &nvmetest.Fault{UnknownCID: true} }, true},
		{"bad SQ head", func() *nvmetest.Fault { return &nvmetest.Fault{BadSQHead: true} }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, m := openModel(t, nvmetest.Config{}, &Options{IOTimeout: 300 * time.Millisecond, AbortTimeout: 300 * time.Millisecond, SyncQueues: 1})
			ns, _ := c.Namespace(1)
			f := tc.f()
			f.Match, f.Count = nvmetest.MatchOpcode(false, nvmetest.OpRead), 1
			m.Inject(f)
			start := time.Now()
			err := ns.ReadBlocks(ctx, 0, make([]byte, 512))
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("err = %v, want ErrTimeout", err)
			}
			if d := time.Since(start); d > 3*time.Second || d < 300*time.Millisecond {
				t.Errorf("took %v to time out, want IOTimeout (300ms) or a little more", d)
			}
			if tc.bad && !strings.Contains(err.Error(), "bad completion") {
				t.Errorf("error %q does not mention the bad completion entry", err)
			}
			check(t, ns)
		})
	}

	t.Run("duplicate completion", func(t *testing.T) {
		_, m, ns, qp, pool := asyncSetup(t, nvmetest.Config{}, opts, 8)
		m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpWrite), Duplicate: true, Count: 1})
		b, _ := pool.Get()
		delivered := 0
		r := Request{Opcode: NVMWrite, Namespace: ns, Blocks: 1, Buf: b, Done: func(*Request) { delivered++ }}
		if err := qp.Submit(&r); err != nil {
			t.Fatal(err)
		}
		waitAll(t, qp, &delivered, 1)
		r.Opcode = NVMRead
		if err := qp.Submit(&r); err != nil {
			t.Fatal(err)
		}
		waitAll(t, qp, &delivered, 2)
		if r.Err != nil || delivered != 2 {
			t.Errorf("after a duplicate CQE: %d deliveries, err %v; want 2, nil", delivered, r.Err)
		}
		if n := qp.Stats().BadCQEs[queue.IdleCID]; n != 1 {
			t.Errorf("duplicate CQEs counted: %d, want 1", n)
		}
	})

	// The duplicate is still in the ring when the slot is reused (Poll
	// stopped at its max after the first copy): it must not complete the
	// new command, which the controller has not even run yet.
	t.Run("duplicate completion after the slot is reused", func(t *testing.T) {
		_, m, ns, qp, pool := asyncSetup(t, nvmetest.Config{Inline: true}, opts, 8)
		m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpWrite), Duplicate: true, Count: 1})
		m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Hold: true, Count: 1})
		wb, _ := pool.Get()
		rb, _ := pool.Get()
		copy(wb.Bytes, "written before the duplicate")
		delivered := 0
		done := func(*Request) { delivered++ }
		w := Request{Opcode: NVMWrite, Namespace: ns, LBA: 40, Blocks: 1, Buf: wb, Done: done}
		if err := qp.Submit(&w); err != nil {
			t.Fatal(err)
		}
		if n, err := qp.Poll(1, 1); n != 1 || err != nil || w.Err != nil {
			t.Fatalf("Poll(1, 1) of the write: %d, %v (write: %v)", n, err, w.Err)
		}
		r := Request{Opcode: NVMRead, Namespace: ns, LBA: 40, Blocks: 1, Buf: rb, Done: done}
		if err := qp.Submit(&r); err != nil { // takes the write's slot
			t.Fatal(err)
		}
		if _, err := qp.Poll(0, 8); err != nil {
			t.Fatal(err)
		}
		if delivered != 1 {
			t.Fatalf("the write's duplicate CQE completed the held read (err %v, data %q)", r.Err, rb.Bytes[:28])
		}
		if n := qp.Stats().BadCQEs[queue.IdleCID]; n != 1 {
			t.Errorf("stale duplicate CQEs counted: %d, want 1", n)
		}
		m.ReleaseHeld()
		waitAll(t, qp, &delivered, 2)
		if r.Err != nil || string(rb.Bytes[:28]) != "written before the duplicate" {
			t.Errorf("released read: %v, data %q; want the written data", r.Err, rb.Bytes[:28])
		}
	})

	t.Run("wrong phase, synchronous", func(t *testing.T) {
		// The pair's head is stuck on the invisible entry; the
		// synchronous API retires that pair, so later calls work.
		c, m := openModel(t, nvmetest.Config{}, &Options{IOTimeout: 300 * time.Millisecond, AbortTimeout: 300 * time.Millisecond, SyncQueues: 1})
		ns, _ := c.Namespace(1)
		m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), WrongPhase: true, Count: 1})
		if err := ns.ReadBlocks(ctx, 0, make([]byte, 512)); !errors.Is(err, ErrTimeout) {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
		check(t, ns)
		if n := c.syncPool.Available(); n != c.syncPool.Len() {
			t.Errorf("%d of %d bounce buffers back in the pool", n, c.syncPool.Len())
		}
	})

	t.Run("wrong phase", func(t *testing.T) {
		// The entry is invisible, so the command times out. The queue's
		// head now sits on that entry for good: Close must still recover
		// every slot, failing the rest with ErrClosed.
		_, m, ns, qp, pool := asyncSetup(t, nvmetest.Config{}, opts, 8)
		m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), WrongPhase: true, Count: 1})
		b, _ := pool.Get()
		r := Request{Opcode: NVMRead, Namespace: ns, Blocks: 1, Buf: b}
		if err := qp.exec(ctx, &r); !errors.Is(err, ErrTimeout) {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
		if err := qp.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if qp.Inflight() != 0 {
			t.Errorf("%d requests still in flight after Close", qp.Inflight())
		}
	})

	t.Run("controller fatal", func(t *testing.T) {
		c, m := openModel(t, nvmetest.Config{}, opts)
		ns, _ := c.Namespace(1)
		m.SetFatal()
		err := ns.ReadBlocks(ctx, 0, make([]byte, 512))
		if !errors.Is(err, ErrControllerFatal) {
			t.Fatalf("err = %v, want ErrControllerFatal", err)
		}
		if _, err := c.IdentifyController(ctx); !errors.Is(err, ErrControllerFatal) {
			t.Errorf("admin command on a fatal controller: %v, want ErrControllerFatal", err)
		}
	})

	t.Run("device gone", func(t *testing.T) {
		c, m := openModel(t, nvmetest.Config{}, opts)
		ns, _ := c.Namespace(1)
		m.SetGone(true)
		err := ns.ReadBlocks(ctx, 0, make([]byte, 512))
		if !errors.Is(err, ErrDeviceGone) {
			t.Fatalf("err = %v, want ErrDeviceGone", err)
		}
		if err := c.Status(); !errors.Is(err, ErrDeviceGone) {
			t.Errorf("Status: %v, want ErrDeviceGone", err)
		}
	})

	t.Run("admin timeout", func(t *testing.T) {
		c, m := openModel(t, nvmetest.Config{}, &Options{AdminTimeout: 200 * time.Millisecond})
		m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpGetFeatures), Drop: true, Count: 1})
		_, err := c.GetFeatures(ctx, FeatureNumberOfQueues, 0, 0)
		if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "Get Features") {
			t.Fatalf("err = %v, want ErrTimeout naming Get Features", err)
		}
		// The admin queue still works.
		if _, err := c.GetFeatures(ctx, FeatureNumberOfQueues, 0, 0); err != nil {
			t.Fatalf("admin command after a lost one: %v", err)
		}
	})
}

// A duplicate admin completion left in the ring (the admin path returns
// as soon as it sees its own) must not answer the next admin command, which
// reuses the slot: an Identify would return whatever the admin buffer held
// before its data arrived.
func TestAdminDuplicateCompletion(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}, {Blocks: 1000}}}, nil)
	ctx := context.Background()
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(true, nvmetest.OpGetFeatures), Duplicate: true, Count: 1})
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchIdentify(0), Delay: 50 * time.Millisecond, Count: 1})
	if _, err := c.GetFeatures(ctx, FeatureNumberOfQueues, 0, 0); err != nil {
		t.Fatal(err)
	}
	id, err := c.IdentifyNamespace(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if id.NSZE != 1000 {
		t.Errorf("Identify Namespace 2 after a duplicate Get Features completion: NSZE %d, want 1000", id.NSZE)
	}
}

func TestAdminCommands(t *testing.T) {
	c, _ := openModel(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 4096}}}, nil)
	ctx := context.Background()
	smart, err := c.SMARTLog(ctx)
	if err != nil {
		t.Fatalf("SMART log: %v", err)
	}
	_ = smart
	dw0, err := c.GetFeatures(ctx, FeatureNumberOfQueues, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if sq, cq := ParseNumberOfQueues(dw0); sq != 16 || cq != 16 {
		t.Errorf("Get Features Number of Queues: %d/%d, want 16/16", sq, cq)
	}
	if err := c.SetVolatileWriteCache(ctx, true); err != nil {
		t.Errorf("enabling the write cache: %v", err)
	}
	ns, _ := c.Namespace(1)
	if err := ns.WriteBlocks(ctx, 0, bytes.Repeat([]byte{7}, 512)); err != nil {
		t.Fatal(err)
	}
	// Format to 4 KiB blocks: the namespace must be fetched again.
	if err := c.FormatNVM(ctx, 1, 1, SESNone); err != nil {
		t.Fatalf("Format NVM: %v", err)
	}
	ns, err = c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	if ns.BlockSize() != 4096 {
		t.Errorf("block size after formatting to LBAF 1: %d, want 4096", ns.BlockSize())
	}
	if err := c.FormatNVM(ctx, 1, 64, SESNone); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Format with lbaf 64: %v, want ErrInvalidArgument", err)
	}
	if _, err := c.IdentifyNamespace(ctx, 0); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Identify Namespace 0: %v, want ErrInvalidArgument", err)
	}
	if err := c.GetLogPage(ctx, LogSMART, 0, 0, make([]byte, 3)); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Get Log Page of 3 bytes: %v, want ErrInvalidArgument", err)
	}
	// A command the controller rejects comes back as a StatusError.
	_, err = c.AdminCommand(ctx, &queue.Command{Opcode: 0xc5})
	if !errors.Is(err, ErrInvalidOpcode) {
		t.Errorf("vendor opcode 0xc5: %v, want ErrInvalidOpcode", err)
	}
}

// A controller without LPA bit 2 takes no log page offsets: a read at an offset is
// refused before anything is sent (it would get the page's start again, labelled as the
// rest), and ErrorLog keeps to the entries one page holds.
func TestLogPageWithoutOffsets(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		lpa     uint8
		entries int // ErrorLogEntries
	}{
		{"extended data", 1 << 2, 256},
		{"no extended data", 0, PageSize / ErrorLogEntrySize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := nvmetest.NewController(t, nvmetest.Config{})
			m.Inject(&nvmetest.Fault{Match: nvmetest.MatchIdentify(1), Identify: func(b []byte) { b[261], b[262] = tc.lpa, 255 }})
			c, err := Open(m, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.ErrorLogEntries(); got != tc.entries {
				t.Errorf("ErrorLogEntries = %d, want %d (ELPE 255, LPA 0x%02x)", got, tc.entries, tc.lpa)
			}
			before := m.Stats().AdminCommands[AdminGetLogPage]
			err = c.GetLogPage(ctx, LogErrorInformation, 0, ErrorLogEntrySize, make([]byte, ErrorLogEntrySize))
			sent := m.Stats().AdminCommands[AdminGetLogPage] - before
			if tc.lpa == 0 {
				if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "LPA 0x00") || sent != 0 {
					t.Errorf("read at offset %d: %v, %d commands sent; want ErrNotSupported naming LPA and nothing sent", ErrorLogEntrySize, err, sent)
				}
			} else if err != nil || sent != 1 {
				t.Errorf("read at offset %d: %v, %d commands sent; want one command", ErrorLogEntrySize, err, sent)
			}
		})
	}
}

// BenchmarkSubmitReap measures the hot path: submit 4 KiB reads on one
// queue pair and reap them, against the model in inline mode (it completes
// a command inside the doorbell write and copies the data). The model
// allocates per command; see BenchmarkSubmitReapDriver for the driver alone.
func BenchmarkSubmitReap(b *testing.B) {
	for _, qd := range []int{1, 32} {
		b.Run(fmt.Sprintf("QD%d", qd), func(b *testing.B) {
			_, _, ns, qp, pool := asyncSetup(b, nvmetest.Config{Inline: true}, nil, 64)
			benchLoop(b, qp, ns, pool, qd)
		})
	}
}

// newEchoPair returns a queue pair on namespace 1 of a bare Controller whose
// "device" completes every command successfully inside the SQ doorbell
// write and moves no data: a zero-work completer, so a benchmark measures
// the driver alone.
func newEchoPair(tb testing.TB, depth int) (*QueuePair, *Namespace, *Pool) {
	a := &mmapAlloc{}
	c := &Controller{maxTransfer: 128 << 10, opts: (*Options)(nil).withDefaults(), namespaces: map[uint32]*Namespace{}, refreshTicks: iopoll.ProcessClock().Ticks(clockRefresh)}
	ns := &Namespace{c: c, id: 1, blockSize: 512, shift: 9, blocks: 1 << 30}
	sq, _ := a.Alloc(depth * queue.SQESize)
	cq, _ := a.Alloc(depth * queue.CQESize)
	var sqHead, cqTail uint32
	phase := true
	q := &QueuePair{c: c, id: 1, sq: sq, cq: cq, inflight: make([]*Request, depth-1)}
	q.listPages = prpListPages(PageSize-4, c.maxTransfer, PageSize)
	q.prp, _ = a.Alloc((depth - 1) * q.listPages * PageSize)
	sqdb := queue.DoorbellFunc(func(tail uint32) {
		for sqHead != tail {
			cmd := queue.ParseCommand(sq.Bytes[sqHead*queue.SQESize:])
			sqHead = (sqHead + 1) % uint32(depth)
			queue.PostCompletion(cq.Bytes[cqTail*queue.CQESize:], queue.Completion{CID: cmd.CID, SQID: 1, SQHead: uint16(sqHead)}, phase)
			if cqTail++; cqTail == uint32(depth) {
				cqTail, phase = 0, !phase
			}
		}
	})
	var err error
	q.pair, err = queue.New(queue.Config{ID: 1, Depth: depth, SQ: sq, CQ: cq, SQTail: sqdb, CQHead: queue.DoorbellFunc(func(uint32) {})})
	if err != nil {
		tb.Fatal(err)
	}
	q.ring = iopoll.New(q, q.deliver)
	pool, err := NewPool(a, depth, 4096)
	if err != nil {
		tb.Fatal(err)
	}
	return q, ns, pool
}

// BenchmarkSubmitReapDriver is BenchmarkSubmitReap against the zero-work
// completer: the driver's own cost per I/O, which must be 0 allocations.
func BenchmarkSubmitReapDriver(b *testing.B) {
	for _, qd := range []int{1, 32} {
		b.Run(fmt.Sprintf("QD%d", qd), func(b *testing.B) {
			qp, ns, pool := newEchoPair(b, 64)
			benchLoop(b, qp, ns, pool, qd)
		})
	}
}

func benchLoop(b *testing.B, qp *QueuePair, ns *Namespace, pool *Pool, qd int) {
	reqs := make([]Request, qd)
	again := make([]*Request, 0, qd)
	done := func(r *Request) {
		if r.Err != nil {
			b.Fatal(r.Err)
		}
		again = append(again, r)
	}
	for i := range reqs {
		buf, err := pool.Get()
		if err != nil {
			b.Fatal(err)
		}
		reqs[i] = Request{Opcode: NVMRead, Namespace: ns, LBA: uint64(i * 8), Blocks: 8, Buf: buf.Slice(0, 4096), Done: done}
		if err := qp.Submit(&reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.SetBytes(4096)
	for b.Loop() {
		if len(again) == 0 {
			if _, err := qp.Poll(1, qd); err != nil {
				b.Fatal(err)
			}
		}
		r := again[len(again)-1]
		again = again[:len(again)-1]
		if err := qp.Submit(r); err != nil {
			b.Fatal(err)
		}
	}
}

func TestHotPathAllocs(t *testing.T) {
	qp, ns, pool := newEchoPair(t, 64)
	buf, _ := pool.Get()
	delivered := 0
	r := &Request{Opcode: NVMRead, Namespace: ns, Blocks: 8, Buf: buf, Done: func(*Request) { delivered++ }}
	n := testing.AllocsPerRun(1000, func() {
		if err := qp.Submit(r); err != nil {
			t.Fatal(err)
		}
		if _, err := qp.Poll(1, 1); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Errorf("submit+reap of a 4 KiB read: %v allocations, want 0", n)
	}
	if delivered < 1000 {
		t.Errorf("%d completions delivered, want at least 1000", delivered)
	}
}

// TestSGL moves data described by SGL Data Block descriptors when the
// controller offers SGLs and Options.SGL asks for them, and falls back to
// PRPs when it does not.
func TestSGL(t *testing.T) {
	for _, offered := range []bool{true, false} {
		t.Run(fmt.Sprintf("offered=%t", offered), func(t *testing.T) {
			c, m, ns, qp, pool := asyncSetup(t, nvmetest.Config{SGL: offered}, &Options{SGL: true}, 8)
			if c.UsesSGL() != offered {
				t.Fatalf("UsesSGL = %t, want %t", c.UsesSGL(), offered)
			}
			wb, _ := pool.Get()
			rb, _ := pool.Get()
			for _, tc := range []struct{ off, n int }{{0, 512}, {0, 128 << 10}, {1024, 64 << 10}} {
				w, r := wb.Slice(tc.off, tc.n), rb.Slice(tc.off, tc.n)
				for i := range w.Bytes {
					w.Bytes[i] = byte(i*13 + tc.off)
				}
				clear(r.Bytes)
				for _, req := range []*Request{
					{Opcode: NVMWrite, Namespace: ns, LBA: 64, Buf: w},
					{Opcode: NVMRead, Namespace: ns, LBA: 64, Buf: r},
				} {
					if err := qp.exec(context.Background(), req); err != nil {
						t.Fatalf("%v %d bytes at offset %d: %v", req.Opcode, tc.n, tc.off, err)
					}
				}
				if !bytes.Equal(w.Bytes, r.Bytes) {
					t.Errorf("%d bytes at offset %d: read back differs", tc.n, tc.off)
				}
			}
			if m.DMAFaults() != 0 {
				t.Errorf("%d DMA faults", m.DMAFaults())
			}
			// Through the synchronous path too.
			data := bytes.Repeat([]byte{0x3c}, 300<<10)
			if err := ns.WriteBlocks(context.Background(), 1000, data); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(data))
			if err := ns.ReadBlocks(context.Background(), 1000, got); err != nil || !bytes.Equal(got, data) {
				t.Errorf("synchronous read-back: err %v, equal %t", err, bytes.Equal(got, data))
			}
		})
	}
}

// dsmRanges writes Dataset Management ranges into the start of buf, as a caller of Submit does.
func dsmRanges(buf dma.Buffer, rs ...BlockRange) dma.Buffer {
	for i, rg := range rs {
		e := buf.Bytes[i*16:]
		binary.LittleEndian.PutUint32(e[0:], 0)
		binary.LittleEndian.PutUint32(e[4:], rg.Blocks)
		binary.LittleEndian.PutUint64(e[8:], rg.LBA)
	}
	return buf
}

func TestSubmitBadInput(t *testing.T) {
	c, m, ns, qp, pool := asyncSetup(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}}}, nil, 8)
	buf, _ := pool.Get() // 128 KiB
	big, err := c.NewPool(1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	bigBuf, _ := big.Get()
	rangeBuf, _ := pool.Get()
	emptyRangeBuf, _ := pool.Get()
	cases := []struct {
		name string
		r    *Request
		want string
	}{
		{"no namespace", &Request{Opcode: NVMRead, Buf: buf}, "no namespace"},
		{"unsupported opcode", &Request{Opcode: NVMVerify, Namespace: ns, Buf: buf}, "not supported by Submit"},
		{"buffer too small", &Request{Opcode: NVMRead, Namespace: ns, Blocks: 512, Buf: buf}, "buffer of 131072 bytes is too small for 512 blocks"},
		{"past the end", &Request{Opcode: NVMWrite, Namespace: ns, LBA: 9000, Blocks: 8, Buf: buf}, "lba 9000+8 is past the end of namespace 1 (8192 blocks)"},
		{"above MDTS", &Request{Opcode: NVMRead, Namespace: ns, Buf: bigBuf}, "1048576 bytes in one command, the controller takes at most 524288"},
		{"zero length", &Request{Opcode: NVMRead, Namespace: ns}, "zero-length"},
		{"too many ranges", &Request{Opcode: NVMDatasetManagement, Namespace: ns, Blocks: 257, Buf: buf}, "257 ranges"},
		{"negative blocks", &Request{Opcode: NVMRead, Namespace: ns, LBA: 8, Blocks: -1, Buf: buf}, "Read of -1 blocks at lba 8"},
		{"range past the end", &Request{Opcode: NVMDatasetManagement, Namespace: ns, Blocks: 2, Buf: dsmRanges(rangeBuf, BlockRange{LBA: 0, Blocks: 8}, BlockRange{LBA: 8190, Blocks: 4})},
			"range 1: nvme: invalid argument: lba 8190+4 is past the end of namespace 1 (8192 blocks)"},
		{"empty range", &Request{Opcode: NVMDatasetManagement, Namespace: ns, Blocks: 1, Buf: dsmRanges(emptyRangeBuf, BlockRange{LBA: 5})}, "range 0: nvme: invalid argument: zero-length"},
		{"unaligned data", &Request{Opcode: NVMRead, Namespace: ns, Blocks: 1, Buf: buf.Slice(2, 512)}, "not dword aligned"},
	}
	for _, tc := range cases {
		err := qp.Submit(tc.r)
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want ErrInvalidArgument saying %q", tc.name, err, tc.want)
		}
	}
	if qp.Inflight() != 0 || qp.pair.Free() != 7 {
		t.Errorf("after rejected submits: %d in flight, %d of 7 slots free", qp.Inflight(), qp.pair.Free())
	}
	// A request may not be submitted again while in flight.
	hold := m.Inject(&nvmetest.Fault{Hold: true})
	r := Request{Opcode: NVMRead, Namespace: ns, Blocks: 1, Buf: buf}
	if err := qp.Submit(&r); err != nil {
		t.Fatal(err)
	}
	if err := qp.Submit(&r); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "still in flight") {
		t.Errorf("resubmit while in flight: %v", err)
	}
	m.Remove(hold)
	m.ReleaseHeld()
	if n, err := qp.Poll(1, 1); n != 1 || err != nil || r.Err != nil {
		t.Fatalf("Poll: %d, %v (request err %v)", n, err, r.Err)
	}
	if err := qp.Submit(&r); err != nil {
		t.Errorf("resubmit after completion: %v", err)
	}
}

func TestOpenPCIMissingDevice(t *testing.T) {
	_, err := OpenPCI("0000:ff:1f.7", nil)
	if err == nil || !strings.Contains(err.Error(), "0000:ff:1f.7") {
		t.Errorf("OpenPCI of a device that does not exist: %v; want an error naming it", err)
	}
}
