package queue

import (
	"testing"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// After a controller reset the queue is re-created over the same memory:
// the controller starts at SQ head 0, CQ tail 0, phase 1. Reset must put
// the host side in the same place, with every slot free and no stale CQE
// (from the lap before) looking new.
func TestResetStartsOver(t *testing.T) {
	p, f, _ := testPair(t, 1, 4)
	// Lap the CQ once so the expected phase flips to 0, then leave two
	// commands posted and one completion unreaped.
	for i := 0; i < 4; i++ {
		submit(t, p)
		p.UpdateTail()
		f.process(-1)
		c, ok, err := p.Next()
		if !ok || err != nil {
			t.Fatalf("lap %d: Next = %v, %v", i, ok, err)
		}
		p.Release(c.CID)
		p.UpdateHead()
	}
	submit(t, p)
	submit(t, p)
	p.UpdateTail()
	f.process(1)
	if p.Outstanding() != 2 || p.Free() != 1 {
		t.Fatalf("before Reset: outstanding %d free %d, want 2 and 1", p.Outstanding(), p.Free())
	}

	p.Reset()
	*f = *newFakeController(t, Config{ID: 1, Depth: 4, SQ: dmaOf(f.sq), CQ: dmaOf(f.cq)})
	if p.Outstanding() != 0 || p.Free() != p.Slots() {
		t.Fatalf("after Reset: outstanding %d free %d, want 0 and %d", p.Outstanding(), p.Free(), p.Slots())
	}
	if _, ok, err := p.Next(); ok || err != nil {
		t.Fatalf("after Reset the CQ must look empty, got ok=%v err=%v", ok, err)
	}
	// The first command after the reset goes to SQ slot 0 with cid 0 and
	// its completion (phase 1 at CQ slot 0) is seen.
	cid := submit(t, p)
	if cid != 0 {
		t.Errorf("first cid after Reset = %d, want 0", cid)
	}
	p.UpdateTail()
	if f.sqTail != 1 {
		t.Errorf("SQ tail doorbell after one post = %d, want 1", f.sqTail)
	}
	f.process(-1)
	c, ok, err := p.Next()
	if !ok || err != nil || c.CID != cid {
		t.Fatalf("completion after Reset: %+v ok=%v err=%v", c, ok, err)
	}
	p.Release(c.CID)
	if p.UpdateHead(); f.cqHead != 1 {
		t.Errorf("CQ head doorbell = %d, want 1", f.cqHead)
	}
}

func dmaOf(b []byte) dma.Buffer { return dma.Buffer{Bytes: b} }
