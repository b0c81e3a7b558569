package nvmetest

import (
	"math/bits"
)

// Feature identifiers (base specification 2.0, Figure 317).
const (
	fidArbitration    = 0x01
	fidPowerMgmt      = 0x02
	fidTempThreshold  = 0x04
	fidErrorRecovery  = 0x05
	fidWriteCache     = 0x06 // Volatile Write Cache
	fidNumQueues      = 0x07 // Number of Queues
	fidIRQCoalescing  = 0x08
	fidIRQConfig      = 0x09
	fidWriteAtomicity = 0x0a
	fidAsyncEvent     = 0x0b
)

// Log page identifiers.
const (
	lidError  = 0x01 // Error Information
	lidHealth = 0x02 // SMART / Health Information
)

// errorLogEntries is how many Error Information entries the model keeps
// (Identify Controller ELPE + 1).
const errorLogEntries = 64

// bad is a model-detected error: not retryable.
func bad(s Status) result { return result{status: s | StatusDNR} }

// executeLocked runs one command and returns its result.
func (c *Controller) executeLocked(cmd *Command) result {
	if cmd.Flags&3 != 0 {
		return bad(StatusInvalidField) // fused operations are not supported
	}
	if cmd.SQID != 0 {
		return c.executeIOLocked(cmd)
	}
	switch cmd.Opcode {
	case OpIdentify:
		return c.identifyLocked(cmd)
	case OpSetFeatures:
		return c.setFeatureLocked(cmd)
	case OpGetFeatures:
		return c.getFeatureLocked(cmd)
	case OpCreateCQ:
		return c.createCQLocked(cmd)
	case OpCreateSQ:
		return c.createSQLocked(cmd)
	case OpDeleteSQ:
		return c.deleteSQLocked(cmd)
	case OpDeleteCQ:
		return c.deleteCQLocked(cmd)
	case OpGetLogPage:
		return c.getLogLocked(cmd)
	case OpAbort:
		if c.abortPendingLocked(uint16(cmd.CDW10), uint16(cmd.CDW10>>16)) {
			return result{dw0: 0} // bit 0 clear: the command was aborted
		}
		return result{dw0: 1}
	case OpFormatNVM:
		return c.formatLocked(cmd)
	case OpDoorbellBuf:
		if c.cfg.ShadowDoorbells {
			return c.doorbellBufferLocked(cmd)
		}
	}
	return bad(StatusInvalidOpcode)
}

// toHostLocked sends data to the host through cmd's PRPs (admin commands
// use PRPs only).
func (c *Controller) toHostLocked(cmd *Command, data []byte) result {
	segs, st := c.segmentsLocked(cmd, len(data), true)
	if st != 0 {
		return bad(st)
	}
	c.copyToHost(segs, data)
	return result{}
}

// putString writes s space-padded into b, as Identify's ASCII fields are.
func putString(b []byte, s string) {
	for i := range b {
		b[i] = ' '
	}
	copy(b, s)
}

func (c *Controller) identifyLocked(cmd *Command) result {
	var b [4096]byte
	switch cns := uint8(cmd.CDW10); cns {
	case 0x00: // Identify Namespace
		ns := c.namespaceLocked(cmd.NSID)
		if ns == nil {
			return bad(StatusInvalidNamespace)
		}
		ns.identify(b[:])
	case 0x01: // Identify Controller
		c.identifyControllerLocked(b[:])
	case 0x02: // Active Namespace ID list: ids above NSID, ascending
		if cmd.NSID >= 0xfffffffe {
			return bad(StatusInvalidNamespace)
		}
		n := 0
		for _, ns := range c.namespaces {
			if ns.id > cmd.NSID && n < 1024 {
				le.PutUint32(b[4*n:], ns.id)
				n++
			}
		}
	case 0x03: // Namespace Identification Descriptor list
		ns := c.namespaceLocked(cmd.NSID)
		if ns == nil {
			return bad(StatusInvalidNamespace)
		}
		// NGUID (type 2, 16 bytes), then Command Set Identifier (type 4,
		// 1 byte, 0 = NVM).
		b[0], b[1] = 2, 16
		copy(b[4:20], ns.nguid())
		b[20], b[21] = 4, 1
	default:
		return bad(StatusInvalidField)
	}
	return c.toHostLocked(cmd, b[:])
}

