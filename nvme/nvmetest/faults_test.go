package nvmetest

import (
	"bytes"
	"testing"
	"time"
)

func TestFaultStatusAtLBA(t *testing.T) {
	h := newHost(t, Config{Inline: true})
	io := h.ioQueue(1, 8)
	buf := h.alloc(4096)
	buf.Bytes[0] = 0x5a
	f := h.c.FailLBA(1, 100, 8, OpRead, StatusUnrecoveredRead|StatusDNR)
	io.ok(rw(OpRead, 1, 92, 8, buf.IOVA, 0))  // just before
	io.ok(rw(OpRead, 1, 108, 8, buf.IOVA, 0)) // just after
	io.ok(rw(OpWrite, 1, 100, 8, buf.IOVA, 0))
	c := io.status(rw(OpRead, 1, 96, 8, buf.IOVA, 0), StatusUnrecoveredRead)
	if c.Status.SCT() != 2 || c.Status.SC() != 0x81 || !c.Status.DNR() {
		t.Errorf("status %v, want SCT 2 SC 0x81 with DNR", c.Status)
	}
	if f.Hits() != 1 {
		t.Errorf("fault hit %d commands, want 1", f.Hits())
	}
	h.c.Remove(f)
	io.ok(rw(OpRead, 1, 96, 8, buf.IOVA, 0))
	// The failed read counts as a media error in the SMART log.
	page := h.alloc(4096)
	h.admin.ok(Command{Opcode: OpGetLogPage, NSID: 0xffffffff, PRP1: page.IOVA, CDW10: 127<<16 | lidHealth})
	if n := le.Uint64(page.Bytes[160:]); n != 1 {
		t.Errorf("SMART media errors = %d, want 1", n)
	}
}

func TestFaultNthCommand(t *testing.T) {
	h := newHost(t, Config{Inline: true})
	io := h.ioQueue(1, 8)
	h.c.Inject(&Fault{Match: MatchOpcode(false, OpFlush), Skip: 2, Count: 1, Status: StatusInternalError})
	var got []Status
	for range 5 {
		got = append(got, io.do(Command{Opcode: OpFlush, NSID: 1}).Status)
	}
	for i, s := range got {
		if want := Status(0); i == 2 {
			if s != StatusInternalError {
				t.Errorf("flush %d: %v, want internal error", i, s)
			}
		} else if s != want {
			t.Errorf("flush %d: %v, want success", i, s)
		}
	}
}

func TestFaultDelay(t *testing.T) {
	h := newHost(t, Config{})
	io := h.ioQueue(1, 8)
	h.c.Inject(&Fault{Match: MatchOpcode(false, OpFlush), Count: 1, Delay: 30 * time.Millisecond})
	start := time.Now()
	slow := io.submit(Command{Opcode: OpFlush, NSID: 1})
	fast := io.submit(Command{Opcode: OpFlush, NSID: 1})
	if c := io.wait(); c.CID != fast {
		t.Fatalf("first completion is cid %d, want the undelayed %d", c.CID, fast)
	}
	if c := io.wait(); c.CID != slow || time.Since(start) < 30*time.Millisecond {
		t.Fatalf("cid %d completed after %v, want cid %d after 30ms", c.CID, time.Since(start), slow)
	}
}

func TestFaultHoldAndAbort(t *testing.T) {
	h := newHost(t, Config{})
	io := h.ioQueue(1, 8)
	buf := h.alloc(4096)
	copy(buf.Bytes, pattern(4096, 2))
	h.c.Inject(&Fault{Match: MatchOpcode(false, OpWrite), Hold: true})
	cid := io.submit(rw(OpWrite, 1, 0, 8, buf.IOVA, 0))
	io.none(5 * time.Millisecond)
	if info, _ := h.c.SubmissionQueue(1); info.Pending != 1 {
		t.Fatalf("SQ 1 holds %d commands, want 1", info.Pending)
	}
	c := h.admin.ok(Command{Opcode: OpAbort, CDW10: uint32(cid)<<16 | 1})
	if c.DW0&1 != 0 {
		t.Errorf("Abort DW0 = %#x, want bit 0 clear (aborted)", c.DW0)
	}
	c = io.wait()
	if c.CID != cid || c.Status.Code() != StatusAbortRequested {
		t.Errorf("aborted command completed as cid %d status %v, want cid %d Command Abort Requested", c.CID, c.Status, cid)
	}
	if a := h.c.Namespace(1).Allocated(); a != 0 {
		t.Error("an aborted write reached the media")
	}
	// Aborting something that is not held reports "not aborted".
	if c := h.admin.ok(Command{Opcode: OpAbort, CDW10: 999<<16 | 1}); c.DW0&1 != 1 {
		t.Errorf("Abort of an unknown command: DW0 = %#x, want bit 0 set", c.DW0)
	}
	// On a queue that does not exist it fails, as on QEMU.
	h.admin.status(Command{Opcode: OpAbort, CDW10: uint32(cid)<<16 | 2}, StatusInvalidField)
	// ReleaseHeld runs held commands.
	cid = io.submit(rw(OpWrite, 1, 0, 8, buf.IOVA, 0))
	time.Sleep(2 * time.Millisecond)
	if n := h.c.ReleaseHeld(); n != 1 {
		t.Fatalf("ReleaseHeld released %d, want 1", n)
	}
	if c := io.wait(); c.CID != cid || c.Status != 0 {
		t.Errorf("released write: cid %d status %v", c.CID, c.Status)
	}
	got := make([]byte, 4096)
	h.c.Namespace(1).ReadAt(got, 0)
	if !bytes.Equal(got, buf.Bytes) {
		t.Error("released write stored different data")
	}
	// Deleting the SQ completes held commands with "aborted: SQ deleted".
	cid = io.submit(rw(OpWrite, 1, 0, 8, buf.IOVA, 0))
	time.Sleep(2 * time.Millisecond)
	h.admin.ok(Command{Opcode: OpDeleteSQ, CDW10: 1})
	if c := io.wait(); c.CID != cid || c.Status.Code() != StatusAbortSQDeleted {
		t.Errorf("held command on a deleted SQ: cid %d status %v", c.CID, c.Status)
	}
}

