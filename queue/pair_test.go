package queue

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

func TestCommandWireLayout(t *testing.T) {
	cmd := Command{
		Opcode: 0x02, Flags: 0x40, CID: 0x0102, NSID: 0x03040506,
		CDW2: 0x0708090a, CDW3: 0x0b0c0d0e, MPTR: 0x1112131415161718,
		PRP1: 0x2122232425262728, PRP2: 0x3132333435363738,
		CDW10: 0x41424344, CDW11: 0x45464748, CDW12: 0x494a4b4c,
		CDW13: 0x4d4e4f50, CDW14: 0x51525354, CDW15: 0x55565758,
	}
	// Little endian, field by field, as the NVMe spec lays out an SQE.
	want := []byte{
		0x02, 0x40, 0x02, 0x01, 0x06, 0x05, 0x04, 0x03, // CDW0, NSID
		0x0a, 0x09, 0x08, 0x07, 0x0e, 0x0d, 0x0c, 0x0b, // CDW2, CDW3
		0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, // MPTR
		0x28, 0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21, // PRP1
		0x38, 0x37, 0x36, 0x35, 0x34, 0x33, 0x32, 0x31, // PRP2
		0x44, 0x43, 0x42, 0x41, 0x48, 0x47, 0x46, 0x45, // CDW10, CDW11
		0x4c, 0x4b, 0x4a, 0x49, 0x50, 0x4f, 0x4e, 0x4d, // CDW12, CDW13
		0x54, 0x53, 0x52, 0x51, 0x58, 0x57, 0x56, 0x55, // CDW14, CDW15
	}

	var m [SQESize]byte
	cmd.Marshal(m[:])
	if !bytes.Equal(m[:], want) {
		t.Errorf("Marshal:\n got % x\nwant % x", m, want)
	}
	if got := ParseCommand(want); got != cmd {
		t.Errorf("ParseCommand = %+v, want %+v", got, cmd)
	}

	// Post copies the struct into the ring with one store; the bytes the
	// device reads must be the same, at slot tail*64.
	p, _, cfg := testPair(t, 1, 4)
	for i := 0; i < 2; i++ { // slot 0 and slot 1 of the ring
		cid, err := p.Acquire()
		if err != nil {
			t.Fatal(err)
		}
		c := cmd
		c.CID = cid
		p.Post(&c)
		w := append([]byte(nil), want...)
		w[2], w[3] = byte(cid), byte(cid>>8)
		if got := cfg.SQ.Bytes[i*SQESize : (i+1)*SQESize]; !bytes.Equal(got, w) {
			t.Errorf("ring slot %d after Post:\n got % x\nwant % x", i, got, w)
		}
	}
}

func TestCompletionWireLayout(t *testing.T) {
	// DW0, DW1, DW2 = SQID 0x0001 | SQHD 0x0002, DW3 = status | P | CID 0.
	// Status 0x4281 = DNR, SCT 2 (media), SC 0x81 (unrecovered read error).
	dw3 := uint32(0x4281)<<17 | 1<<16 | 0x0000
	raw := []byte{
		0x78, 0x56, 0x34, 0x12, 0xf0, 0xde, 0xbc, 0x9a,
		0x02, 0x00, 0x01, 0x00,
		byte(dw3), byte(dw3 >> 8), byte(dw3 >> 16), byte(dw3 >> 24),
	}
	want := Completion{DW0: 0x12345678, DW1: 0x9abcdef0, SQHead: 2, SQID: 1, CID: 0, Status: 0x4281}

	got, phase := ParseCompletion(raw)
	if got != want || !phase {
		t.Errorf("ParseCompletion = %+v phase %v, want %+v phase true", got, phase, want)
	}
	if sc, sct, dnr := got.Status&0xff, got.Status>>8&7, got.Status>>14&1; sc != 0x81 || sct != 2 || dnr != 1 {
		t.Errorf("status fields SC %#x SCT %d DNR %d, want 0x81 2 1", sc, sct, dnr)
	}

	var b [CQESize]byte
	PostCompletion(b[:], want, true)
	if !bytes.Equal(b[:], raw) {
		t.Errorf("PostCompletion:\n got % x\nwant % x", b, raw)
	}

	// The same bytes in the ring, read by Next.
	p, f, _ := testPair(t, 1, 4)
	submit(t, p)
	f.postRaw(raw)
	c, ok, err := p.Next()
	if err != nil || !ok || c != want {
		t.Errorf("Next = %+v, %v, %v; want %+v, true, nil", c, ok, err, want)
	}
}