// identifyControllerLocked fills the Identify Controller data structure
// (base specification 2.0, Figure 275).
func (c *Controller) identifyControllerLocked(b []byte) {
	le.PutUint16(b[0:], VendorID) // VID
	le.PutUint16(b[2:], VendorID) // SSVID
	putString(b[4:24], c.cfg.SerialNumber)
	putString(b[24:64], c.cfg.ModelNumber)
	putString(b[64:72], c.cfg.FirmwareRevision)
	b[72] = 6                              // RAB
	b[73], b[74], b[75] = 0x00, 0x54, 0x52 // IEEE OUI 52:54:00 (LSB first)
	if c.cfg.MDTS > 0 {
		b[77] = uint8(c.cfg.MDTS) // MDTS, in units of CAP.MPSMIN (4 KiB)
	}
	le.PutUint16(b[78:], 1)       // CNTLID
	le.PutUint32(b[80:], Version) // VER
	b[111] = 1                    // CNTRLTYPE: I/O controller
	oacs := uint16(1 << 1)        // Format NVM
	if c.cfg.ShadowDoorbells {
		oacs |= 1 << 8 // Doorbell Buffer Config
	}
	le.PutUint16(b[256:], oacs)
	b[258] = 3                                       // ACL: 4 concurrent Aborts
	b[259] = aerLimit - 1                            // AERL
	b[260] = 1 << 1                                  // FRMW: one slot
	b[261] = 1 << 2                                  // LPA: extended Get Log Page (offsets)
	b[262] = errorLogEntries - 1                     // ELPE
	le.PutUint16(b[266:], 0x0157)                    // WCTEMP 343 K
	le.PutUint16(b[268:], 0x0175)                    // CCTEMP 373 K
	b[512] = 0x66                                    // SQES: 64 bytes required and maximum
	b[513] = 0x44                                    // CQES: 16 bytes
	le.PutUint32(b[516:], uint32(len(c.namespaces))) // NN
	// ONCS: Compare, Dataset Management, Write Zeroes, Verify.
	le.PutUint16(b[520:], 1<<0|1<<2|1<<3|1<<7)
	if !c.cfg.NoWriteCache {
		b[525] = 1 | 3<<1 // VWC present; Flush with NSID FFFFFFFFh supported
	}
	if c.cfg.SGL {
		le.PutUint32(b[536:], 1) // SGLS: supported, no alignment rule
	}
	copy(b[768:], "nqn.2024-01.io.nvmepoll:nvmetest:"+c.cfg.SerialNumber) // SUBNQN
	// Power state 0: 25 W maximum (MP in centiwatts).
	le.PutUint16(b[2048:], 2500)
}

func (c *Controller) setFeatureLocked(cmd *Command) result {
	fid := uint8(cmd.CDW10)
	if cmd.CDW10>>31 != 0 {
		return bad(StatusFeatureNotSaveable)
	}
	v := cmd.CDW11
	switch fid {
	case fidNumQueues:
		nsq, ncq := int(v&0xffff)+1, int(v>>16)+1
		if nsq == 0x10000 || ncq == 0x10000 {
			return bad(StatusInvalidField)
		}
		if c.ioQueuesLocked() {
			return bad(StatusCommandSequenceError)
		}
		c.nsqa, c.ncqa = min(nsq, c.cfg.MaxQueuePairs), min(ncq, c.cfg.MaxQueuePairs)
		c.queuesSet = true
		return result{dw0: uint32(c.nsqa-1) | uint32(c.ncqa-1)<<16}
	case fidWriteCache:
		if c.cfg.NoWriteCache {
			return bad(StatusInvalidField)
		}
		v &= 1
	case fidPowerMgmt:
		if v&0x1f != 0 { // only power state 0 exists
			return bad(StatusInvalidField)
		}
	case fidIRQConfig:
		if int(v&0xffff) > c.cfg.MaxQueuePairs {
			return bad(StatusInvalidField)
		}
	}
	if _, ok := c.features[fid]; !ok {
		return bad(StatusInvalidField)
	}
	c.features[fid] = v
	return result{}
}

