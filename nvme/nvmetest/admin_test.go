package nvmetest

import (
	"bytes"
	"testing"
)

func TestIdentifyController(t *testing.T) {
	h := newHost(t, Config{Inline: true, Namespaces: []NamespaceConfig{{}, {LBAShift: 12}}, SGL: true})
	b := h.identify(1, 0)
	u16 := func(off int) uint16 { return le.Uint16(b[off:]) }
	u32 := func(off int) uint32 { return le.Uint32(b[off:]) }
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"VID", uint64(u16(0)), 0x1b36},
		{"SSVID", uint64(u16(2)), 0x1b36},
		{"MDTS", uint64(b[77]), 7},
		{"CNTLID", uint64(u16(78)), 1},
		{"VER", uint64(u32(80)), 0x10400},
		{"OACS format", uint64(u16(256) >> 1 & 1), 1},
		{"ELPE", uint64(b[262]), 63},
		{"SQES", uint64(b[512]), 0x66},
		{"CQES", uint64(b[513]), 0x44},
		{"NN", uint64(u32(516)), 2},
		{"ONCS compare", uint64(u16(520) & 1), 1},
		{"ONCS dsm", uint64(u16(520) >> 2 & 1), 1},
		{"ONCS write zeroes", uint64(u16(520) >> 3 & 1), 1},
		{"VWC", uint64(b[525] & 1), 1},
		{"SGLS", uint64(u32(536) & 3), 1},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("Identify Controller %s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	for _, f := range []struct {
		name     string
		from, to int
		want     string
	}{
		{"SN", 4, 24, "nvmetest-0001       "},
		{"MN", 24, 64, "nvmepoll model                          "},
		{"FR", 64, 72, "1.0     "},
	} {
		if got := string(b[f.from:f.to]); got != f.want {
			t.Errorf("Identify Controller %s = %q, want %q", f.name, got, f.want)
		}
	}
	h.checkNoFaults()
}

func TestIdentifyNamespace(t *testing.T) {
	h := newHost(t, Config{Inline: true, Namespaces: []NamespaceConfig{{Blocks: 1000}, {Blocks: 1 << 18, LBAShift: 12}}})
	for _, tc := range []struct {
		nsid   uint32
		blocks uint64
		flbas  uint8
		lbads  uint8
	}{{1, 1000, 0, 9}, {2, 1 << 18, 1, 12}} {
		b := h.identify(0, tc.nsid)
		if nsze := le.Uint64(b[0:]); nsze != tc.blocks {
			t.Errorf("ns %d NSZE = %d, want %d", tc.nsid, nsze, tc.blocks)
		}
		if ncap := le.Uint64(b[8:]); ncap != tc.blocks {
			t.Errorf("ns %d NCAP = %d, want %d", tc.nsid, ncap, tc.blocks)
		}
		if b[25] != 1 {
			t.Errorf("ns %d NLBAF = %d, want 1 (two formats)", tc.nsid, b[25])
		}
		if b[26]&0xf != tc.flbas {
			t.Errorf("ns %d FLBAS = %d, want %d", tc.nsid, b[26], tc.flbas)
		}
		if got := b[128+4*int(tc.flbas)+2]; got != tc.lbads {
			t.Errorf("ns %d LBAF%d.LBADS = %d, want %d", tc.nsid, tc.flbas, got, tc.lbads)
		}
		if b[33]&7 != 1 {
			t.Errorf("ns %d DLFEAT = %#x, want deallocated reads as zeros", tc.nsid, b[33])
		}
	}
	list := h.identify(2, 0)
	if a, b, c := le.Uint32(list[0:]), le.Uint32(list[4:]), le.Uint32(list[8:]); a != 1 || b != 2 || c != 0 {
		t.Errorf("active namespace list = %d, %d, %d; want 1, 2, 0", a, b, c)
	}
	list = h.identify(2, 1)
	if a := le.Uint32(list[0:]); a != 2 {
		t.Errorf("active namespace list above 1 starts with %d, want 2", a)
	}
	desc := h.identify(3, 2)
	if desc[0] != 2 || desc[1] != 16 || desc[20] != 4 || desc[21] != 1 {
		t.Errorf("namespace descriptors start % x, want an NGUID then a CSI descriptor", desc[:24])
	}
	buf := h.alloc(4096)
	h.admin.status(Command{Opcode: OpIdentify, NSID: 3, PRP1: buf.IOVA}, StatusInvalidNamespace)
	h.admin.status(Command{Opcode: OpIdentify, NSID: 0, PRP1: buf.IOVA}, StatusInvalidNamespace)
	h.admin.status(Command{Opcode: OpIdentify, CDW10: 0x55, PRP1: buf.IOVA}, StatusInvalidField)
	h.checkNoFaults()
}

