package nvmetest

import (
	"testing"
	"time"
)

func TestShadowDoorbells(t *testing.T) {
	h := newHost(t, Config{Inline: true, ShadowDoorbells: true})
	if b := h.identify(1, 0); le.Uint16(b[256:])>>8&1 != 1 {
		t.Fatal("OACS does not advertise Doorbell Buffer Config")
	}
	io := h.ioQueue(1, 8)
	shadow, event := h.alloc(4096), h.alloc(4096)
	h.admin.status(Command{Opcode: OpDoorbellBuf, PRP1: shadow.IOVA + 8, PRP2: event.IOVA}, StatusInvalidField)
	io.ok(Command{Opcode: OpFlush, NSID: 1}) // queue in use before the buffers exist
	h.admin.ok(Command{Opcode: OpDoorbellBuf, PRP1: shadow.IOVA, PRP2: event.IOVA})
	if sh, ev := le.Uint32(shadow.Bytes[8:]), le.Uint32(event.Bytes[8:]); sh != 1 || ev != 1 {
		t.Fatalf("after Doorbell Buffer Config SQ 1 shadow %d EventIdx %d, want both seeded with tail 1", sh, ev)
	}

	// Two commands; the shadow says tail 2, the MMIO write (the host's
	// "wake up") carries a stale 1. The model trusts the shadow.
	for i := 1; i <= 2; i++ {
		(&Command{Opcode: OpFlush, NSID: 1, CID: uint16(100 + i)}).Encode(io.sq.Bytes[64*i:])
	}
	io.tail = 3
	le.PutUint32(shadow.Bytes[8:], 3)
	h.c.Write32(regDB+8, 2)
	if a, b := io.wait(), io.wait(); a.CID != 101 || b.CID != 102 {
		t.Fatalf("completions for cids %d, %d; want 101, 102", a.CID, b.CID)
	}
	if ev := le.Uint32(event.Bytes[8:]); ev != 3 {
		t.Errorf("SQ 1 EventIdx = %d, want 3 (the tail the model consumed)", ev)
	}
	// The CQ head comes from the shadow too.
	le.PutUint32(shadow.Bytes[12:], 3)
	(&Command{Opcode: OpFlush, NSID: 1, CID: 103}).Encode(io.sq.Bytes[192:])
	le.PutUint32(shadow.Bytes[8:], 4)
	h.c.Write32(regDB+8, 4)
	if cq, _ := h.c.CompletionQueue(1); cq.Head != 3 {
		t.Errorf("CQ 1 head %d, want 3 from the shadow doorbell", cq.Head)
	}
	if c := io.wait(); c.CID != 103 {
		t.Fatalf("cid %d, want 103", c.CID)
	}
	// A reset forgets the buffers.
	h.c.Write32(regCC, 0)
	h.enable(4)
	io = h.ioQueue(1, 8)
	io.ok(Command{Opcode: OpFlush, NSID: 1})
	h.checkNoFaults()
}

// An SQ whose new tail was published only in the shadow buffer, when its
// EventIdx said an MMIO write was owed, is not processed because some other
// doorbell was rung: as QEMU's nvme_process_sq, which reads an SQ's shadow
// tail only when that SQ's doorbell scheduled it. A host that skips the
// write sees its command sit, here as on QEMU.
func TestShadowTailReadOnlyForItsQueue(t *testing.T) {
	h := newHost(t, Config{Inline: true, ShadowDoorbells: true})
	io := h.ioQueue(1, 8)
	shadow, event := h.alloc(4096), h.alloc(4096)
	h.admin.ok(Command{Opcode: OpDoorbellBuf, PRP1: shadow.IOVA, PRP2: event.IOVA})
	ev := le.Uint32(event.Bytes[8:])
	(&Command{Opcode: OpFlush, NSID: 1, CID: 77}).Encode(io.sq.Bytes[64*ev:])
	le.PutUint32(shadow.Bytes[8:], ev+1) // past EventIdx: an MMIO write is owed, and skipped
	h.identify(1, 0)                     // another queue's doorbell
	io.none(2 * time.Millisecond)
	h.c.Write32(regDB+8, ev+1) // the write that was owed
	if c := io.wait(); c.CID != 77 {
		t.Fatalf("completion for cid %d after the SQ's own doorbell, want 77", c.CID)
	}
}