func (c *Controller) getFeatureLocked(cmd *Command) result {
	fid := uint8(cmd.CDW10)
	sel := cmd.CDW10 >> 8 & 7
	if fid == fidNumQueues {
		switch sel {
		case 0:
			return result{dw0: uint32(c.nsqa-1) | uint32(c.ncqa-1)<<16}
		case 3:
			return result{dw0: 1 << 2} // changeable
		}
		n := uint32(c.cfg.MaxQueuePairs - 1)
		return result{dw0: n | n<<16}
	}
	v, ok := c.features[fid]
	if !ok {
		return bad(StatusInvalidField)
	}
	switch sel {
	case 0: // current
		return result{dw0: v}
	case 1, 2: // default, saved (nothing is saveable, so the default)
		switch fid {
		case fidTempThreshold:
			return result{dw0: 0x0157}
		case fidWriteCache:
			if !c.cfg.NoWriteCache {
				return result{dw0: 1}
			}
		}
		return result{}
	case 3: // supported capabilities: changeable, not saveable
		return result{dw0: 1 << 2}
	}
	return bad(StatusInvalidField)
}

func (c *Controller) ioQueuesLocked() bool {
	for _, q := range c.cqs[1:] {
		if q != nil {
			return true
		}
	}
	return false
}

// queueArgsLocked checks what Create I/O CQ and SQ share: CDW10 QID and
// QSIZE, CDW11 PC, PRP1 page aligned.
func (c *Controller) queueArgsLocked(cmd *Command, granted int) (qid uint16, size uint32, st Status) {
	qid = uint16(cmd.CDW10)
	size = cmd.CDW10>>16 + 1
	switch {
	case qid == 0 || int(qid) > granted:
		return 0, 0, StatusInvalidQueueID
	case size < 2 || size > uint32(c.cap&0xffff)+1:
		return 0, 0, StatusInvalidQueueSize
	case cmd.CDW11&1 == 0:
		return 0, 0, StatusInvalidField // CAP.CQR: queues must be contiguous
	case cmd.PRP1 == 0 || cmd.PRP1%uint64(c.pageSize()) != 0:
		return 0, 0, StatusPRPOffsetInvalid
	}
	return qid, size, 0
}

func (c *Controller) createCQLocked(cmd *Command) result {
	qid, size, st := c.queueArgsLocked(cmd, c.ncqa)
	if st != 0 {
		return bad(st)
	}
	if c.cqs[qid] != nil {
		return bad(StatusInvalidQueueID)
	}
	iv := uint16(cmd.CDW11 >> 16)
	if int(iv) > c.cfg.MaxQueuePairs {
		return bad(StatusInvalidInterruptVector)
	}
	c.cqs[qid] = &compQueue{id: qid, size: size, base: cmd.PRP1, ien: cmd.CDW11&2 != 0, iv: iv, phase: 1}
	return result{}
}

func (c *Controller) createSQLocked(cmd *Command) result {
	qid, size, st := c.queueArgsLocked(cmd, c.nsqa)
	if st != 0 {
		return bad(st)
	}
	if c.sqs[qid] != nil {
		return bad(StatusInvalidQueueID)
	}
	cqid := uint16(cmd.CDW11 >> 16)
	if cqid == 0 || int(cqid) >= len(c.cqs) || c.cqs[cqid] == nil {
		return bad(StatusInvalidCQ)
	}
	c.cqs[cqid].nsq++
	c.sqs[qid] = &subQueue{id: qid, size: size, base: cmd.PRP1, cqid: cqid}
	return result{}
}

// deleteSQLocked deletes an I/O SQ. Commands it still holds complete with
// StatusAbortSQDeleted before it goes.
func (c *Controller) deleteSQLocked(cmd *Command) result {
	qid := uint16(cmd.CDW10)
	if qid == 0 || int(qid) >= len(c.sqs) || c.sqs[qid] == nil {
		return bad(StatusInvalidQueueID)
	}
	for _, p := range append([]*pendingCmd(nil), c.pending...) {
		if p.cmd.SQID == qid {
			c.takePendingLocked(p)
			c.finishLocked(&p.cmd, p.sqhd, nil, result{status: StatusAbortSQDeleted})
		}
	}
	c.cqs[c.sqs[qid].cqid].nsq--
	c.sqs[qid] = nil
	return result{}
}

func (c *Controller) deleteCQLocked(cmd *Command) result {
	qid := uint16(cmd.CDW10)
	if qid == 0 || int(qid) >= len(c.cqs) || c.cqs[qid] == nil {
		return bad(StatusInvalidQueueID)
	}
	if c.cqs[qid].nsq > 0 {
		return bad(StatusInvalidQueueDeletion)
	}
	c.cqs[qid] = nil
	return result{}
}

