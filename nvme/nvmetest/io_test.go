package nvmetest

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// modes runs f against an inline and a worker-goroutine controller.
func modes(t *testing.T, cfg Config, f func(t *testing.T, h *host)) {
	for _, inline := range []bool{true, false} {
		name := "worker"
		if inline {
			name = "inline"
		}
		t.Run(name, func(t *testing.T) {
			cfg := cfg
			cfg.Inline = inline
			f(t, newHost(t, cfg))
		})
	}
}

func TestReadWriteSimple(t *testing.T) {
	modes(t, Config{}, func(t *testing.T, h *host) {
		io := h.ioQueue(1, 8)
		buf := h.alloc(8192)
		want := pattern(8192, 1)
		copy(buf.Bytes, want)
		io.ok(rw(OpWrite, 1, 10, 16, buf.IOVA, buf.IOVA+4096))
		got := make([]byte, 8192)
		h.c.Namespace(1).ReadAt(got, 10*512)
		if !bytes.Equal(got, want) {
			t.Fatal("namespace does not hold what was written")
		}
		clear(buf.Bytes)
		c := io.ok(rw(OpRead, 1, 10, 16, buf.IOVA, buf.IOVA+4096))
		if !bytes.Equal(buf.Bytes, want) {
			t.Fatal("read returned different data")
		}
		if c.SQID != 1 || c.SQHead != 2 {
			t.Errorf("completion SQID %d SQHead %d, want 1 and 2", c.SQID, c.SQHead)
		}
		h.checkNoFaults()
	})
}

// TestPRPListChaining moves 5 pages whose first buffer starts 512 bytes
// into a page, through a PRP list that starts 16 bytes before the end of its
// page: one data entry, then a pointer to a second list page.
func TestPRPListChaining(t *testing.T) {
	modes(t, Config{}, func(t *testing.T, h *host) {
		io := h.ioQueue(1, 8)
		const n = 5 * 4096
		data := h.alloc(n + 4096)
		want := pattern(n, 3)
		copy(data.Bytes[512:], want)
		lists := h.alloc(8192)
		// Data pages after the first partial one: 4 full pages and 512 bytes.
		pages := []uint64{data.IOVA + 4096, data.IOVA + 8192, data.IOVA + 12288, data.IOVA + 16384, data.IOVA + 20480}
		le.PutUint64(lists.Bytes[4080:], pages[0])
		le.PutUint64(lists.Bytes[4088:], lists.IOVA+4096) // chain
		for i, p := range pages[1:] {
			le.PutUint64(lists.Bytes[4096+8*i:], p)
		}
		io.ok(rw(OpWrite, 1, 100, n/512, data.IOVA+512, lists.IOVA+4080))
		got := make([]byte, n)
		h.c.Namespace(1).ReadAt(got, 100*512)
		if !bytes.Equal(got, want) {
			t.Fatal("PRP-list write stored different data")
		}
		clear(data.Bytes)
		io.ok(rw(OpRead, 1, 100, n/512, data.IOVA+512, lists.IOVA+4080))
		if !bytes.Equal(data.Bytes[512:512+n], want) {
			t.Fatal("PRP-list read returned different data")
		}
		if !allZero(data.Bytes[:512]) || !allZero(data.Bytes[512+n:]) {
			t.Error("read wrote outside the buffer")
		}
		h.checkNoFaults()
	})
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func TestPRPValidation(t *testing.T) {
	h := newHost(t, Config{Inline: true})
	io := h.ioQueue(1, 8)
	buf := h.alloc(4 * 4096)
	list := h.alloc(4096)
	le.PutUint64(list.Bytes[0:], buf.IOVA+4096)
	le.PutUint64(list.Bytes[8:], buf.IOVA+8192+8) // not page aligned
	// A list that starts in its page's last entry, which chains to the
	// next list page: that pointer must be page aligned (QEMU's
	// nvme_map_prp), unlike PRP2.
	le.PutUint64(list.Bytes[4088:], list.IOVA+2056)
	le.PutUint64(list.Bytes[2056:], buf.IOVA+4096)
	le.PutUint64(list.Bytes[2064:], buf.IOVA+8192)
	for _, tc := range []struct {
		name       string
		prp1, prp2 uint64
		blocks     int
		want       Status
	}{
		{"prp1 not dword aligned", buf.IOVA + 2, 0, 1, StatusPRPOffsetInvalid},
		{"prp1 zero", 0, 0, 1, StatusInvalidField},
		{"prp2 data pointer with offset", buf.IOVA, buf.IOVA + 4096 + 512, 16, StatusPRPOffsetInvalid},
		{"prp2 missing", buf.IOVA, 0, 16, StatusInvalidField},
		{"list entry with offset", buf.IOVA, list.IOVA, 24, StatusPRPOffsetInvalid},
		{"list pointer not qword aligned", buf.IOVA, list.IOVA + 4, 24, StatusPRPOffsetInvalid},
		{"list runs into zero entries", buf.IOVA, list.IOVA + 16, 24, StatusInvalidField},
		{"chained list pointer with offset", buf.IOVA, list.IOVA + 4088, 24, StatusPRPOffsetInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := io.status(rw(OpWrite, 1, 0, tc.blocks, tc.prp1, tc.prp2), tc.want)
			if !c.Status.DNR() {
				t.Errorf("status %v without DNR", c.Status)
			}
		})
	}
	h.checkNoFaults()
}

