package nvmetest

import "fmt"

// chunkSize is the granule of the sparse store: unwritten (or deallocated)
// 4 KiB chunks take no memory and read as zeros.
const chunkSize = 4096

// lbaFormats are the LBA formats every namespace offers (Identify Namespace
// LBAF0 and LBAF1): log2 of the block size, no metadata.
var lbaFormats = []uint8{9, 12}

// Namespace is one namespace's backing store. Tests use ReadAt and WriteAt
// to set up or check data behind the driver's back.
type Namespace struct {
	c      *Controller
	id     uint32
	shift  uint8
	blocks uint64
	chunks map[uint64]*[chunkSize]byte
}

func newNamespace(c *Controller, id uint32, nc NamespaceConfig) *Namespace {
	return &Namespace{c: c, id: id, shift: nc.LBAShift, blocks: nc.Blocks, chunks: map[uint64]*[chunkSize]byte{}}
}

// Namespace returns namespace nsid (from 1), or nil.
func (c *Controller) Namespace(nsid uint32) *Namespace {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.namespaceLocked(nsid)
}

func (c *Controller) namespaceLocked(nsid uint32) *Namespace {
	if nsid == 0 || uint64(nsid) > uint64(len(c.namespaces)) {
		return nil
	}
	return c.namespaces[nsid-1]
}

// ID is the namespace id.
func (ns *Namespace) ID() uint32 { return ns.id }

// BlockSize is the current logical block size in bytes.
func (ns *Namespace) BlockSize() int {
	ns.c.mu.Lock()
	defer ns.c.mu.Unlock()
	return 1 << ns.shift
}

// Blocks is the size in logical blocks (Identify Namespace NSZE).
func (ns *Namespace) Blocks() uint64 {
	ns.c.mu.Lock()
	defer ns.c.mu.Unlock()
	return ns.blocks
}

// Allocated is how many bytes of backing memory the namespace uses.
func (ns *Namespace) Allocated() int {
	ns.c.mu.Lock()
	defer ns.c.mu.Unlock()
	return len(ns.chunks) * chunkSize
}

// ReadAt reads the namespace's contents at byte offset off.
func (ns *Namespace) ReadAt(p []byte, off int64) (int, error) {
	ns.c.mu.Lock()
	defer ns.c.mu.Unlock()
	if err := ns.checkRange(p, off); err != nil {
		return 0, err
	}
	ns.read(uint64(off), p)
	return len(p), nil
}

// WriteAt writes the namespace's contents at byte offset off, without
// counting as host I/O.
func (ns *Namespace) WriteAt(p []byte, off int64) (int, error) {
	ns.c.mu.Lock()
	defer ns.c.mu.Unlock()
	if err := ns.checkRange(p, off); err != nil {
		return 0, err
	}
	ns.write(uint64(off), p)
	return len(p), nil
}

func (ns *Namespace) checkRange(p []byte, off int64) error {
	size := ns.blocks << ns.shift
	if off < 0 || uint64(off)+uint64(len(p)) > size {
		return fmt.Errorf("nvmetest: bytes %d+%d are outside namespace %d (%d bytes)", off, len(p), ns.id, size)
	}
	return nil
}

func (ns *Namespace) read(off uint64, p []byte) {
	for len(p) > 0 {
		ci, co := off/chunkSize, off%chunkSize
		n := min(uint64(len(p)), chunkSize-co)
		if ch := ns.chunks[ci]; ch != nil {
			copy(p[:n], ch[co:])
		} else {
			clear(p[:n])
		}
		p, off = p[n:], off+n
	}
}

func (ns *Namespace) write(off uint64, p []byte) {
	for len(p) > 0 {
		ci, co := off/chunkSize, off%chunkSize
		n := min(uint64(len(p)), chunkSize-co)
		ch := ns.chunks[ci]
		if ch == nil {
			ch = new([chunkSize]byte)
			ns.chunks[ci] = ch
		}
		copy(ch[co:], p[:n])
		p, off = p[n:], off+n
	}
}

// zero makes [off, off+n) read as zeros, freeing whole chunks.
func (ns *Namespace) zero(off, n uint64) {
	for n > 0 {
		ci, co := off/chunkSize, off%chunkSize
		k := min(n, chunkSize-co)
		if ch := ns.chunks[ci]; ch != nil {
			if k == chunkSize {
				delete(ns.chunks, ci)
			} else {
				clear(ch[co : co+k])
			}
		}
		off, n = off+k, n-k
	}
}

// format switches the LBA format, keeping the capacity in bytes, and
// erases the data.
func (ns *Namespace) format(shift uint8) {
	bytes := ns.blocks << ns.shift
	ns.shift = shift
	ns.blocks = bytes >> shift
	ns.chunks = map[uint64]*[chunkSize]byte{}
}

// nguid is a stable 16-byte namespace id derived from the serial number.
func (ns *Namespace) nguid() []byte {
	g := make([]byte, 16)
	copy(g, ns.c.cfg.SerialNumber)
	le.PutUint32(g[12:], ns.id)
	return g
}

