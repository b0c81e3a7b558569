package nvmetest

import "testing"

func TestShadowDoorbells(t *testing.T) {
	h := newHost(t, Config{Inline: true, ShadowDoorbells: true})
	if b := h.identify(1, 0); le.Uint16(b[256:])>>8&1 != 1 {
		t.Fatal("OACS does not advertise Doorbell Buffer Config")
	}
	io := h.ioQueue(1, 8)
	shadow, event := h.alloc(4096), h.alloc(4096)
	h.admin.status(Command{Opcode: OpDoorbellBuf, PRP1: shadow.IOVA + 8, PRP2: event.IOVA}, StatusInvalidField)
	h.admin.ok(Command{Opcode: OpDoorbellBuf, PRP1: shadow.IOVA, PRP2: event.IOVA})

	// Two commands; the shadow says tail 2, the MMIO write (the host's
	// "wake up") carries a stale 1. The model trusts the shadow.
	for i := range 2 {
		(&Command{Opcode: OpFlush, NSID: 1, CID: uint16(i)}).Encode(io.sq.Bytes[64*i:])
	}
	io.tail = 2
	le.PutUint32(shadow.Bytes[8:], 2)
	h.c.Write32(regDB+8, 1)
	if a, b := io.wait(), io.wait(); a.CID != 0 || b.CID != 1 {
		t.Fatalf("completions for cids %d, %d; want 0, 1", a.CID, b.CID)
	}
	if ev := le.Uint32(event.Bytes[8:]); ev != 2 {
		t.Errorf("SQ 1 EventIdx = %d, want 2 (the tail the model consumed)", ev)
	}
	// The CQ head comes from the shadow too.
	le.PutUint32(shadow.Bytes[12:], 2)
	(&Command{Opcode: OpFlush, NSID: 1, CID: 2}).Encode(io.sq.Bytes[128:])
	le.PutUint32(shadow.Bytes[8:], 3)
	h.c.Write32(regDB+8, 3)
	if cq, _ := h.c.CompletionQueue(1); cq.Head != 2 {
		t.Errorf("CQ 1 head %d, want 2 from the shadow doorbell", cq.Head)
	}
	if c := io.wait(); c.CID != 2 {
		t.Fatalf("cid %d, want 2", c.CID)
	}
	// A reset forgets the buffers.
	h.c.Write32(regCC, 0)
	h.enable(4)
	io = h.ioQueue(1, 8)
	io.ok(Command{Opcode: OpFlush, NSID: 1})
	h.checkNoFaults()
}