func TestMDTS(t *testing.T) {
	h := newHost(t, Config{Inline: true, MDTS: 1}) // 8 KiB
	io := h.ioQueue(1, 8)
	buf := h.alloc(3 * 4096)
	p1, p2 := h.prps(buf, 0, 3*4096)
	io.ok(rw(OpWrite, 1, 0, 16, p1, p2))
	io.status(rw(OpWrite, 1, 0, 17, p1, p2), StatusInvalidField)
	io.status(rw(OpRead, 1, 0, 24, p1, p2), StatusInvalidField)
	// Write Zeroes moves no data and is not bound by MDTS.
	io.ok(rw(OpWriteZeroes, 1, 0, 1000, 0, 0))
	if b := h.identify(1, 0); b[77] != 1 {
		t.Errorf("Identify MDTS = %d, want 1", b[77])
	}
}

func TestLBARange(t *testing.T) {
	h := newHost(t, Config{Inline: true, Namespaces: []NamespaceConfig{{Blocks: 100}}})
	io := h.ioQueue(1, 8)
	buf := h.alloc(4096)
	io.ok(rw(OpWrite, 1, 99, 1, buf.IOVA, 0))
	for _, tc := range []struct {
		lba    uint64
		blocks int
	}{{100, 1}, {99, 2}, {1 << 63, 1}, {^uint64(0), 8}} {
		c := io.status(rw(OpRead, 1, tc.lba, tc.blocks, buf.IOVA, 0), StatusLBAOutOfRange)
		if c.Status.SCT() != 0 || !c.Status.DNR() {
			t.Errorf("lba %d+%d: status %v, want SCT 0 with DNR", tc.lba, tc.blocks, c.Status)
		}
	}
	io.status(rw(OpRead, 2, 0, 1, buf.IOVA, 0), StatusInvalidNamespace)
	io.status(rw(0x7f, 1, 0, 1, buf.IOVA, 0), StatusInvalidOpcode)
	io.status(Command{Opcode: OpRead, NSID: 1, Flags: 1, PRP1: buf.IOVA}, StatusInvalidField)      // fused
	io.status(Command{Opcode: OpRead, NSID: 1, Flags: 1 << 6, PRP1: buf.IOVA}, StatusInvalidField) // SGL not enabled
	h.checkNoFaults()
}

func TestFourKNamespace(t *testing.T) {
	h := newHost(t, Config{Inline: true, Namespaces: []NamespaceConfig{{}, {Blocks: 1 << 18, LBAShift: 12}}})
	io := h.ioQueue(1, 8)
	buf := h.alloc(8192)
	copy(buf.Bytes, pattern(8192, 9))
	io.ok(rw(OpWrite, 2, (1<<18)-2, 2, buf.IOVA, buf.IOVA+4096))
	got := make([]byte, 8192)
	h.c.Namespace(2).ReadAt(got, ((1<<18)-2)*4096)
	if !bytes.Equal(got, buf.Bytes) {
		t.Fatal("4 KiB-block write stored different data")
	}
	if a := h.c.Namespace(2).Allocated(); a != 8192 {
		t.Errorf("a 1 GiB namespace with 8 KiB written uses %d bytes, want 8192", a)
	}
	h.checkNoFaults()
}

