package nvmetest

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

func TestCAPAndVersion(t *testing.T) {
	c := NewController(t, Config{MQES: 255, TO: 20})
	cap := uint64(c.Read32(regCAP)) | uint64(c.Read32(regCAP+4))<<32
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"MQES", cap & 0xffff, 255},
		{"CQR", cap >> 16 & 1, 1},
		{"TO", cap >> 24 & 0xff, 20},
		{"DSTRD", cap >> 32 & 0xf, 0},
		{"CSS NVM", cap >> 37 & 1, 1},
		{"MPSMIN", cap >> 48 & 0xf, 0},
		{"MPSMAX", cap >> 52 & 0xf, MPSMax},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("CAP.%s = %d, want %d (CAP %#x)", ch.name, ch.got, ch.want, cap)
		}
	}
	if v := c.Read32(regVS); v != 0x00010400 {
		t.Errorf("VS = %#x, want 1.4.0", v)
	}
	d := NewController(t, Config{})
	if mqes := d.Read32(regCAP) & 0xffff; mqes != 2047 {
		t.Errorf("default CAP.MQES = %d, want 2047", mqes)
	}
	if to := d.Read32(regCAP) >> 24; to != 1 {
		t.Errorf("default CAP.TO = %d, want 1", to)
	}
}

func TestInterruptMask(t *testing.T) {
	c := NewController(t, Config{Inline: true})
	c.Write32(regINTMS, 0x5)
	c.Write32(regINTMC, 0x1)
	if m := c.Read32(regINTMS); m != 0x4 {
		t.Errorf("INTMS after set 0x5, clear 0x1 = %#x, want 0x4", m)
	}
}

func TestEnableDisable(t *testing.T) {
	h := newHost(t, Config{})
	if h.c.Read32(regCSTS)&cstsRDY == 0 {
		t.Fatal("RDY is 0 after enable")
	}
	if got := uint64(h.c.Read32(regASQ)) | uint64(h.c.Read32(regASQ+4))<<32; got != h.admin.sq.IOVA {
		t.Errorf("ASQ reads %#x, wrote %#x", got, h.admin.sq.IOVA)
	}
	h.ioQueue(1, 8)
	if _, ok := h.c.SubmissionQueue(1); !ok {
		t.Fatal("I/O SQ 1 missing after create")
	}
	h.c.Write32(regCC, h.c.Read32(regCC)&^ccEN)
	h.waitCSTS(cstsRDY, 0)
	if _, ok := h.c.SubmissionQueue(1); ok {
		t.Error("I/O SQ 1 survived a controller reset")
	}
	if _, ok := h.c.CompletionQueue(0); ok {
		t.Error("admin CQ survived a controller reset")
	}
	// Enable again with fresh admin queues; it works as before.
	h.enable(4)
	h.identify(1, 0)
	h.checkNoFaults()
}

func TestEnableValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		cc   uint32
		aqa  uint32
		asq  uint64
		want string
	}{
		{"iosqes", ccEN | 4<<20, 0x000f000f, 0x1000, "IOSQES"},
		{"iocqes", ccEN | 6<<16, 0x000f000f, 0x1000, "IOCQES"},
		{"mps", ccEN | 6<<16 | 4<<20 | 9<<7, 0x000f000f, 0x1000, "MPS"},
		{"aqa", ccEN | 6<<16 | 4<<20, 0x000f0000, 0x1000, "AQA"},
		{"asq", ccEN | 6<<16 | 4<<20, 0x000f000f, 0x1200, "ASQ"},
		{"css", ccEN | 6<<16 | 4<<20 | 1<<4, 0x000f000f, 0x1000, "CSS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewController(t, Config{Inline: true})
			c.Write32(regAQA, tc.aqa)
			c.Write32(regASQ, uint32(tc.asq))
			c.Write32(regACQ, 0x2000)
			c.Write32(regCC, tc.cc)
			if s := c.Read32(regCSTS); s&cstsCFS == 0 || s&cstsRDY != 0 {
				t.Fatalf("CSTS = %#x after a bad enable, want CFS and not RDY", s)
			}
			if !strings.Contains(c.EnableError(), tc.want) {
				t.Errorf("EnableError() = %q, want it to name %s", c.EnableError(), tc.want)
			}
			// A reset clears CFS.
			c.Write32(regCC, 0)
			if s := c.Read32(regCSTS); s != 0 {
				t.Errorf("CSTS = %#x after reset, want 0", s)
			}
		})
	}
}