func (c *Controller) formatLocked(cmd *Command) result {
	lbaf := cmd.CDW10&0xf | cmd.CDW10>>12&3<<4
	if lbaf >= uint32(len(lbaFormats)) || cmd.CDW10>>4&0xff != 0 { // no metadata, PI or secure erase
		return bad(StatusInvalidFormat)
	}
	var targets []*Namespace
	if cmd.NSID == 0xffffffff {
		targets = c.namespaces
	} else if ns := c.namespaceLocked(cmd.NSID); ns != nil {
		targets = []*Namespace{ns}
	} else {
		return bad(StatusInvalidNamespace)
	}
	for _, ns := range targets {
		ns.format(lbaFormats[lbaf])
	}
	return result{}
}

// doorbellBufferLocked handles Doorbell Buffer Config: PRP1 is the shadow
// doorbell buffer, PRP2 the EventIdx buffer, each one page.
func (c *Controller) doorbellBufferLocked(cmd *Command) result {
	ps := uint64(c.pageSize())
	if cmd.PRP1 == 0 || cmd.PRP2 == 0 || cmd.PRP1%ps != 0 || cmd.PRP2%ps != 0 {
		return bad(StatusInvalidField)
	}
	c.shadow, c.eventIdx = cmd.PRP1, cmd.PRP2
	// Queues that already exist keep their doorbell values: seed both
	// buffers with them, so a zeroed shadow page is not read as "tail 0".
	for qid := 1; qid < len(c.sqs); qid++ {
		if sq := c.sqs[qid]; sq != nil {
			c.mem.store32(c.shadow+uint64(8*qid), sq.tail)
		}
		if cq := c.cqs[qid]; cq != nil {
			c.mem.store32(c.shadow+uint64(8*qid+4), cq.head)
		}
	}
	c.writeEventIdxLocked()
	return result{}
}

// readShadowLocked takes I/O queue doorbell values from the shadow buffer
// and reports whether any changed. Values out of range are ignored and
// counted like bad MMIO writes.
func (c *Controller) readShadowLocked() bool {
	if c.shadow == 0 {
		return false
	}
	changed := false
	for qid := 1; qid < len(c.sqs); qid++ {
		if sq := c.sqs[qid]; sq != nil {
			v := c.mem.load32(c.shadow + uint64(8*qid))
			switch {
			case v >= sq.size:
				c.invalidDoorbellLocked(aenInvalidDoorbellValue)
			case v != sq.tail:
				sq.tail, changed = v, true
			}
		}
		if cq := c.cqs[qid]; cq != nil {
			v := c.mem.load32(c.shadow + uint64(8*qid+4))
			switch {
			case !cq.headOK(v):
				c.invalidDoorbellLocked(aenInvalidDoorbellValue)
			case v != cq.head:
				cq.head, changed = v, true
			}
		}
	}
	return changed
}

// writeEventIdxLocked tells the host what the model has consumed, so it
// writes the MMIO doorbell only when it moves past these values.
func (c *Controller) writeEventIdxLocked() {
	if c.eventIdx == 0 {
		return
	}
	for qid := 1; qid < len(c.sqs); qid++ {
		if sq := c.sqs[qid]; sq != nil {
			c.mem.store32(c.eventIdx+uint64(8*qid), sq.tail)
		}
		if cq := c.cqs[qid]; cq != nil {
			c.mem.store32(c.eventIdx+uint64(8*qid+4), cq.head)
		}
	}
}

// health holds the counters behind the SMART / Health log.
type health struct {
	unitsRead, unitsWritten uint64 // in 512-byte units, not yet in thousands
	hostReads, hostWrites   uint64
	mediaErrors             uint64
	criticalWarning         uint8
	temperature             uint16 // kelvin; 0 means 313 (40 C)
}

// SetHealth sets the Critical Warning byte and the composite temperature
// (kelvin) the SMART / Health log reports; kelvin 0 keeps 313 K.
func (c *Controller) SetHealth(criticalWarning uint8, kelvin uint16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.health.criticalWarning, c.health.temperature = criticalWarning, kelvin
}

type errorEntry struct {
	count  uint64
	sqid   uint16
	cid    uint16
	status Status
	lba    uint64
	nsid   uint32
}

func (c *Controller) logErrorLocked(cmd *Command, r result) {
	if r.status.SCT() == 2 {
		c.health.mediaErrors++
	}
	c.errSeq++
	c.errLog = append(c.errLog, errorEntry{count: c.errSeq, sqid: cmd.SQID, cid: cmd.CID, status: r.status, lba: r.lba, nsid: cmd.NSID})
	if len(c.errLog) > errorLogEntries {
		c.errLog = c.errLog[1:]
	}
}