func TestNewClearsStaleCQ(t *testing.T) {
	cfg := Config{
		ID: 1, Depth: 4,
		SQ: mapDMA(t, 4*SQESize, fakeIOVA), CQ: mapDMA(t, 4*CQESize, fakeIOVA+4096),
		SQTail: DoorbellFunc(func(uint32) {}), CQHead: DoorbellFunc(func(uint32) {}),
	}
	// Leftovers from an earlier queue with the phase bit set would look
	// like fresh completions.
	for i := range cfg.CQ.Bytes {
		cfg.CQ.Bytes[i] = 0xff
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok, err := p.Next(); ok || err != nil {
		t.Fatalf("Next on a new pair = %+v, %v, %v; want an empty CQ", c, ok, err)
	}
}

// Many laps with a depth that does not divide the batch sizes, so the tail,
// head and phase wrap at every position.
func TestWrapAroundManyLaps(t *testing.T) {
	const depth = 5
	p, f, _ := testPair(t, 3, depth)
	completed := 0
	for round := 0; round < 200; round++ {
		batch := round%(depth-1) + 1 // 1..4
		want := map[uint16]bool{}
		for i := 0; i < batch; i++ {
			want[submit(t, p)] = true
		}
		if !p.UpdateTail() {
			t.Fatal("UpdateTail after posting did not ring")
		}
		f.process(-1)
		for i := 0; i < batch; i++ {
			c, ok, err := p.Next()
			if err != nil || !ok {
				t.Fatalf("round %d: Next = %v, %v after %d of %d", round, ok, err, i, batch)
			}
			if !want[c.CID] {
				t.Fatalf("round %d: completion for cid %d, posted %v", round, c.CID, want)
			}
			delete(want, c.CID)
			if c.SQID != 3 {
				t.Fatalf("SQID %d", c.SQID)
			}
			p.Release(c.CID)
			completed++
		}
		if _, ok, err := p.Next(); ok || err != nil {
			t.Fatalf("round %d: CQ not empty after the batch: %v %v", round, ok, err)
		}
		p.UpdateHead()
		if f.cqHead != f.cqTail {
			t.Fatalf("round %d: CQ head doorbell %d, controller tail %d", round, f.cqHead, f.cqTail)
		}
	}
	laps := completed / depth
	if laps < 50 {
		t.Fatalf("only %d laps", laps)
	}
	s := p.Stats()
	if s.Posted != uint64(completed) || s.Completed != uint64(completed) || s.Bad() != 0 {
		t.Errorf("stats %+v after %d I/Os", s, completed)
	}
	if p.Free() != depth-1 || p.Outstanding() != 0 {
		t.Errorf("after the run: %d free, %d outstanding; want %d, 0", p.Free(), p.Outstanding(), depth-1)
	}
}

func TestFullAfterDepthMinusOne(t *testing.T) {
	p, _, _ := testPair(t, 1, 8)
	seen := map[uint16]bool{}
	for i := 0; i < 7; i++ {
		cid, err := p.Acquire()
		if err != nil {
			t.Fatalf("Acquire %d of 7: %v", i+1, err)
		}
		if cid >= 7 || seen[cid] {
			t.Fatalf("Acquire %d returned cid %d (seen %v)", i+1, cid, seen)
		}
		seen[cid] = true
	}
	if _, err := p.Acquire(); !errors.Is(err, ErrFull) {
		t.Fatalf("Acquire with all 7 slots out: %v, want ErrFull", err)
	}
	p.Release(4)
	p.Release(2)
	// LIFO: the slot released last comes back first.
	if cid, err := p.Acquire(); err != nil || cid != 2 {
		t.Fatalf("Acquire after releasing 4 then 2 = %d, %v; want 2", cid, err)
	}
}

func TestBadCompletions(t *testing.T) {
	const id, depth = 2, 8
	tests := []struct {
		name string
		kind CQEErrorKind
		cqe  func(posted uint16) Completion
		msg  string
	}{
		{"cid past slots", UnknownCID, func(uint16) Completion { return Completion{CID: depth - 1, SQID: id} }, "cid 7 is out of range (7 slots)"},
		{"cid ffff", UnknownCID, func(uint16) Completion { return Completion{CID: 0xffff, SQID: id} }, "cid 65535"},
		{"free cid", IdleCID, func(uint16) Completion { return Completion{CID: 5, SQID: id} }, "cid 5 has no command outstanding"},
		{"SQ head at depth", BadSQHead, func(c uint16) Completion { return Completion{CID: c, SQID: id, SQHead: depth} }, "SQ head 8 is past the ring (depth 8)"},
		{"other SQ", WrongSQID, func(c uint16) Completion { return Completion{CID: c, SQID: id + 1} }, "names SQ 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, f, _ := testPair(t, id, depth)
			cid := submit(t, p)
			p.UpdateTail()
			f.fetch()
			f.post(tt.cqe(cid))

			c, ok, err := p.Next()
			var ce *CQEError
			if ok || !errors.As(err, &ce) {
				t.Fatalf("Next = %+v, %v, %v; want a *CQEError", c, ok, err)
			}
			if ce.Kind != tt.kind {
				t.Errorf("Kind = %v, want %v", ce.Kind, tt.kind)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
			s := p.Stats()
			if s.BadCQEs[tt.kind] != 1 || s.Bad() != 1 || s.Completed != 0 {
				t.Errorf("stats after one bad CQE: %+v", s)
			}
			// Nothing changed hands: the command is still outstanding and
			// its real completion still works; then every slot is free.
			if p.Outstanding() != 1 || p.Free() != depth-2 {
				t.Errorf("after the bad CQE: %d outstanding, %d free; want 1, %d", p.Outstanding(), p.Free(), depth-2)
			}
			f.post(Completion{CID: cid, SQID: id, SQHead: 1})
			if c, ok, err := p.Next(); !ok || err != nil || c.CID != cid {
				t.Fatalf("the real CQE after the bad one: %+v, %v, %v", c, ok, err)
			}
			p.Release(cid)
			if p.Free() != depth-1 || p.Outstanding() != 0 {
				t.Errorf("at the end: %d free, %d outstanding", p.Free(), p.Outstanding())
			}
			if !p.UpdateHead() || f.cqHead != 2 {
				t.Errorf("CQ head doorbell %d, want 2 (past the bad and the good CQE)", f.cqHead)
			}
		})
	}
}

func TestDuplicateCompletion(t *testing.T) {
	p, f, _ := testPair(t, 1, 8)
	cid := submit(t, p)
	p.UpdateTail()
	f.process(-1)
	f.post(Completion{CID: cid, SQID: 1, SQHead: 1}) // the same again
	if _, ok, err := p.Next(); !ok || err != nil {
		t.Fatalf("first CQE: %v %v", ok, err)
	}
	_, ok, err := p.Next()
	var ce *CQEError
	if ok || !errors.As(err, &ce) || ce.Kind != IdleCID {
		t.Fatalf("duplicate CQE: ok %v, err %v; want IdleCID", ok, err)
	}
	// The duplicate did not release the slot: it is still the caller's.
	if p.Free() != 6 {
		t.Fatalf("%d free slots after a duplicate CQE, want 6", p.Free())
	}
	p.Release(cid)
	// A CQE for an acquired but never posted slot is just as idle.
	cid = submitNoPost(t, p)
	f.post(Completion{CID: cid, SQID: 1, SQHead: 1})
	if _, _, err := p.Next(); !errors.As(err, &ce) || ce.Kind != IdleCID {
		t.Fatalf("CQE for an unposted slot: %v; want IdleCID", err)
	}
	if got := p.Stats().BadCQEs[IdleCID]; got != 2 {
		t.Errorf("IdleCID count %d, want 2", got)
	}
}

func submitNoPost(t *testing.T, p *Pair) uint16 {
	cid, err := p.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	return cid
}

func TestDoorbellsOncePerBatch(t *testing.T) {
	p, f, _ := testPair(t, 1, 32)
	if p.UpdateTail() || p.UpdateHead() {
		t.Fatal("doorbell rung with nothing posted or reaped")
	}
	for i := 0; i < 20; i++ {
		submit(t, p)
	}
	if f.sqRings != 0 {
		t.Fatal("Post rang the doorbell")
	}
	p.UpdateTail()
	p.UpdateTail()
	if f.sqRings != 1 || f.sqTail != 20 {
		t.Fatalf("after 20 posts and two UpdateTail: %d SQ writes, tail %d; want 1, 20", f.sqRings, f.sqTail)
	}
	f.process(-1)
	for i := 0; i < 20; i++ {
		c, ok, err := p.Next()
		if !ok || err != nil {
			t.Fatal(ok, err)
		}
		p.Release(c.CID)
	}
	if f.cqRings != 0 {
		t.Fatal("Next rang the doorbell")
	}
	p.UpdateHead()
	p.UpdateHead()
	if f.cqRings != 1 || f.cqHead != 20 {
		t.Fatalf("after 20 reaps and two UpdateHead: %d CQ writes, head %d; want 1, 20", f.cqRings, f.cqHead)
	}
	if s := p.Stats(); s.SQDoorbells != 1 || s.CQDoorbells != 1 {
		t.Errorf("stats count %d SQ and %d CQ doorbells, want 1 and 1", s.SQDoorbells, s.CQDoorbells)
	}
}

// TestUpdateHeadSlack: with a CQ of 8 entries behind an SQ of 4 (slack 4),
// UpdateHead writes the head only once more than 4 reaped entries are
// unwritten, across CQ laps, and the controller never finds the CQ full
// (the fake controller fails the test if it does).
func TestUpdateHeadSlack(t *testing.T) {
	p, f, _ := testPairCQ(t, 1, 4, 8)
	if p.CQDepth() != 8 || p.Depth() != 4 {
		t.Fatalf("depths SQ %d CQ %d, want 4 and 8", p.Depth(), p.CQDepth())
	}
	reaped := 0
	for round := 0; round < 40; round++ {
		n := 1 + round%3 // batches of 1, 2 and 3 commands: the slots
		for i := 0; i < n; i++ {
			submit(t, p)
		}
		p.UpdateTail()
		f.process(-1)
		reaped += reapAll(t, p)
		wrote := p.UpdateHead()
		lag := (p.head + 8 - f.cqHead) % 8 // reaped entries the controller was not told of
		switch {
		case wrote && lag != 0:
			t.Fatalf("round %d: UpdateHead wrote, but the controller's head %d lags the host's %d", round, f.cqHead, p.head)
		case !wrote && lag > 4:
			t.Fatalf("round %d: %d reaped entries unwritten, more than the slack of 4", round, lag)
		}
	}
	// Written each time more than 4 are unwritten: every 5 to 7 entries.
	if f.cqRings < reaped/7 || f.cqRings > reaped/5 {
		t.Errorf("%d reaped entries: %d CQ head writes, want %d..%d", reaped, f.cqRings, reaped/7, reaped/5)
	}
}

func TestNewRejects(t *testing.T) {
	ring := func(n int) dma.Buffer { return mapDMA(t, n, fakeIOVA) }
	db := DoorbellFunc(func(uint32) {})
	good := func() Config {
		return Config{ID: 1, Depth: 16, SQ: ring(16 * SQESize), CQ: ring(16 * CQESize), PRP: ring(15 * 4096), SQTail: db, CQHead: db}
	}
	if _, err := New(good()); err != nil {
		t.Fatalf("good config: %v", err)
	}
	tests := []struct {
		name   string
		change func(*Config)
		msg    string
	}{
		{"depth 0", func(c *Config) { c.Depth = 0 }, "depth 0 is outside 2..65536"},
		{"depth 1", func(c *Config) { c.Depth = 1 }, "depth 1 is outside"},
		{"depth 65537", func(c *Config) { c.Depth = 65537 }, "depth 65537 is outside"},
		{"SQ too small", func(c *Config) { c.SQ.Bytes = c.SQ.Bytes[:16*SQESize-1] }, "SQ ring is 1023 bytes, depth 16 needs 1024"},
		{"CQ too small", func(c *Config) { c.CQ.Bytes = c.CQ.Bytes[:16*CQESize-1] }, "CQ ring is 255 bytes, depth 16 needs 256"},
		{"CQ smaller than SQ", func(c *Config) { c.CQDepth = 8 }, "CQ depth 8 is outside 16..65536"},
		{"CQ deeper than its ring", func(c *Config) { c.CQDepth = 32 }, "CQ ring is 256 bytes, depth 32 needs 512"},
		{"PRP too small", func(c *Config) { c.PRP.Bytes = c.PRP.Bytes[:14*4096] }, "PRP area is 57344 bytes, 15 slots of 4096-byte pages need 61440"},
		{"SQ misaligned", func(c *Config) { c.SQ = ring(2*16*SQESize).Slice(16, 16*SQESize) }, "not 64-byte aligned"},
		{"CQ IOVA misaligned", func(c *Config) { c.CQ.IOVA += 4 }, "not 16-byte aligned"},
		{"no SQ doorbell", func(c *Config) { c.SQTail = nil }, "doorbells are required"},
		{"page size", func(c *Config) { c.PageSize = 3000 }, "page size 3000"},
	}
	for _, tt := range tests {
		cfg := good()
		tt.change(&cfg)
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: New error %v, want one saying %q", tt.name, err, tt.msg)
		}
	}
}