func TestFaultResetDropsHeld(t *testing.T) {
	h := newHost(t, Config{Inline: true})
	io := h.ioQueue(1, 8)
	h.c.Inject(&Fault{Hold: true, Match: MatchOpcode(false, OpFlush)})
	io.submit(Command{Opcode: OpFlush, NSID: 1})
	h.c.Write32(regCC, 0)
	if n := h.c.ReleaseHeld(); n != 0 {
		t.Errorf("%d commands still held after a reset, want 0", n)
	}
}

func TestFaultCompletionShapes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault *Fault
		check func(t *testing.T, io *hostQueue, cid uint16)
	}{
		{"drop", &Fault{Drop: true}, func(t *testing.T, io *hostQueue, cid uint16) {
			io.none(10 * time.Millisecond)
		}},
		{"duplicate", &Fault{Duplicate: true}, func(t *testing.T, io *hostQueue, cid uint16) {
			a, b := io.wait(), io.wait()
			if a.CID != cid || b.CID != cid {
				t.Errorf("completions for cids %d and %d, want %d twice", a.CID, b.CID, cid)
			}
		}},
		{"wrong phase", &Fault{WrongPhase: true}, func(t *testing.T, io *hostQueue, cid uint16) {
			io.none(10 * time.Millisecond)
			if cq, _ := io.h.c.CompletionQueue(1); cq.Tail != 1 {
				t.Errorf("CQ tail %d, want 1 (slot used, entry invisible)", cq.Tail)
			}
		}},
		{"unknown cid", &Fault{UnknownCID: true}, func(t *testing.T, io *hostQueue, cid uint16) {
			if c := io.wait(); c.CID != 0xffff {
				t.Errorf("cid %d, want 0xffff", c.CID)
			}
		}},
		{"bad sq head", &Fault{BadSQHead: true}, func(t *testing.T, io *hostQueue, cid uint16) {
			if c := io.wait(); c.SQHead != 8 || c.CID != cid {
				t.Errorf("SQ head %d for cid %d, want 8 (the queue size)", c.SQHead, c.CID)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, Config{Inline: true})
			io := h.ioQueue(1, 8)
			f := tc.fault
			f.Match = MatchOpcode(false, OpFlush)
			h.c.Inject(f)
			cid := io.submit(Command{Opcode: OpFlush, NSID: 1})
			tc.check(t, io, cid)
			if n := h.c.Stats().IOCommands[OpFlush]; n != 1 {
				t.Errorf("%d flushes executed, want 1", n)
			}
		})
	}
}

func TestFaultMatchCommand(t *testing.T) {
	h := newHost(t, Config{Inline: true})
	io := h.ioQueue(1, 8)
	h.c.Inject(&Fault{Match: MatchCommand(1, h.ids+2), Status: StatusDataTransferError})
	io.ok(Command{Opcode: OpFlush, NSID: 1})
	io.status(Command{Opcode: OpFlush, NSID: 1}, StatusDataTransferError)
	if s := h.c.Stats(); s.Errors != 1 {
		t.Errorf("Stats.Errors = %d, want 1", s.Errors)
	}
}

// Fault.Identify edits the data of the Identify commands its Match picks,
// and only theirs; the command still succeeds.
func TestFaultIdentify(t *testing.T) {
	h := newHost(t, Config{Inline: true})
	f := h.c.Inject(&Fault{Match: MatchIdentify(0x01), Count: 1, Identify: func(b []byte) { b[77] = 200 }})
	if ns := h.identify(0x00, 1); ns[77] == 200 {
		t.Error("Identify Namespace was edited by a fault matching Identify Controller")
	}
	if id := h.identify(0x01, 0); id[77] != 200 {
		t.Errorf("Identify Controller MDTS %d, want the fault's 200", id[77])
	}
	if id := h.identify(0x01, 0); id[77] != DefaultMDTS {
		t.Errorf("after the fault's one hit: MDTS %d, want %d", id[77], DefaultMDTS)
	}
	if f.Hits() != 1 {
		t.Errorf("fault hit %d commands, want 1", f.Hits())
	}
}
