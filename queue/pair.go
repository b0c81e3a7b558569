package queue

import (
	"errors"
	"fmt"
	"math/bits"
	"sync/atomic"
	"unsafe"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
	"github.com/nvmepoll/nvmepoll/vfio/mmio"
)

// Depth limits: a ring needs two entries to tell full from empty, and the
// specification caps a queue at 64 Ki entries (CAP.MQES + 1).
const (
	MinDepth = 2
	MaxDepth = 65536
)

// ErrFull is returned by Acquire when every command slot is in use. It is a
// back-pressure signal for the submitter (retry after reaping), never a
// completion.
var ErrFull = errors.New("queue: all command slots are in use")

// Config describes the memory and doorbells of one queue pair.
type Config struct {
	// ID is the queue identifier; 0 is the admin queue.
	ID uint16
	// Depth is the number of entries in the SQ, MinDepth..MaxDepth.
	// Depth-1 commands can be outstanding at once.
	Depth int
	// CQDepth is the number of entries in the CQ, Depth..MaxDepth; 0 means
	// Depth. The entries beyond Depth are slack: the controller can post a
	// completion for every command that can be outstanding while its view
	// of the CQ head lags the host's by up to CQDepth-Depth entries, so
	// UpdateHead writes the doorbell only once more than that many have
	// been reaped since the last write. With CQDepth == Depth it writes on every call
	// that moved the head.
	CQDepth int
	// SQ and CQ are the rings: at least Depth*SQESize and CQDepth*CQESize
	// bytes. New zeroes the CQ, so stale phase tags cannot look new.
	SQ, CQ dma.Buffer
	// PRP holds one PRP-list page per slot, (Depth-1)*PageSize bytes. It may
	// be empty when the caller never needs PRP lists (e.g. the admin queue).
	PRP dma.Buffer
	// PageSize is the PRP-list page size; 0 means 4096.
	PageSize int
	// SQTail and CQHead are the queue's doorbells.
	SQTail, CQHead Doorbell
}

// Slot states. A slot is free (on the stack), acquired (owned by a caller,
// not in the ring), or posted (in the ring, its CQE not yet seen).
const (
	slotFree uint8 = iota
	slotAcquired
	slotPosted
)

// Pair is one submission/completion queue pair.
//
// The steps are split so callers can batch: Post copies an SQE into the ring
// and UpdateTail rings the SQ doorbell once for everything posted since; Next
// returns one CQE and UpdateHead rings the CQ doorbell once for everything
// reaped since. Callers name commands by slot index; each slot owns a
// PRP-list page. On the wire the command id is the slot index with the
// slot's generation in the bits above it (see CommandID).
//
// A Pair is not safe for concurrent use: the caller serialises all calls
// (for example one lock per queue, or one goroutine per queue).
type Pair struct {
	sq      unsafe.Pointer // ring bases in DMA memory
	cq      unsafe.Pointer
	depth   uint32 // SQ entries
	cqDepth uint32 // CQ entries, >= depth
	slack   uint32 // cqDepth - depth: CQEs that may be reaped before the head must be rung
	id      uint16

	tail, rungTail uint32 // local SQ tail, last value written to the doorbell
	head, rungHead uint32 // local CQ head, last value written to the doorbell
	phase          uint32 // expected phase tag (phaseBit or 0)

	state  []uint8  // per slot: slotFree, slotAcquired, slotPosted
	free   []uint16 // LIFO stack of free slots
	posted int      // slots in slotPosted

	// gen[slot] is the slot's generation, already shifted into the command
	// id bits above slotMask; Release advances it. A completion whose id
	// carries an older generation answers a command the slot no longer
	// holds (a duplicate CQE read after the slot was reused) and is
	// rejected instead of completing the new command. As Linux's nvme_cid:
	// a queue of 2048 entries (11 slot bits) has 32 generations; one of
	// 65536 entries has no bits to spare and no generations.
	gen      []uint16
	slotMask uint16 // command id bits that hold the slot index
	genStep  uint16 // 1 << bits of slotMask; 0 when no bits are left

	sqTail, cqHead Doorbell

	prp      dma.Buffer
	pageSize int

	stats Stats
}