func TestMaxDepth(t *testing.T) {
	db := DoorbellFunc(func(uint32) {})
	p, err := New(Config{
		ID: 1, Depth: MaxDepth,
		SQ: mapDMA(t, MaxDepth*SQESize, fakeIOVA), CQ: mapDMA(t, MaxDepth*CQESize, fakeIOVA),
		SQTail: db, CQHead: db,
	})
	if err != nil {
		t.Fatal(err)
	}
	// 65535 slots: every cid a uint16 can hold except 0xffff.
	var last uint16
	for i := 0; i < MaxDepth-1; i++ {
		if last, err = p.Acquire(); err != nil {
			t.Fatalf("Acquire %d: %v", i, err)
		}
	}
	if last != MaxDepth-2 {
		t.Errorf("last cid %d, want %d", last, MaxDepth-2)
	}
	if _, err := p.Acquire(); !errors.Is(err, ErrFull) {
		t.Errorf("Acquire past 65535 slots: %v", err)
	}
	if got := p.PRPList(5); got.Len() != 0 {
		t.Errorf("PRPList without PRP memory has %d bytes", got.Len())
	}
}

func TestPRPListPerSlot(t *testing.T) {
	p, _, cfg := testPair(t, 1, 4)
	for cid := uint16(0); cid < 3; cid++ {
		b := p.PRPList(cid)
		if b.Len() != 4096 || b.IOVA != cfg.PRP.IOVA+uint64(cid)*4096 || &b.Bytes[0] != &cfg.PRP.Bytes[int(cid)*4096] {
			t.Errorf("PRPList(%d): %d bytes at IOVA %#x", cid, b.Len(), b.IOVA)
		}
	}
	if b := p.PRPList(3); b.Len() != 0 {
		t.Errorf("PRPList(3) of a 3-slot pair has %d bytes", b.Len())
	}
}