func TestReadyDelayAndNeverReady(t *testing.T) {
	c := NewController(t, Config{ReadyDelay: 30 * time.Millisecond})
	h := &host{t: t, c: c}
	start := time.Now()
	h.enable(4)
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("RDY after %v, want at least ReadyDelay 30ms", d)
	}

	c = NewController(t, Config{NeverReady: true, Inline: true})
	c.Write32(regAQA, 0x00030003)
	c.Write32(regASQ, 0x1000)
	c.Write32(regACQ, 0x2000)
	c.Write32(regCC, ccEN|6<<16|4<<20)
	time.Sleep(5 * time.Millisecond)
	if s := c.Read32(regCSTS); s != 0 {
		t.Errorf("CSTS = %#x with NeverReady, want 0", s)
	}

	c = NewController(t, Config{FailEnable: true, Inline: true})
	c.Write32(regAQA, 0x00030003)
	c.Write32(regASQ, 0x1000)
	c.Write32(regACQ, 0x2000)
	c.Write32(regCC, ccEN|6<<16|4<<20)
	if s := c.Read32(regCSTS); s&cstsCFS == 0 {
		t.Errorf("CSTS = %#x with FailEnable, want CFS", s)
	}
}

// A controller that never disables keeps RDY and its queues when CC.EN is
// cleared: the I/O queue made before still takes commands.
func TestNeverDisables(t *testing.T) {
	h := newHost(t, Config{Inline: true, NeverDisables: true})
	io := h.ioQueue(1, 8)
	h.c.Write32(regCC, h.c.Read32(regCC)&^ccEN)
	if s := h.c.Read32(regCSTS); s&cstsRDY == 0 {
		t.Errorf("CSTS = %#x after CC.EN cleared with NeverDisables, want RDY still set", s)
	}
	if _, ok := h.c.SubmissionQueue(1); !ok {
		t.Fatal("I/O SQ 1 is gone after CC.EN cleared with NeverDisables")
	}
	io.ok(Command{Opcode: OpFlush, NSID: 1})
}

func TestShutdown(t *testing.T) {
	h := newHost(t, Config{ShutdownDelay: 20 * time.Millisecond})
	h.c.Write32(regCC, h.c.Read32(regCC)|1<<14) // SHN normal
	if s := h.c.Read32(regCSTS) >> 2 & 3; s != 1 {
		t.Errorf("SHST = %d right after shutdown request, want 1 (processing)", s)
	}
	h.waitCSTS(3<<2, shstComplete)
	// After shutdown the controller takes no commands.
	h.admin.submit(Command{Opcode: OpIdentify, CDW10: 1, PRP1: h.alloc(4096).IOVA})
	h.admin.none(10 * time.Millisecond)
	// Reset and enable bring it back.
	h.c.Write32(regCC, 0)
	h.waitCSTS(0xf, 0)
	h.enable(4)
	h.identify(1, 0)
}

func TestGoneAndClosedReadAllOnes(t *testing.T) {
	h := newHost(t, Config{Inline: true})
	h.c.SetGone(true)
	for _, off := range []int{regCAP, regVS, regCC, regCSTS} {
		if v := h.c.Read32(off); v != 0xffffffff {
			t.Errorf("Read32(%#x) = %#x on a gone device, want all ones", off, v)
		}
	}
	h.admin.submit(Command{Opcode: OpIdentify, CDW10: 1, PRP1: h.alloc(4096).IOVA})
	h.admin.none(5 * time.Millisecond)
	h.c.SetGone(false)
	// The doorbell written while gone was lost, as on hardware; the next
	// one carries the same tail and the command runs.
	h.c.Write32(regDB, h.admin.tail)
	if c := h.admin.wait(); c.Status != 0 {
		t.Errorf("status %v after the device came back", c.Status)
	}
	if err := h.c.Close(); err != nil {
		t.Fatal(err)
	}
	if v := h.c.Read32(regCSTS); v != 0xffffffff {
		t.Errorf("CSTS = %#x after Close, want all ones", v)
	}
	if err := h.c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestFatal(t *testing.T) {
	h := newHost(t, Config{})
	h.c.SetFatal()
	if s := h.c.Read32(regCSTS); s&cstsCFS == 0 {
		t.Fatalf("CSTS = %#x after SetFatal, want CFS", s)
	}
	h.admin.submit(Command{Opcode: OpIdentify, CDW10: 1, PRP1: h.alloc(4096).IOVA})
	h.admin.none(10 * time.Millisecond)
	// Recovery: reset clears CFS and a new enable works.
	h.c.Write32(regCC, 0)
	h.waitCSTS(cstsRDY|cstsCFS, 0)
	h.enable(4)
	h.identify(1, 0)
}

func TestDoorbellValidation(t *testing.T) {
	h := newHost(t, Config{Inline: true, MaxQueuePairs: 2})
	if _, err := h.c.Doorbell(0x1000 + 8*3); err == nil {
		t.Error("Doorbell for queue 3 with MaxQueuePairs 2: no error")
	}
	if _, err := h.c.Doorbell(0x1002); err == nil {
		t.Error("Doorbell at unaligned 0x1002: no error")
	}
	h.c.Write32(regDB, 16)  // SQ tail == size: out of range
	h.c.Write32(regDB+8, 1) // SQ 1 does not exist
	h.c.Write32(regDB+4, 3) // CQ head past the tail
	s := h.c.Stats()
	if s.InvalidDoorbellWrites != 3 {
		t.Errorf("InvalidDoorbellWrites = %d, want 3", s.InvalidDoorbellWrites)
	}
	h.identify(1, 0)
	s = h.c.Stats()
	if s.SQDoorbellWrites != 1 || s.CQDoorbellWrites != 1 || s.AdminCommands[OpIdentify] != 1 {
		t.Errorf("stats after one Identify: SQ db %d, CQ db %d, identify %d; want 1 each",
			s.SQDoorbellWrites, s.CQDoorbellWrites, s.AdminCommands[OpIdentify])
	}
}

func TestWorkerExitsOnClose(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 5 {
		c, err := New(Config{ReadyDelay: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		h := &host{t: t, c: c}
		h.alloc(4096)
		c.Write32(regAQA, 0x00030003)
		c.Write32(regASQ, 0x1000)
		c.Write32(regACQ, 0x2000)
		c.Write32(regCC, ccEN|6<<16|4<<20) // arms the hour-long ready timer
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if n := c.Memory().Mapped(); n != 0 {
			t.Errorf("%d DMA buffers still mapped after Close", n)
		}
	}
	deadline := time.Now().Add(time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after closing 5 controllers, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Namespaces: []NamespaceConfig{{LBAShift: 10}}},
		{MDTS: 16},
		{MaxQueuePairs: -1},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v): no error", cfg)
		}
	}
}

