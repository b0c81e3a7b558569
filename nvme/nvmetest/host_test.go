package nvmetest

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/nvmepoll/nvmepoll/queue"
	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// host is a minimal NVMe host written against the specification, used to
// drive the model in its own tests. The real driver lives in package nvme.
type host struct {
	t     testing.TB
	c     *Controller
	admin *hostQueue
	ids   uint16
}

type hostQueue struct {
	h      *host
	id     uint16
	size   uint32 // SQ entries
	cqSize uint32 // CQ entries if different from size
	sq, cq dma.Buffer
	tail   uint32
	head   uint32
	phase  uint32
	db     queue.Doorbell
	// With shadow doorbells: the shared shadow and EventIdx pages.
	shadow, event *dma.Buffer
}

// doorbell publishes a new SQ tail (cq false) or CQ head: straight to MMIO,
// or with shadow doorbells to the shadow page, followed by an MMIO write
// only if the value moves past the controller's EventIdx (the rule Linux
// uses, nvme_dbbuf_need_event).
func (q *hostQueue) doorbell(cq bool, old, v uint32) {
	off := 8 * int(q.id)
	if cq {
		off += 4
	}
	if q.shadow != nil {
		atomic.StoreUint32((*uint32)(unsafe.Pointer(&q.shadow.Bytes[off])), v)
		ev := atomic.LoadUint32((*uint32)(unsafe.Pointer(&q.event.Bytes[off])))
		if uint16(v-ev-1) >= uint16(v-old) {
			return
		}
	}
	q.h.c.Write32(regDB+off, v)
}