func TestFlushCompareZeroesDSM(t *testing.T) {
	h := newHost(t, Config{Inline: true})
	io := h.ioQueue(1, 8)
	buf := h.alloc(8192)
	copy(buf.Bytes, pattern(8192, 5))
	io.ok(rw(OpWrite, 1, 0, 16, buf.IOVA, buf.IOVA+4096))
	io.ok(Command{Opcode: OpFlush, NSID: 1})
	io.ok(Command{Opcode: OpFlush, NSID: 0xffffffff})
	io.ok(rw(OpCompare, 1, 0, 16, buf.IOVA, buf.IOVA+4096))
	buf.Bytes[700] ^= 1
	c := io.status(rw(OpCompare, 1, 0, 16, buf.IOVA, buf.IOVA+4096), StatusCompareFailure)
	if c.Status.SCT() != 2 || c.Status.SC() != 0x85 {
		t.Errorf("compare mismatch status %v, want SCT 2 SC 0x85", c.Status)
	}
	io.ok(rw(OpVerify, 1, 0, 16, 0, 0))

	ns := h.c.Namespace(1)
	io.ok(rw(OpWriteZeroes, 1, 2, 2, 0, 0)) // bytes 1024..2047
	got := make([]byte, 8192)
	ns.ReadAt(got, 0)
	if !allZero(got[1024:2048]) || allZero(got[:1024]) || allZero(got[2048:]) {
		t.Error("Write Zeroes of blocks 2-3 did not zero exactly bytes 1024-2047")
	}

	// Deallocate blocks 8..15 (the second 4 KiB chunk) and block 0.
	ranges := h.alloc(4096)
	le.PutUint32(ranges.Bytes[4:], 8)
	le.PutUint64(ranges.Bytes[8:], 8)
	le.PutUint32(ranges.Bytes[16+4:], 1)
	le.PutUint64(ranges.Bytes[16+8:], 0)
	io.ok(Command{Opcode: OpDSM, NSID: 1, PRP1: ranges.IOVA, CDW10: 1, CDW11: 1 << 2})
	ns.ReadAt(got, 0)
	if !allZero(got[:512]) || !allZero(got[4096:]) || allZero(got[512:1024]) {
		t.Error("deallocated blocks 0 and 8-15 do not read as zeros, or others do")
	}
	if a := ns.Allocated(); a != 4096 {
		t.Errorf("after deallocating a whole chunk %d bytes are allocated, want 4096", a)
	}
	clear(buf.Bytes)
	buf.Bytes[0] = 0xff
	io.ok(rw(OpRead, 1, 8, 8, buf.IOVA, 0))
	if !allZero(buf.Bytes[:4096]) {
		t.Error("read of deallocated blocks returned data")
	}
	le.PutUint64(ranges.Bytes[8:], 1<<30)
	io.status(Command{Opcode: OpDSM, NSID: 1, PRP1: ranges.IOVA, CDW10: 1, CDW11: 1 << 2}, StatusLBAOutOfRange)
	h.checkNoFaults()
}

func TestSGL(t *testing.T) {
	h := newHost(t, Config{Inline: true, SGL: true})
	io := h.ioQueue(1, 8)
	data := h.alloc(3 * 4096)
	want := pattern(4096, 7)
	lists := h.alloc(8192)
	desc := func(b []byte, addr uint64, n uint32, typ uint8) {
		le.PutUint64(b, addr)
		le.PutUint32(b[8:], n)
		b[15] = typ << 4
	}
	sgl := func(op uint8, addr uint64, n uint32, typ uint8) Command {
		return Command{Opcode: op, NSID: 1, Flags: 1 << 6, PRP1: addr, PRP2: uint64(n) | uint64(typ)<<60, CDW12: 7}
	}
	// One data block.
	copy(data.Bytes, want)
	io.ok(sgl(OpWrite, data.IOVA, 4096, sglDataBlock))
	// Segment (two data blocks + chain) then Last Segment (one block).
	desc(lists.Bytes[0:], data.IOVA+4096, 1000, sglDataBlock)
	desc(lists.Bytes[16:], data.IOVA+8192, 96, sglDataBlock)
	desc(lists.Bytes[32:], lists.IOVA+4096, 16, sglLastSegment)
	desc(lists.Bytes[4096:], data.IOVA+4096+1000, 3000, sglDataBlock)
	clear(data.Bytes)
	io.ok(sgl(OpRead, lists.IOVA, 48, sglSegment))
	got := append(append(append([]byte{}, data.Bytes[4096:5096]...), data.Bytes[8192:8288]...), data.Bytes[5096:8096]...)
	if !bytes.Equal(got, want) {
		t.Fatal("SGL segment read scattered different data")
	}
	// A bit bucket swallows the first 512 bytes of a read.
	clear(data.Bytes)
	desc(lists.Bytes[0:], 0, 512, sglBitBucket)
	desc(lists.Bytes[16:], data.IOVA, 3584, sglDataBlock)
	io.ok(sgl(OpRead, lists.IOVA, 32, sglLastSegment))
	if !bytes.Equal(data.Bytes[:3584], want[512:]) {
		t.Error("read through a bit bucket placed data wrongly")
	}
	for _, tc := range []struct {
		name string
		cmd  Command
		want Status
	}{
		{"too short", sgl(OpWrite, data.IOVA, 4000, sglDataBlock), StatusDataSGLLengthInvalid},
		{"bit bucket on write", sgl(OpWrite, data.IOVA, 4096, sglBitBucket), StatusSGLTypeInvalid},
		{"unknown type", sgl(OpWrite, data.IOVA, 4096, 0x9), StatusSGLTypeInvalid},
		{"segment length not a multiple of 16", sgl(OpRead, lists.IOVA, 40, sglSegment), StatusInvalidSGLSegment},
		{"last segment list too short", sgl(OpRead, lists.IOVA, 16, sglLastSegment), StatusDataSGLLengthInvalid},
		{"segment list without chain", sgl(OpRead, lists.IOVA, 32, sglSegment), StatusInvalidSGLSegment},
	} {
		t.Run(tc.name, func(t *testing.T) { io.status(tc.cmd, tc.want) })
	}
	// Admin commands must use PRPs.
	h.admin.status(Command{Opcode: OpIdentify, CDW10: 1, Flags: 1 << 6, PRP1: data.IOVA, PRP2: 4096}, StatusInvalidField)
	h.checkNoFaults()
}