// Asynchronous events as QEMU raises them: only with a request
// outstanding, one per type until the host reads the type's log page.
func TestAsyncEventOnInvalidDoorbell(t *testing.T) {
	h := newHost(t, Config{Inline: true})
	aer := h.admin.submit(Command{Opcode: OpAsyncEvent})
	h.admin.none(2 * time.Millisecond) // outstanding until something happens
	h.c.Write32(regDB+8*3, 1)          // SQ 3 does not exist
	c := h.admin.wait()
	if c.CID != aer || c.Status != 0 || c.DW0 != 0x01<<16|0x00<<8|0 {
		t.Errorf("AER completion cid %d status %v DW0 %#x, want cid %d, success, DW0 0x10000 (error event, invalid doorbell, log 1)", c.CID, c.Status, c.DW0, aer)
	}
	// With no request outstanding the bad write raises nothing.
	h.c.Write32(regDB+8*3, 1)
	aer = h.admin.submit(Command{Opcode: OpAsyncEvent})
	h.admin.none(2 * time.Millisecond)
	// Error events stay masked until the Error log is read without
	// Retain Asynchronous Event (CDW10 bit 15).
	h.c.Write32(regDB, 99) // admin SQ tail out of range
	h.admin.none(2 * time.Millisecond)
	page := h.alloc(4096)
	getErrorLog := func(rae uint32) Completion {
		return h.admin.do(Command{Opcode: OpGetLogPage, PRP1: page.IOVA, CDW10: rae<<15 | 15<<16 | lidError})
	}
	if c := getErrorLog(1); c.Status != 0 {
		t.Fatalf("error log with RAE: %v", c.Status)
	}
	h.admin.none(2 * time.Millisecond)
	h.admin.submit(Command{Opcode: OpGetLogPage, PRP1: page.IOVA, CDW10: 15<<16 | lidError})
	c = h.admin.wait() // the AER, posted as the log read unmasks it
	if c.CID != aer || c.DW0 != 0x01<<16|0x01<<8 {
		t.Errorf("after the error log read: cid %d DW0 %#x, want the AER (cid %d) with DW0 0x10100 (invalid doorbell value)", c.CID, c.DW0, aer)
	}
	if c := h.admin.wait(); c.Status != 0 {
		t.Errorf("error log without RAE: %v", c.Status)
	}
	for range 4 {
		h.admin.submit(Command{Opcode: OpAsyncEvent})
	}
	h.admin.status(Command{Opcode: OpAsyncEvent}, StatusAERLimitExceeded)
	if s := h.c.Stats(); s.InvalidDoorbellWrites != 3 {
		t.Errorf("InvalidDoorbellWrites = %d, want 3", s.InvalidDoorbellWrites)
	}
}

// A ring the controller cannot reach by DMA is fatal, as on QEMU
// (nvme_process_sq, nvme_post_cqes): CSTS.CFS, not a zeroed command run or
// a completion lost without a trace.
func TestUnmappedRingIsFatal(t *testing.T) {
	for _, tc := range []struct {
		name  string
		unmap func(q *hostQueue) dma.Buffer
	}{
		{"SQ", func(q *hostQueue) dma.Buffer { return q.sq }},
		{"CQ", func(q *hostQueue) dma.Buffer { return q.cq }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, Config{Inline: true})
			io := h.ioQueue(1, 8)
			(&Command{Opcode: OpFlush, NSID: 1, CID: 5}).Encode(io.sq.Bytes[0:])
			if err := h.c.DMA().Free(tc.unmap(io)); err != nil {
				t.Fatal(err)
			}
			h.c.Write32(regDB+8, 1)
			if s := h.c.Read32(regCSTS); s&cstsCFS == 0 {
				t.Errorf("CSTS %#x after a command on a queue whose %s is unmapped, want CFS", s, tc.name)
			}
			if h.c.DMAFaults() == 0 {
				t.Error("the model counted no DMA fault")
			}
		})
	}
}