func TestFeatures(t *testing.T) {
	h := newHost(t, Config{Inline: true, MaxQueuePairs: 1})
	// Ask for 8 queues each, get 1 (0's based 0).
	c := h.admin.ok(Command{Opcode: OpSetFeatures, CDW10: fidNumQueues, CDW11: 7<<16 | 7})
	if c.DW0 != 0 {
		t.Errorf("Number of Queues granted %#x, want 0 (one SQ, one CQ)", c.DW0)
	}
	if c := h.admin.ok(Command{Opcode: OpGetFeatures, CDW10: fidNumQueues}); c.DW0 != 0 {
		t.Errorf("Get Number of Queues = %#x, want 0", c.DW0)
	}
	h.admin.status(Command{Opcode: OpSetFeatures, CDW10: fidNumQueues, CDW11: 0xffff}, StatusInvalidField)
	q := h.alloc(4096)
	h.admin.status(Command{Opcode: OpCreateCQ, PRP1: q.IOVA, CDW10: 3<<16 | 2, CDW11: 1}, StatusInvalidQueueID)
	h.ioQueue(1, 4)
	h.admin.status(Command{Opcode: OpSetFeatures, CDW10: fidNumQueues, CDW11: 0}, StatusCommandSequenceError)
	// As QEMU (qs_created): once a CQ was made, the count is fixed until a
	// reset, even with every I/O queue deleted again.
	h.admin.ok(Command{Opcode: OpDeleteSQ, CDW10: 1})
	h.admin.ok(Command{Opcode: OpDeleteCQ, CDW10: 1})
	h.admin.status(Command{Opcode: OpSetFeatures, CDW10: fidNumQueues, CDW11: 0}, StatusCommandSequenceError)

	if c := h.admin.ok(Command{Opcode: OpGetFeatures, CDW10: fidWriteCache}); c.DW0 != 1 {
		t.Errorf("volatile write cache = %d, want 1 (enabled by default)", c.DW0)
	}
	h.admin.ok(Command{Opcode: OpSetFeatures, CDW10: fidWriteCache, CDW11: 0})
	if c := h.admin.ok(Command{Opcode: OpGetFeatures, CDW10: fidWriteCache}); c.DW0 != 0 {
		t.Errorf("volatile write cache = %d after disabling it", c.DW0)
	}
	if c := h.admin.ok(Command{Opcode: OpGetFeatures, CDW10: 1<<8 | fidWriteCache}); c.DW0 != 1 {
		t.Errorf("default volatile write cache = %d, want 1", c.DW0)
	}
	if v, ok := h.c.Feature(fidNumQueues); !ok || v != 0 {
		t.Errorf("Feature(Number of Queues) = %#x, %v; want 0 (one of each granted)", v, ok)
	}
	if _, ok := h.c.Feature(0x55); ok {
		t.Error("Feature(0x55) reports a feature the model does not have")
	}
	h.admin.ok(Command{Opcode: OpSetFeatures, CDW10: fidArbitration, CDW11: 0x03020103})
	if v, _ := h.c.Feature(fidArbitration); v != 0x03020103 {
		t.Errorf("Feature(Arbitration) = %#x after Set Features", v)
	}
	if c := h.admin.ok(Command{Opcode: OpGetFeatures, CDW10: fidArbitration}); c.DW0 != 0x03020103 {
		t.Errorf("arbitration = %#x, want what was set", c.DW0)
	}
	h.admin.status(Command{Opcode: OpSetFeatures, CDW10: 0x55}, StatusInvalidField)
	h.admin.status(Command{Opcode: OpGetFeatures, CDW10: 0x55}, StatusInvalidField)
	h.admin.status(Command{Opcode: OpSetFeatures, CDW10: 1<<31 | fidArbitration}, StatusFeatureNotSaveable)
	h.admin.status(Command{Opcode: OpSetFeatures, CDW10: fidPowerMgmt, CDW11: 1}, StatusInvalidField)

	n := NewController(t, Config{Inline: true, NoWriteCache: true})
	hn := &host{t: t, c: n}
	hn.enable(4)
	hn.admin.status(Command{Opcode: OpSetFeatures, CDW10: fidWriteCache, CDW11: 1}, StatusInvalidField)
	if b := hn.identify(1, 0); b[525] != 0 {
		t.Errorf("VWC = %#x with NoWriteCache", b[525])
	}
}