func TestDMAFaultsAreCountedNotFailed(t *testing.T) {
	h := newHost(t, Config{Inline: true})
	io := h.ioQueue(1, 8)
	buf := h.alloc(4096)
	if uintptr(buf.IOVA) == uintptr(buf.Ptr()) || buf.IOVA < iovaBase {
		t.Fatalf("IOVA %#x looks like a host address %p", buf.IOVA, buf.Ptr())
	}
	if err := h.c.DMA().Free(buf); err != nil {
		t.Fatal(err)
	}
	if err := h.c.DMA().Free(buf); err == nil {
		t.Error("second Free of the same buffer: no error")
	}
	// Like QEMU behind an IOMMU: status 0, data dropped, fault logged.
	io.ok(rw(OpRead, 1, 0, 8, buf.IOVA, 0))
	if n := h.c.DMAFaults(); n != 1 {
		t.Errorf("DMAFaults = %d after one read into freed memory, want 1", n)
	}
	// Running one byte past a buffer hits the guard page.
	small := h.alloc(4096)
	io.ok(rw(OpRead, 1, 0, 9, small.IOVA, small.IOVA+4096))
	if n := h.c.Stats().DMAFaults; n != 2 {
		t.Errorf("DMAFaults = %d after a read past the end of a buffer, want 2", n)
	}
	if _, err := h.c.DMA().Alloc(0); err == nil {
		t.Error("Alloc(0): no error")
	}
}

// TestCompletionQueueNeverOverflows fills a 4-entry CQ (3 usable slots)
// with 6 commands: the model posts 3, waits for the head doorbell, then
// posts the rest, never overwriting an unconsumed entry.
func TestCompletionQueueNeverOverflows(t *testing.T) {
	modes(t, Config{}, func(t *testing.T, h *host) {
		q := &hostQueue{h: h, id: 1, size: 8, cqSize: 4, sq: h.alloc(8 * 64), cq: h.alloc(4096), phase: 1}
		h.admin.ok(Command{Opcode: OpCreateCQ, PRP1: q.cq.IOVA, CDW10: 3<<16 | 1, CDW11: 1})
		h.admin.ok(Command{Opcode: OpCreateSQ, PRP1: q.sq.IOVA, CDW10: 7<<16 | 1, CDW11: 1<<16 | 1})
		for range 6 {
			q.sq.Bytes[q.tail*64] = OpFlush
			le.PutUint32(q.sq.Bytes[q.tail*64+4:], 1)
			le.PutUint16(q.sq.Bytes[q.tail*64+2:], uint16(q.tail))
			q.tail++
		}
		h.c.Write32(regDB+8, q.tail)
		deadline := time.Now().Add(time.Second)
		for h.c.Stats().CQEsPosted < 3+2 { // 3 I/O plus 2 admin
			if time.Now().After(deadline) {
				t.Fatalf("only %d CQEs posted", h.c.Stats().CQEsPosted)
			}
			time.Sleep(100 * time.Microsecond)
		}
		time.Sleep(5 * time.Millisecond)
		if info, _ := h.c.SubmissionQueue(1); info.Head != 3 {
			t.Errorf("SQ head %d with a full CQ, want 3 (fetching stops)", info.Head)
		}
		if p := h.c.Stats().CQEsPosted; p != 5 {
			t.Fatalf("%d CQEs posted into a CQ with 3 free slots (plus 2 admin), want 5", p)
		}
		var cids []uint16
		for len(cids) < 6 {
			c := q.wait()
			cids = append(cids, c.CID)
		}
		if fmt.Sprint(cids) != "[0 1 2 3 4 5]" {
			t.Errorf("completion cids %v, want 0..5 in order", cids)
		}
		h.checkNoFaults()
	})
}