// put128 writes a 128-bit little-endian counter with v in the low half.
func put128(b []byte, v uint64) { le.PutUint64(b, v) }

// thousands is a data unit count as the Health log reports it: in
// thousands of 512-byte units, rounded up.
func thousands(units uint64) uint64 {
	q, r := bits.Div64(0, units, 1000)
	if r != 0 {
		q++
	}
	return q
}

func (c *Controller) getLogLocked(cmd *Command) result {
	lid := uint8(cmd.CDW10)
	numd := uint64(cmd.CDW10>>16|cmd.CDW11<<16) + 1
	off := uint64(cmd.CDW13)<<32 | uint64(cmd.CDW12)
	if off%4 != 0 || numd*4 > min(c.maxTransfer(), 1<<20) {
		return bad(StatusInvalidField)
	}
	var page []byte
	switch lid {
	case lidError:
		page = make([]byte, 64*errorLogEntries)
		for i := range c.errLog { // newest first
			e := c.errLog[len(c.errLog)-1-i]
			b := page[64*i:]
			le.PutUint64(b[0:], e.count)
			le.PutUint16(b[8:], e.sqid)
			le.PutUint16(b[10:], e.cid)
			le.PutUint16(b[12:], uint16(e.status)<<1) // status field; bit 0 is the phase tag
			le.PutUint16(b[14:], 0xffff)              // parameter error location: not given
			le.PutUint64(b[16:], e.lba)
			le.PutUint32(b[24:], e.nsid)
		}
	case lidHealth:
		if cmd.NSID != 0 && cmd.NSID != 0xffffffff {
			return bad(StatusInvalidField) // LPA bit 0 clear: no per-namespace log
		}
		h := c.health
		if h.temperature == 0 {
			h.temperature = 313
		}
		page = make([]byte, 512)
		page[0] = h.criticalWarning
		le.PutUint16(page[1:], h.temperature)
		page[3] = 100 // available spare %
		page[4] = 10  // available spare threshold %
		put128(page[32:], thousands(h.unitsRead))
		put128(page[48:], thousands(h.unitsWritten))
		put128(page[64:], h.hostReads)
		put128(page[80:], h.hostWrites)
		put128(page[112:], 1) // power cycles
		put128(page[160:], h.mediaErrors)
		put128(page[176:], c.errSeq)
		le.PutUint16(page[200:], h.temperature) // temperature sensor 1
	default:
		return bad(StatusInvalidLogPage)
	}
	if off >= uint64(len(page)) {
		return bad(StatusInvalidField)
	}
	// Bytes past the end of the log read as zeros.
	out := make([]byte, numd*4)
	copy(out, page[off:])
	return c.toHostLocked(cmd, out)
}

// Asynchronous event information for event type 0, Error (base
// specification 2.0, Figure 148).
const (
	aenInvalidDoorbell      = 0x00 // Write to Invalid Doorbell Register
	aenInvalidDoorbellValue = 0x01 // Invalid Doorbell Write Value
	aerLimit                = 4    // Identify Controller AERL + 1
	maxQueuedEvents         = 16
)

// asyncRequestLocked takes an Asynchronous Event Request: it stays
// outstanding until an event happens (or the controller resets), unless an
// event is already waiting for it.
func (c *Controller) asyncRequestLocked(cmd *Command, sqhd uint16) {
	if len(c.events) > 0 {
		dw0 := c.events[0]
		c.events = c.events[1:]
		c.finishLocked(cmd, sqhd, nil, result{dw0: dw0})
		return
	}
	if len(c.aers) >= aerLimit {
		c.finishLocked(cmd, sqhd, nil, bad(StatusAERLimitExceeded))
		return
	}
	c.aers = append(c.aers, pendingCmd{cmd: *cmd, sqhd: sqhd})
}

// invalidDoorbellLocked counts an ignored doorbell write and reports it as
// an Error asynchronous event pointing at the Error Information log.
func (c *Controller) invalidDoorbellLocked(info uint8) {
	c.stats.InvalidDoorbellWrites++
	dw0 := uint32(info)<<8 | lidError<<16 // type 0 (error status)
	if len(c.aers) > 0 {
		p := c.aers[0]
		c.aers = c.aers[1:]
		c.finishLocked(&p.cmd, p.sqhd, nil, result{dw0: dw0})
		return
	}
	if len(c.events) < maxQueuedEvents {
		c.events = append(c.events, dw0)
	}
}