func TestQueueCreateDelete(t *testing.T) {
	h := newHost(t, Config{Inline: true, MQES: 63})
	cq := h.alloc(4096)
	sq := h.alloc(4096)
	create := func(op uint8, prp uint64, qid, size int, cdw11 uint32) Command {
		return Command{Opcode: op, PRP1: prp, CDW10: uint32(size-1)<<16 | uint32(qid), CDW11: cdw11}
	}
	h.admin.status(create(OpCreateCQ, cq.IOVA, 1, 65, 1), StatusInvalidQueueSize)
	h.admin.status(create(OpCreateCQ, cq.IOVA, 1, 1, 1), StatusInvalidQueueSize)
	h.admin.status(create(OpCreateCQ, cq.IOVA, 1, 8, 0), StatusInvalidField) // PC=0
	h.admin.status(create(OpCreateCQ, cq.IOVA, 0, 8, 1), StatusInvalidQueueID)
	h.admin.status(create(OpCreateCQ, cq.IOVA+512, 1, 8, 1), StatusPRPOffsetInvalid)
	h.admin.status(create(OpCreateSQ, sq.IOVA, 1, 8, 1<<16|1), StatusInvalidCQ)
	h.admin.ok(create(OpCreateCQ, cq.IOVA, 1, 64, 3|5<<16)) // IEN, vector 5
	if info, _ := h.c.CompletionQueue(1); !info.IRQ || info.IRQVec != 5 || info.Size != 64 {
		t.Errorf("CQ 1 = %+v, want interrupts on, vector 5, 64 entries", info)
	}
	h.admin.status(create(OpCreateCQ, cq.IOVA, 1, 8, 1), StatusInvalidQueueID) // exists
	h.admin.ok(create(OpCreateSQ, sq.IOVA, 1, 64, 1<<16|1))
	h.admin.status(create(OpCreateSQ, sq.IOVA, 1, 8, 1<<16|1), StatusInvalidQueueID)
	h.admin.status(Command{Opcode: OpDeleteCQ, CDW10: 1}, StatusInvalidQueueDeletion)
	h.admin.ok(Command{Opcode: OpDeleteSQ, CDW10: 1})
	h.admin.status(Command{Opcode: OpDeleteSQ, CDW10: 1}, StatusInvalidQueueID)
	h.admin.ok(Command{Opcode: OpDeleteCQ, CDW10: 1})
	h.admin.status(Command{Opcode: OpDeleteCQ, CDW10: 1}, StatusInvalidQueueID)
	h.admin.status(Command{Opcode: 0xc1}, StatusInvalidOpcode)
	h.admin.status(Command{Opcode: OpDoorbellBuf, PRP1: cq.IOVA, PRP2: sq.IOVA}, StatusInvalidOpcode)
}

func TestFormatNVM(t *testing.T) {
	h := newHost(t, Config{Inline: true, Namespaces: []NamespaceConfig{{Blocks: 4096}}})
	ns := h.c.Namespace(1)
	ns.WriteAt(bytes.Repeat([]byte{0xaa}, 4096), 0)
	h.admin.ok(Command{Opcode: OpFormatNVM, NSID: 1, CDW10: 1}) // LBAF1: 4 KiB
	if ns.BlockSize() != 4096 || ns.Blocks() != 512 {
		t.Errorf("after format to LBAF1: %d blocks of %d bytes, want 512 of 4096", ns.Blocks(), ns.BlockSize())
	}
	if ns.Allocated() != 0 {
		t.Errorf("%d bytes still allocated after format", ns.Allocated())
	}
	b := h.identify(0, 1)
	if b[26] != 1 || le.Uint64(b) != 512 {
		t.Errorf("Identify Namespace after format: FLBAS %d NSZE %d, want 1 and 512", b[26], le.Uint64(b))
	}
	h.admin.status(Command{Opcode: OpFormatNVM, NSID: 1, CDW10: 2}, StatusInvalidFormat)
	h.admin.status(Command{Opcode: OpFormatNVM, NSID: 1, CDW10: 1 << 5}, StatusInvalidFormat) // PI
	h.admin.status(Command{Opcode: OpFormatNVM, NSID: 7}, StatusInvalidNamespace)
	h.admin.ok(Command{Opcode: OpFormatNVM, NSID: 0xffffffff})
	if ns.BlockSize() != 512 {
		t.Errorf("format of all namespaces to LBAF0 left block size %d", ns.BlockSize())
	}
}