// New checks cfg and returns an empty queue pair with all Depth-1 slots free.
func New(cfg Config) (*Pair, error) {
	if cfg.Depth < MinDepth || cfg.Depth > MaxDepth {
		return nil, fmt.Errorf("queue %d: depth %d is outside %d..%d", cfg.ID, cfg.Depth, MinDepth, MaxDepth)
	}
	if n := cfg.Depth * SQESize; cfg.SQ.Len() < n {
		return nil, fmt.Errorf("queue %d: SQ ring is %d bytes, depth %d needs %d", cfg.ID, cfg.SQ.Len(), cfg.Depth, n)
	}
	cqDepth := cfg.CQDepth
	if cqDepth == 0 {
		cqDepth = cfg.Depth
	}
	if cqDepth < cfg.Depth || cqDepth > MaxDepth {
		return nil, fmt.Errorf("queue %d: CQ depth %d is outside %d..%d (the SQ depth up to the limit)", cfg.ID, cqDepth, cfg.Depth, MaxDepth)
	}
	if n := cqDepth * CQESize; cfg.CQ.Len() < n {
		return nil, fmt.Errorf("queue %d: CQ ring is %d bytes, depth %d needs %d", cfg.ID, cfg.CQ.Len(), cqDepth, n)
	}
	// The CQE status word is read atomically and the SQE is copied as a
	// struct: both rings must be aligned to their entry size.
	if uintptr(cfg.SQ.Ptr())%SQESize != 0 || cfg.SQ.IOVA%SQESize != 0 {
		return nil, fmt.Errorf("queue %d: SQ ring (host %p, IOVA %#x) is not %d-byte aligned", cfg.ID, cfg.SQ.Ptr(), cfg.SQ.IOVA, SQESize)
	}
	if uintptr(cfg.CQ.Ptr())%CQESize != 0 || cfg.CQ.IOVA%CQESize != 0 {
		return nil, fmt.Errorf("queue %d: CQ ring (host %p, IOVA %#x) is not %d-byte aligned", cfg.ID, cfg.CQ.Ptr(), cfg.CQ.IOVA, CQESize)
	}
	if cfg.SQTail == nil || cfg.CQHead == nil {
		return nil, fmt.Errorf("queue %d: both doorbells are required", cfg.ID)
	}
	page := cfg.PageSize
	if page == 0 {
		page = 4096
	}
	slots := cfg.Depth - 1
	if page < 0 || page&(page-1) != 0 {
		return nil, fmt.Errorf("queue %d: PRP page size %d is not a power of two", cfg.ID, cfg.PageSize)
	}
	if cfg.PRP.Len() != 0 && cfg.PRP.Len() < slots*page {
		return nil, fmt.Errorf("queue %d: PRP area is %d bytes, %d slots of %d-byte pages need %d", cfg.ID, cfg.PRP.Len(), slots, page, slots*page)
	}

	clear(cfg.CQ.Bytes[:cqDepth*CQESize])
	p := &Pair{
		sq:       cfg.SQ.Ptr(),
		cq:       cfg.CQ.Ptr(),
		depth:    uint32(cfg.Depth),
		cqDepth:  uint32(cqDepth),
		slack:    uint32(cqDepth - cfg.Depth),
		id:       cfg.ID,
		phase:    phaseBit, // the controller's first lap writes phase 1
		state:    make([]uint8, slots),
		free:     make([]uint16, slots),
		gen:      make([]uint16, slots),
		sqTail:   cfg.SQTail,
		cqHead:   cfg.CQHead,
		prp:      cfg.PRP,
		pageSize: page,
	}
	slotBits := bits.Len16(uint16(slots - 1))
	p.slotMask = uint16(1<<slotBits - 1)
	p.genStep = uint16(1 << slotBits) // 0 for 16 bits: no generations
	// Push in reverse so the first Acquire returns cid 0: easier to read in
	// traces, and the low slots (and their PRP pages) stay cache-hot.
	for i, free := 0, p.free; i < len(free); i++ {
		free[i] = uint16(slots - 1 - i)
	}
	return p, nil
}

// ID returns the queue identifier.
func (p *Pair) ID() uint16 { return p.id }

// Depth returns the number of SQ entries.
func (p *Pair) Depth() int { return int(p.depth) }

// CQDepth returns the number of CQ entries.
func (p *Pair) CQDepth() int { return int(p.cqDepth) }

// Slots returns the number of command slots, Depth-1.
func (p *Pair) Slots() int { return len(p.state) }

// Acquire takes a free slot. Its index is what the caller puts in the
// SQE's CID; Post adds the generation bits. It returns ErrFull when all
// Depth-1 slots are out.
func (p *Pair) Acquire() (cid uint16, err error) {
	n := len(p.free)
	if n == 0 {
		return 0, ErrFull
	}
	cid = p.free[n-1]
	p.free = p.free[:n-1]
	if int(cid) < len(p.state) {
		p.state[cid] = slotAcquired
	}
	return cid, nil
}

// Release returns a slot to the free stack: after Next returned its
// completion, or when a command was acquired but never posted.
//
// Releasing a slot that is free, posted, or not a slot at all is a driver
// bug and panics, like unlocking an unlocked sync.Mutex. A double push would
// hand one slot to two commands; releasing a posted command would let the
// SQ tail lap entries the controller may not have fetched yet (at most
// Depth-1 posted commands is what keeps the SQ from overflowing). A command
// that timed out keeps its slot until its CQE arrives or the queue is
// deleted.
func (p *Pair) Release(cid uint16) {
	state := p.state
	if int(cid) >= len(state) || state[cid] != slotAcquired {
		panic(fmt.Sprintf("queue %d: Release of cid %d, which is not acquired or already completed", p.id, cid))
	}
	state[cid] = slotFree
	p.gen[cid] += p.genStep      // wraps within the bits above slotMask
	p.free = append(p.free, cid) // never grows: capacity is the slot count
}