func TestMisusePanics(t *testing.T) {
	p, _, _ := testPair(t, 1, 4)
	mustPanic := func(name string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic", name)
			}
		}()
		f()
	}
	mustPanic("Release of a free slot", func() { p.Release(0) })
	mustPanic("Release of cid 3", func() { p.Release(3) })
	mustPanic("Post of an unacquired slot", func() { p.Post(&Command{CID: 1}) })
	cid := submit(t, p)
	mustPanic("Post twice", func() { p.Post(&Command{CID: cid}) })
	// A posted command keeps its slot until its CQE: releasing it early
	// could let the tail overrun SQ entries the controller has not fetched.
	mustPanic("Release of a posted slot", func() { p.Release(cid) })
	if p.Stats().Posted != 1 || p.Outstanding() != 1 || p.Free() != 2 {
		t.Errorf("rejected calls changed the pair: %+v, %d outstanding, %d free", p.Stats(), p.Outstanding(), p.Free())
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[CQEErrorKind]string{
		UnknownCID: "unknown cid", IdleCID: "idle or duplicate cid",
		BadSQHead: "SQ head out of range", WrongSQID: "wrong SQ id", 9: "CQEErrorKind(9)",
	} {
		if got := k.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", k, got, want)
		}
	}
	if msg := (&CQEError{Kind: 9, QID: 4}).Error(); !strings.Contains(msg, "queue 4") {
		t.Errorf("unknown kind message %q", msg)
	}
}
