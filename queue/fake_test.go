package queue

import (
	"encoding/binary"
	"testing"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// fakeIOVA is where the test pretends the device sees the rings. No device
// reads it; New only checks alignment.
const fakeIOVA = 0x1_0000_0000

// mapDMA maps n bytes outside the Go heap, as the driver does, and unmaps
// them when the test ends.
func mapDMA(tb testing.TB, n int, iova uint64) dma.Buffer {
	tb.Helper()
	mem, err := dma.MapHost(n)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := dma.UnmapHost(mem); err != nil {
			tb.Error(err)
		}
	})
	return dma.Buffer{Bytes: mem[:n:n], IOVA: iova}
}

// fakeController is the device end of one queue pair, small enough to
// trust: it consumes SQEs from ring memory up to the tail doorbell and posts
// one CQE per command with the current phase, honouring the CQ head
// doorbell. With auto set it does so inside the SQ doorbell write, which
// makes a zero-work device for benchmarks.
type fakeController struct {
	tb      testing.TB
	sq, cq  []byte
	depth   uint32 // SQ entries
	cqDepth uint32 // CQ entries
	qid     uint16
	auto    bool
	status  uint16 // Status of the CQEs it posts

	sqHead, sqTail uint32
	cqTail, cqHead uint32
	phase          bool

	sqRings, cqRings int // doorbell writes seen
	fetched          []uint16
}

func newFakeController(tb testing.TB, cfg Config) *fakeController {
	cqDepth := cfg.CQDepth
	if cqDepth == 0 {
		cqDepth = cfg.Depth
	}
	return &fakeController{
		tb: tb, sq: cfg.SQ.Bytes, cq: cfg.CQ.Bytes,
		depth: uint32(cfg.Depth), cqDepth: uint32(cqDepth), qid: cfg.ID, phase: true,
	}
}

func (f *fakeController) ringSQ(v uint32) {
	f.sqRings++
	if v >= f.depth {
		f.tb.Fatalf("SQ tail doorbell %d, depth %d", v, f.depth)
	}
	f.sqTail = v
	if f.auto {
		f.process(-1)
	}
}

func (f *fakeController) ringCQ(v uint32) {
	f.cqRings++
	if v >= f.cqDepth {
		f.tb.Fatalf("CQ head doorbell %d, depth %d", v, f.cqDepth)
	}
	f.cqHead = v
}

// fetch consumes the next SQE, if any, and returns its cid.
func (f *fakeController) fetch() (uint16, bool) {
	if f.sqHead == f.sqTail {
		return 0, false
	}
	cid := binary.LittleEndian.Uint16(f.sq[f.sqHead*SQESize+2:])
	f.sqHead = (f.sqHead + 1) % f.depth
	return cid, true
}

// post writes c at the CQ tail with the current phase. A full CQ is a test
// bug: the host must ring the head doorbell in time.
func (f *fakeController) post(c Completion) {
	next := (f.cqTail + 1) % f.cqDepth
	if next == f.cqHead {
		f.tb.Fatalf("CQ full: tail %d, head %d", f.cqTail, f.cqHead)
	}
	off := f.cqTail * CQESize
	PostCompletion(f.cq[off:off+CQESize], c, f.phase)
	f.cqTail = next
	if next == 0 {
		f.phase = !f.phase
	}
}

// postRaw writes 16 bytes at the CQ tail as they are, phase bit included.
func (f *fakeController) postRaw(b []byte) {
	off := f.cqTail * CQESize
	copy(f.cq[off:off+CQESize], b)
	f.cqTail = (f.cqTail + 1) % f.cqDepth
	if f.cqTail == 0 {
		f.phase = !f.phase
	}
}

// process completes up to n fetched commands successfully (n < 0: all).
func (f *fakeController) process(n int) int {
	done := 0
	for ; n < 0 || done < n; done++ {
		cid, ok := f.fetch()
		if !ok {
			break
		}
		f.post(Completion{CID: cid, SQID: f.qid, SQHead: uint16(f.sqHead), Status: f.status})
	}
	return done
}

// testPair is a Pair wired to a fakeController over MapHost memory.
func testPair(tb testing.TB, id uint16, depth int) (*Pair, *fakeController, Config) {
	return testPairCQ(tb, id, depth, depth)
}

// testPairCQ is testPair with a CQ of cqDepth entries.
func testPairCQ(tb testing.TB, id uint16, depth, cqDepth int) (*Pair, *fakeController, Config) {
	tb.Helper()
	cfg := Config{
		ID:      id,
		Depth:   depth,
		CQDepth: cqDepth,
		SQ:      mapDMA(tb, depth*SQESize, fakeIOVA),
		CQ:      mapDMA(tb, cqDepth*CQESize, fakeIOVA+0x100000),
		PRP:     mapDMA(tb, (depth-1)*4096, fakeIOVA+0x200000),
	}
	f := newFakeController(tb, cfg)
	cfg.SQTail = DoorbellFunc(f.ringSQ)
	cfg.CQHead = DoorbellFunc(f.ringCQ)
	p, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return p, f, cfg
}

// reapAll takes every CQE the controller posted, releasing each slot, and
// returns how many there were. It does not ring the CQ head doorbell.
func reapAll(tb testing.TB, p *Pair) int {
	tb.Helper()
	n := 0
	for {
		c, ok, err := p.Next()
		if err != nil {
			tb.Fatal(err)
		}
		if !ok {
			return n
		}
		p.Release(c.CID)
		n++
	}
}

// submit acquires a slot and posts a 4 KiB read into it.
func submit(tb testing.TB, p *Pair) uint16 {
	tb.Helper()
	cid, err := p.Acquire()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := readCmd(cid, uint64(cid)*8)
	p.Post(&cmd)
	return cid
}

// readCmd is a 4 KiB NVM Read (opcode 02h) of 8 512-byte blocks at lba.
func readCmd(cid uint16, lba uint64) Command {
	return Command{
		Opcode: 0x02, CID: cid, NSID: 1,
		PRP1:  0x8000_0000 + uint64(cid)*4096,
		CDW10: uint32(lba), CDW11: uint32(lba >> 32), CDW12: 8 - 1,
	}
}