// CommandID is the command id the controller sees for slot cid: the slot
// index with its current generation above it. Use it where the id goes to
// the controller in a command's data, as Abort's CDW10 does.
func (p *Pair) CommandID(cid uint16) uint16 {
	if int(cid) >= len(p.gen) {
		return cid
	}
	return cid | p.gen[cid]
}

// PRPList returns the slot's pre-mapped PRP-list page, or an empty Buffer
// when the pair was configured without PRP memory.
func (p *Pair) PRPList(cid uint16) dma.Buffer {
	if p.prp.Len() == 0 || int(cid) >= len(p.state) {
		return dma.Buffer{}
	}
	return p.prp.Slice(int(cid)*p.pageSize, p.pageSize)
}

// Post copies cmd into the SQ at the local tail, with CommandID(cmd.CID) as
// its command id, and advances the tail. It does not ring the doorbell;
// call UpdateTail once after a batch. cmd.CID must be a slot from Acquire
// that is not posted yet; anything else is a driver bug and panics before
// the ring is touched.
func (p *Pair) Post(cmd *Command) {
	cid := cmd.CID
	if int(cid) >= len(p.state) || p.state[cid] != slotAcquired {
		panic(fmt.Sprintf("queue %d: Post of cid %d, which is not an acquired, unposted slot", p.id, cid))
	}
	p.state[cid] = slotPosted
	p.posted++
	// Plain stores into DMA memory; UpdateTail orders them before the
	// doorbell. tail < depth always, and the ring holds depth entries.
	sqe := (*Command)(unsafe.Add(p.sq, uintptr(p.tail)*SQESize))
	*sqe = *cmd
	sqe.CID = cid | p.gen[cid]
	p.tail++
	if p.tail == p.depth {
		p.tail = 0
	}
	p.stats.Posted++
}

// UpdateTail writes the SQ tail doorbell if the tail moved since the last
// write, and reports whether it wrote. At most Depth-1 commands are posted
// at once (one per slot, and a posted slot cannot be released), so the tail
// cannot lap back to the value last written.
func (p *Pair) UpdateTail() bool {
	if p.tail == p.rungTail {
		return false
	}
	mmio.Barrier() // SQE stores before the doorbell (empty on amd64)
	p.sqTail.Ring(p.tail)
	p.rungTail = p.tail
	p.stats.SQDoorbells++
	return true
}

// Next returns the CQE at the head if the controller has posted it (its
// phase tag matches), and advances the head. ok is false when the CQ is
// empty. The CQ head doorbell is not written; call UpdateHead after a batch.
//
// The CQE is untrusted device data. If it names a cid that is out of range,
// not posted or of an older generation, an SQ head past the ring, or
// another SQ, Next returns a *CQEError (ok false), counts it in Stats, and
// leaves every slot as it was; the head still moves past it, so keep
// calling Next. A valid CQE moves its slot from posted back to acquired:
// the caller owns it until Release. Its CID is the slot index (the
// generation bits are stripped).
func (p *Pair) Next() (c Completion, ok bool, err error) {
	w := (*[4]uint32)(unsafe.Add(p.cq, uintptr(p.head)*CQESize))
	// DW3 first, atomically: the phase tag says whether DW0-2 are new.
	dw3 := atomic.LoadUint32(&w[3])
	if dw3&phaseBit != p.phase {
		return Completion{}, false, nil
	}
	c = decode(w[0], w[1], w[2], dw3)
	p.head++
	if p.head == p.cqDepth {
		p.head = 0
		p.phase ^= phaseBit
	}

	var kind CQEErrorKind
	switch cid := c.CID & p.slotMask; {
	case c.SQID != p.id:
		kind = WrongSQID
	case int(cid) >= len(p.state):
		kind = UnknownCID
	case p.state[cid] != slotPosted || c.CID&^p.slotMask != p.gen[cid]:
		kind = IdleCID // never posted, already completed, or an older generation's
	case uint32(c.SQHead) >= p.depth:
		kind = BadSQHead
	default:
		p.state[cid] = slotAcquired
		p.posted--
		p.stats.Completed++
		c.CID = cid
		return c, true, nil
	}
	p.stats.BadCQEs[kind]++
	return Completion{}, false, &CQEError{Kind: kind, QID: p.id, Depth: int(p.depth), CQE: c}
}

