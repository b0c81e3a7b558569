package nvme

import (
	"encoding/binary"
	"fmt"
	"testing"
	"unsafe"

	"github.com/nvmepoll/nvmepoll/iopoll"
	"github.com/nvmepoll/nvmepoll/queue"
)

// newZeroWorkPair is newEchoPair with a cheaper device: inside the SQ
// doorbell write it reads only each SQE's command id and writes one CQE
// with plain stores (it runs on the submitting goroutine, so nothing needs
// to be atomic). What a benchmark on it measures is the driver: about 15 ns
// per I/O of newEchoPair's time is its device decoding the whole SQE and
// posting the CQE with an atomic exchange, work a real controller does.
func newZeroWorkPair(tb testing.TB, depth int) (*QueuePair, *Namespace, *Pool) {
	a := &mmapAlloc{}
	c := &Controller{maxTransfer: 128 << 10, opts: (*Options)(nil).withDefaults(), namespaces: map[uint32]*Namespace{}, refreshTicks: iopoll.ProcessClock().Ticks(clockRefresh)}
	ns := &Namespace{c: c, id: 1, blockSize: 512, shift: 9, blocks: 1 << 30}
	cqDepth := defaultCQDepth(depth, queue.MaxDepth) // as NewQueuePair sizes it
	sq, _ := a.Alloc(depth * queue.SQESize)
	cq, _ := a.Alloc(cqDepth * queue.CQESize)
	var sqHead, cqTail, cqHead uint32
	phase := uint32(1 << 16) // CQE DW3 bit 16
	q := &QueuePair{c: c, id: 1, sq: sq, cq: cq, inflight: make([]*Request, depth-1)}
	q.listPages = prpListPages(PageSize-4, c.maxTransfer, PageSize)
	q.prp, _ = a.Alloc((depth - 1) * q.listPages * PageSize)
	sqdb := queue.DoorbellFunc(func(tail uint32) {
		for sqHead != tail {
			cid := binary.LittleEndian.Uint16(sq.Bytes[sqHead*queue.SQESize+2:])
			if sqHead++; sqHead == uint32(depth) {
				sqHead = 0
			}
			if (cqTail+1)%uint32(cqDepth) == cqHead {
				tb.Errorf("zero-work completer: CQ full (head %d, tail %d of %d): the head doorbell lagged too far", cqHead, cqTail, cqDepth)
				return
			}
			w := (*[4]uint32)(unsafe.Pointer(&cq.Bytes[cqTail*queue.CQESize]))
			w[0], w[1], w[2] = 0, 0, sqHead|1<<16 // SQ head, SQ id 1
			w[3] = uint32(cid) | phase
			if cqTail++; cqTail == uint32(cqDepth) {
				cqTail, phase = 0, phase^1<<16
			}
		}
	})
	var err error
	cqdb := queue.DoorbellFunc(func(head uint32) { cqHead = head })
	q.pair, err = queue.New(queue.Config{ID: 1, Depth: depth, CQDepth: cqDepth, SQ: sq, CQ: cq, SQTail: sqdb, CQHead: cqdb})
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

// hotLoop keeps qd 4 KiB reads in flight on qp the way a batching caller
// (nvmectl perf, a storage daemon) does: every request that completed is
// prepared again and all of them go out with one SubmitBatch (one SQ tail
// update), then one Poll reaps what the controller posted (one CQ head
// update). It returns the number of I/Os completed.
type hotLoop struct {
	qp      *QueuePair
	reqs    []Request
	free    []*Request
	lbas    []uint64
	next    int
	ios     uint64
	onError func(error)
}

func newHotLoop(tb testing.TB, qp *QueuePair, ns *Namespace, pool *Pool, qd int) *hotLoop {
	h := &hotLoop{qp: qp, reqs: make([]Request, qd), free: make([]*Request, 0, qd), lbas: make([]uint64, 1024)}
	h.onError = func(err error) { tb.Fatal(err) }
	done := func(r *Request) {
		if r.Err != nil {
			h.onError(r.Err)
		}
		h.ios++
		h.free = append(h.free, r)
	}
	for i := range h.reqs {
		buf, err := pool.Get()
		if err != nil {
			tb.Fatal(err)
		}
		h.reqs[i] = Request{Opcode: NVMRead, Namespace: ns, Blocks: 8, Buf: buf.Slice(0, 4096), Done: done}
		h.free = append(h.free, &h.reqs[i])
	}
	for i := range h.lbas {
		h.lbas[i] = uint64(i*7919%1024) * 8 // pre-generated "random" offsets
	}
	return h
}

// round submits every free request in one batch and reaps at least one.
func (h *hotLoop) round() {
	for _, r := range h.free {
		r.LBA = h.lbas[h.next]
		h.next = (h.next + 1) & (len(h.lbas) - 1)
	}
	n, err := h.qp.SubmitBatch(h.free)
	if err != nil {
		h.onError(err)
	}
	h.free = h.free[:copy(h.free, h.free[n:])]
	if _, err := h.qp.Poll(1, len(h.reqs)); err != nil {
		h.onError(err)
	}
}

// BenchmarkHotPath is the driver's cost per 4 KiB read, submit plus reap,
// against the zero-work completer (newZeroWorkPair: it posts a CQE for
// every SQE inside the doorbell write and moves no data). One op is one I/O. This
// is the figure docs/PERFORMANCE.md reports for target (a): at most 100 ns
// per I/O at QD32 and no allocation.
func BenchmarkHotPath(b *testing.B) {
	for _, qd := range []int{1, 32} {
		b.Run(fmt.Sprintf("QD%d", qd), func(b *testing.B) {
			qp, ns, pool := newZeroWorkPair(b, 64)
			h := newHotLoop(b, qp, ns, pool, qd)
			b.ReportAllocs()
			b.SetBytes(4096)
			b.ResetTimer()
			for h.ios < uint64(b.N) {
				h.round()
			}
		})
	}
}

// TestHotPathBatching checks the doorbell discipline the benchmark relies
// on: with 32 requests in flight, one SQ tail update per submitted batch
// and one CQ head update per reap, and no allocation in steady state.
func TestHotPathBatching(t *testing.T) {
	qp, ns, pool := newZeroWorkPair(t, 64)
	h := newHotLoop(t, qp, ns, pool, 32)
	h.round() // warm up
	before := qp.Doorbells()
	const rounds = 100
	allocs := testing.AllocsPerRun(rounds, h.round)
	db := qp.Doorbells()
	// AllocsPerRun runs the function once more to warm up.
	if got := db.SQ.Updates - before.SQ.Updates; got != rounds+1 {
		t.Errorf("%d rounds of SubmitBatch(32): %d SQ tail updates, want one per batch (%d)", rounds+1, got, rounds+1)
	}
	// The CQ head is written once the reaped entries pass the CQ's slack
	// (CQDepth-Depth): 256-64 = 192 entries, so every 7th reap of 32.
	slack := qp.pair.CQDepth() - qp.pair.Depth()
	reaps := slack/32 + 1
	if got, want := db.CQ.Updates-before.CQ.Updates, uint64(rounds+1)/uint64(reaps); got < want || got > want+1 {
		t.Errorf("%d Polls of 32: %d CQ head updates, want one per %d reaps (%d)", rounds+1, got, reaps, want)
	}
	if h.ios < 32*rounds {
		t.Errorf("%d I/Os completed in %d rounds of 32", h.ios, rounds+1)
	}
	if allocs != 0 {
		t.Errorf("a round of 32 reads submitted and reaped: %v allocations, want 0", allocs)
	}
}