func TestLogPages(t *testing.T) {
	h := newHost(t, Config{Inline: true})
	io := h.ioQueue(1, 8)
	buf := h.alloc(64 << 10)
	p1, p2 := h.prps(buf, 0, 100*512)
	// 1000 512-byte units written (1 thousand), 1001 read (2, rounded up).
	for range 10 {
		io.ok(rw(OpWrite, 1, 0, 100, p1, p2))
	}
	for range 10 {
		io.ok(rw(OpRead, 1, 0, 100, p1, p2))
	}
	io.ok(rw(OpRead, 1, 0, 1, p1, 0))
	io.status(rw(OpRead, 1, 1<<40, 1, p1, 0), StatusLBAOutOfRange)
	h.c.SetHealth(0x02, 350)
	h.checkNoFaults()

	page := h.alloc(8192)
	get := func(lid uint8, nsid uint32, n int, off uint64) Completion {
		p1, p2 := h.prps(page, 0, n)
		return h.admin.do(Command{Opcode: OpGetLogPage, NSID: nsid, PRP1: p1, PRP2: p2,
			CDW10: uint32(n/4-1)<<16 | uint32(lid), CDW12: uint32(off), CDW13: uint32(off >> 32)})
	}
	if c := get(lidHealth, 0xffffffff, 512, 0); c.Status != 0 {
		t.Fatalf("SMART log: %v", c.Status)
	}
	b := page.Bytes
	for _, f := range []struct {
		name      string
		got, want uint64
	}{
		{"critical warning", uint64(b[0]), 2},
		{"temperature", uint64(le.Uint16(b[1:])), 350},
		{"data units read", le.Uint64(b[32:]), 2},
		{"data units written", le.Uint64(b[48:]), 1},
		{"host read commands", le.Uint64(b[64:]), 11},
		{"host write commands", le.Uint64(b[80:]), 10},
		{"error log entries", le.Uint64(b[176:]), 1},
	} {
		if f.got != f.want {
			t.Errorf("SMART %s = %d, want %d", f.name, f.got, f.want)
		}
	}
	// An offset read gets the tail of the log.
	if c := get(lidHealth, 0xffffffff, 16, 32); c.Status != 0 || le.Uint64(b) != 2 {
		t.Errorf("SMART log at offset 32: status %v, first counter %d; want data units read 2", c.Status, le.Uint64(b))
	}
	if c := get(lidError, 0, 128, 0); c.Status != 0 {
		t.Fatalf("error log: %v", c.Status)
	}
	if n, sqid, st, lba := le.Uint64(b), le.Uint16(b[8:]), Status(le.Uint16(b[12:])>>1), le.Uint64(b[16:]); n != 1 || sqid != 1 || st.Code() != StatusLBAOutOfRange || lba != 1<<40 {
		t.Errorf("error log entry 0: count %d sqid %d status %v lba %#x; want 1, 1, LBA out of range, 1<<40", n, sqid, st, lba)
	}
	if le.Uint64(b[64:]) != 0 {
		t.Errorf("error log entry 1 has count %d, want an empty entry", le.Uint64(b[64:]))
	}
	if c := get(lidHealth, 1, 512, 0); c.Status.Code() != StatusInvalidField {
		t.Errorf("per-namespace SMART log: %v, want Invalid Field", c.Status)
	}
	// QEMU refuses NSID 0 for the SMART log; a driver must send 0xffffffff.
	for _, nsid := range []uint32{0, 2} {
		if c := get(lidHealth, nsid, 512, 0); c.Status.Code() != StatusInvalidNamespace {
			t.Errorf("SMART log for NSID %d: %v, want Invalid Namespace", nsid, c.Status)
		}
	}
	if c := get(0x70, 0, 512, 0); c.Status.Code() != StatusInvalidLogPage {
		t.Errorf("log page 0x70: %v, want Invalid Log Page", c.Status)
	}
	if c := get(lidHealth, 0xffffffff, 512, 512); c.Status.Code() != StatusInvalidField {
		t.Errorf("SMART log at offset 512: %v, want Invalid Field", c.Status)
	}
}