// UpdateHead writes the CQ head doorbell if more CQEs were reaped since the
// last write than the CQ's slack (CQDepth-Depth) covers, and reports
// whether it wrote. Call it after every batch of Next: it is what keeps the
// controller from seeing a full CQ.
//
// Why waiting is safe: the controller counts as occupied every entry from
// the head it was last told to its tail. Those are the reaped-but-unrung
// entries plus at most Depth-1 completions (one per slot), so while at
// most CQDepth-Depth are unrung it always has room to post. Without slack
// (CQDepth == Depth) every call that moved the head writes.
func (p *Pair) UpdateHead() bool {
	unrung := p.head - p.rungHead
	if p.head < p.rungHead {
		unrung += p.cqDepth
	}
	if unrung == 0 || unrung <= p.slack {
		return false
	}
	p.cqHead.Ring(p.head)
	p.rungHead = p.head
	p.stats.CQDoorbells++
	return true
}

// Outstanding returns the number of posted commands whose CQE has not been
// seen.
func (p *Pair) Outstanding() int { return p.posted }

// Free returns the number of slots Acquire can still hand out.
func (p *Pair) Free() int { return len(p.free) }

// Stats returns the pair's counters.
func (p *Pair) Stats() Stats { return p.stats }

// Stats counts what a Pair did.
type Stats struct {
	Posted      uint64 // SQEs written into the ring
	Completed   uint64 // valid CQEs returned by Next
	SQDoorbells uint64 // SQ tail doorbell writes
	CQDoorbells uint64 // CQ head doorbell writes
	// BadCQEs counts rejected CQEs, indexed by CQEErrorKind.
	BadCQEs [numKinds]uint64
}

// Bad returns the total number of rejected CQEs.
func (s Stats) Bad() uint64 {
	var n uint64
	for _, v := range s.BadCQEs {
		n += v
	}
	return n
}

// CQEErrorKind says what was wrong with a CQE.
type CQEErrorKind uint8

const (
	// UnknownCID: the cid is not a slot of this queue (>= Depth-1).
	UnknownCID CQEErrorKind = iota
	// IdleCID: the cid is a slot with no command posted: never posted,
	// already completed (a duplicate CQE), or completed and released; or
	// it carries an older generation than the command the slot holds now
	// (a duplicate CQE reaped after the slot was reused).
	IdleCID
	// BadSQHead: the SQ head pointer is not below Depth.
	BadSQHead
	// WrongSQID: the CQE names a different submission queue.
	WrongSQID
	numKinds
)

func (k CQEErrorKind) String() string {
	switch k {
	case UnknownCID:
		return "unknown cid"
	case IdleCID:
		return "idle or duplicate cid"
	case BadSQHead:
		return "SQ head out of range"
	case WrongSQID:
		return "wrong SQ id"
	}
	return fmt.Sprintf("CQEErrorKind(%d)", uint8(k))
}

// CQEError reports a completion queue entry that failed validation. The
// entry was consumed (the head moved past it) and no slot changed.
type CQEError struct {
	Kind  CQEErrorKind
	QID   uint16     // the queue that received it
	Depth int        // the queue's depth, for the limits in the message
	CQE   Completion // the entry as read from the ring
}

func (e *CQEError) Error() string {
	c := e.CQE
	switch e.Kind {
	case UnknownCID:
		return fmt.Sprintf("queue %d: bad CQE: cid %d is out of range (%d slots)", e.QID, c.CID, e.Depth-1)
	case IdleCID:
		return fmt.Sprintf("queue %d: bad CQE: cid %d has no command outstanding (duplicate, stale or stray completion)", e.QID, c.CID)
	case BadSQHead:
		return fmt.Sprintf("queue %d: bad CQE for cid %d: SQ head %d is past the ring (depth %d)", e.QID, c.CID, c.SQHead, e.Depth)
	case WrongSQID:
		return fmt.Sprintf("queue %d: bad CQE for cid %d: names SQ %d", e.QID, c.CID, c.SQID)
	}
	return fmt.Sprintf("queue %d: bad CQE (%v): %+v", e.QID, e.Kind, c)
}

// Reset returns the pair to the state New left it in, for a controller
// reset that re-creates the queue over the same memory: ring indices at 0,
// the expected phase at 1, the CQ zeroed so no old entry looks new, and
// every slot free. Commands that were posted are forgotten; the caller
// owns re-posting or failing them. Stats keep counting.
func (p *Pair) Reset() {
	clear(unsafe.Slice((*byte)(p.cq), int(p.cqDepth)*CQESize))
	p.tail, p.rungTail, p.head, p.rungHead = 0, 0, 0, 0
	p.phase = phaseBit
	p.posted = 0
	slots := len(p.state)
	clear(p.state)
	p.free = p.free[:slots]
	for i := range p.free {
		p.free[i] = uint16(slots - 1 - i)
	}
}