// identify fills Identify Namespace (NVM Command Set specification 1.0,
// Figure 97).
func (ns *Namespace) identify(b []byte) {
	le.PutUint64(b[0:], ns.blocks)     // NSZE
	le.PutUint64(b[8:], ns.blocks)     // NCAP
	le.PutUint64(b[16:], ns.blocks)    // NUSE
	b[25] = uint8(len(lbaFormats) - 1) // NLBAF, 0's based
	for i, s := range lbaFormats {
		if s == ns.shift {
			b[26] = uint8(i) // FLBAS
		}
		b[128+4*i+2] = s // LBAF: LBADS (bits 23:16), no metadata
		if s == 12 {
			b[128+4*i+3] = 0 // RP 0: best performance
		} else {
			b[128+4*i+3] = 1 // RP 1: better
		}
	}
	b[33] = 1                           // DLFEAT: deallocated blocks read as zeros
	put128(b[48:], ns.blocks<<ns.shift) // NVMCAP
	copy(b[104:120], ns.nguid())        // NGUID
}

// maxTransfer is the MDTS limit in bytes.
func (c *Controller) maxTransfer() uint64 {
	if c.cfg.MDTS < 0 {
		return 1 << 40
	}
	return 4096 << c.cfg.MDTS
}

// executeIOLocked runs an NVM command set I/O command.
func (c *Controller) executeIOLocked(cmd *Command) result {
	if cmd.Opcode == OpFlush && cmd.NSID == 0xffffffff && !c.cfg.NoWriteCache {
		return result{}
	}
	ns := c.namespaceLocked(cmd.NSID)
	switch cmd.Opcode {
	case OpFlush, OpWrite, OpRead, OpCompare, OpWriteZeroes, OpDSM, OpVerify:
		if ns == nil {
			return bad(StatusInvalidNamespace)
		}
	default:
		return bad(StatusInvalidOpcode)
	}
	switch cmd.Opcode {
	case OpFlush:
		return result{}
	case OpDSM:
		return c.dsmLocked(cmd, ns)
	}
	slba, nlb := cmd.SLBA(), cmd.NLB()
	r := result{lba: slba}
	if slba >= ns.blocks || nlb > ns.blocks-slba {
		r.status = StatusLBAOutOfRange | StatusDNR
		return r
	}
	off, n := slba<<ns.shift, nlb<<ns.shift
	units := n / 512
	switch cmd.Opcode {
	case OpWriteZeroes:
		ns.zero(off, n)
		c.health.hostWrites++
		return r
	case OpVerify:
		c.health.hostReads++
		c.health.unitsRead += units
		return r
	}
	if n > c.maxTransfer() {
		r.status = StatusInvalidField | StatusDNR
		return r
	}
	segs, st := c.segmentsLocked(cmd, int(n), cmd.Opcode == OpRead)
	if st != 0 {
		r.status = st | StatusDNR
		return r
	}
	buf := c.scratchLocked(int(n))
	switch cmd.Opcode {
	case OpRead:
		ns.read(off, buf)
		c.copyToHost(segs, buf)
		c.health.hostReads++
		c.health.unitsRead += units
	case OpWrite:
		c.copyFromHost(segs, buf)
		ns.write(off, buf)
		c.health.hostWrites++
		c.health.unitsWritten += units
	case OpCompare:
		c.copyFromHost(segs, buf)
		stored := make([]byte, n)
		ns.read(off, stored)
		c.health.hostReads++
		c.health.unitsRead += units
		if string(stored) != string(buf) {
			r.status = StatusCompareFailure | StatusDNR
		}
	}
	return r
}

// scratchLocked returns a buffer of n bytes reused across commands.
func (c *Controller) scratchLocked(n int) []byte {
	if cap(c.scratch) < n {
		c.scratch = make([]byte, n)
	}
	return c.scratch[:n]
}

// dsmLocked runs Dataset Management. Only the deallocate attribute (AD)
// changes anything: the ranges then read as zeros. All ranges are checked
// before any is deallocated.
func (c *Controller) dsmLocked(cmd *Command, ns *Namespace) result {
	nr := int(cmd.CDW10&0xff) + 1
	segs, st := c.segmentsLocked(cmd, nr*16, false)
	if st != 0 {
		return bad(st)
	}
	buf := make([]byte, nr*16)
	c.copyFromHost(segs, buf)
	type rng struct{ lba, n uint64 }
	ranges := make([]rng, nr)
	for i := range ranges {
		b := buf[16*i:]
		r := rng{lba: le.Uint64(b[8:]), n: uint64(le.Uint32(b[4:]))}
		if r.lba > ns.blocks || r.n > ns.blocks-r.lba {
			return result{status: StatusLBAOutOfRange | StatusDNR, lba: r.lba}
		}
		ranges[i] = r
	}
	if cmd.CDW11&(1<<2) != 0 {
		for _, r := range ranges {
			ns.zero(r.lba<<ns.shift, r.n<<ns.shift)
		}
	}
	return result{}
}