func (h *host) alloc(n int) dma.Buffer {
	h.t.Helper()
	b, err := h.c.DMA().Alloc(n)
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

// newHost makes a controller and enables it with admin queues of 16 entries.
func newHost(t testing.TB, cfg Config) *host {
	t.Helper()
	h := &host{t: t, c: NewController(t, cfg)}
	h.enable(16)
	return h
}

func (h *host) enable(depth uint32) {
	h.t.Helper()
	q := &hostQueue{h: h, id: 0, size: depth, sq: h.alloc(int(depth) * 64), cq: h.alloc(int(depth) * 16), phase: 1}
	h.admin = q
	c := h.c
	c.Write32(regAQA, (depth-1)<<16|(depth-1))
	c.Write32(regASQ, uint32(q.sq.IOVA))
	c.Write32(regASQ+4, uint32(q.sq.IOVA>>32))
	c.Write32(regACQ, uint32(q.cq.IOVA))
	c.Write32(regACQ+4, uint32(q.cq.IOVA>>32))
	c.Write32(regCC, ccEN|6<<16|4<<20)
	h.waitCSTS(cstsRDY, cstsRDY)
}

func (h *host) waitCSTS(mask, want uint32) {
	h.t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for h.c.Read32(regCSTS)&mask != want {
		if time.Now().After(deadline) {
			h.t.Fatalf("CSTS = %#x, waited for bits %#x to be %#x", h.c.Read32(regCSTS), mask, want)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// submit writes cmd at the tail (assigning a cid) and rings the doorbell.
func (q *hostQueue) submit(cmd Command) uint16 {
	q.h.ids++
	cmd.CID = q.h.ids
	cmd.Encode(q.sq.Bytes[q.tail*64:])
	q.tail = (q.tail + 1) % q.size
	if q.db == nil {
		db, err := q.h.c.Doorbell(regDB + 8*int(q.id))
		if err != nil {
			q.h.t.Fatal(err)
		}
		q.db = db
	}
	q.db.Ring(q.tail)
	return cmd.CID
}

// tail64 posts cmd with the given cid and rings the doorbell; unlike
// submit it touches no shared host state, so goroutines may use it on
// their own queues.
func (q *hostQueue) tail64(cmd Command, cid uint16) {
	cmd.CID = cid
	cmd.Encode(q.sq.Bytes[q.tail*64:])
	old := q.tail
	q.tail = (q.tail + 1) % q.size
	q.doorbell(false, old, q.tail)
}

// waitErr is wait for other goroutines: it returns an error instead of
// failing the test.
func (q *hostQueue) waitErr() (Completion, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, ok := q.poll(); ok {
			return c, nil
		}
		if time.Now().After(deadline) {
			return Completion{}, fmt.Errorf("queue %d: no completion within 5s", q.id)
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// poll returns the next completion if one is visible; DW3 first, atomically.
func (q *hostQueue) poll() (Completion, bool) {
	e := q.cq.Bytes[q.head*16 : q.head*16+16]
	dw3 := atomic.LoadUint32((*uint32)(unsafe.Pointer(&e[12])))
	if dw3>>16&1 != q.phase {
		return Completion{}, false
	}
	c := DecodeCompletion(e)
	old := q.head
	q.head++
	if q.head == q.size && q.cqSize == 0 || q.head == q.cqSize {
		q.head, q.phase = 0, q.phase^1
	}
	q.doorbell(true, old, q.head)
	return c, true
}

// wait returns the next completion, failing the test after a second.
func (q *hostQueue) wait() Completion {
	q.h.t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		if c, ok := q.poll(); ok {
			return c
		}
		if time.Now().After(deadline) {
			q.h.t.Fatalf("queue %d: no completion within a second", q.id)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// none checks that no completion shows up for a while.
func (q *hostQueue) none(d time.Duration) {
	q.h.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c, ok := q.poll(); ok {
			q.h.t.Fatalf("queue %d: unexpected completion %+v", q.id, c)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func (q *hostQueue) do(cmd Command) Completion {
	q.h.t.Helper()
	cid := q.submit(cmd)
	c := q.wait()
	if c.CID != cid {
		q.h.t.Fatalf("completion for cid %d, want %d", c.CID, cid)
	}
	return c
}

// ok runs cmd and fails the test unless it succeeds.
func (q *hostQueue) ok(cmd Command) Completion {
	q.h.t.Helper()
	c := q.do(cmd)
	if c.Status != 0 {
		q.h.t.Fatalf("opcode %#x on queue %d: status %v", cmd.Opcode, q.id, c.Status)
	}
	return c
}

// status runs cmd and checks its status code (ignoring DNR and friends).
func (q *hostQueue) status(cmd Command, want Status) Completion {
	q.h.t.Helper()
	c := q.do(cmd)
	if c.Status.Code() != want.Code() {
		q.h.t.Fatalf("opcode %#x on queue %d: status %v, want %v", cmd.Opcode, q.id, c.Status, want)
	}
	return c
}

// ioQueue creates I/O queue pair qid with size entries.
func (h *host) ioQueue(qid uint16, size uint32) *hostQueue {
	h.t.Helper()
	q := &hostQueue{h: h, id: qid, size: size, sq: h.alloc(int(size) * 64), cq: h.alloc(int(size) * 16), phase: 1}
	h.admin.ok(Command{Opcode: OpCreateCQ, PRP1: q.cq.IOVA, CDW10: (size-1)<<16 | uint32(qid), CDW11: 1})
	h.admin.ok(Command{Opcode: OpCreateSQ, PRP1: q.sq.IOVA, CDW10: (size-1)<<16 | uint32(qid), CDW11: uint32(qid)<<16 | 1})
	return q
}

// identify reads an Identify structure into fresh DMA memory.
func (h *host) identify(cns uint8, nsid uint32) []byte {
	h.t.Helper()
	b := h.alloc(4096)
	h.admin.ok(Command{Opcode: OpIdentify, NSID: nsid, PRP1: b.IOVA, CDW10: uint32(cns)})
	return b.Bytes
}

func rw(op uint8, nsid uint32, lba uint64, blocks int, prp1, prp2 uint64) Command {
	return Command{Opcode: op, NSID: nsid, PRP1: prp1, PRP2: prp2,
		CDW10: uint32(lba), CDW11: uint32(lba >> 32), CDW12: uint32(blocks - 1)}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed ^ byte(i>>9)
	}
	return b
}

// checkNoFaults fails the test if the model saw a DMA to unmapped memory.
func (h *host) checkNoFaults() {
	h.t.Helper()
	if n := h.c.DMAFaults(); n != 0 {
		h.t.Errorf("%d DMA faults, want 0", n)
	}
}

// prps returns PRP1 and PRP2 for n bytes at buf.Bytes[off:], building a PRP
// list (in a fresh page) when the transfer needs more than two pages.
func (h *host) prps(buf dma.Buffer, off, n int) (uint64, uint64) {
	h.t.Helper()
	prp1 := buf.IOVA + uint64(off)
	first := min(n, 4096-off%4096)
	rest := n - first
	switch {
	case rest == 0:
		return prp1, 0
	case rest <= 4096:
		return prp1, prp1 + uint64(first)
	}
	list := h.alloc(4096)
	for i, a := 0, prp1+uint64(first); rest > 0; i, a, rest = i+1, a+4096, rest-4096 {
		le.PutUint64(list.Bytes[8*i:], a)
	}
	return prp1, list.IOVA
}
