// Admin commands: Identify, features, queue management, Format NVM.

package nvmetest

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

// bad is a model-detected error: not retryable.
func bad(s Status) result { return result{status: s | StatusDNR} }

// executeLocked runs one command and returns its result. f is the fault
// that matched it, or nil.
func (c *Controller) executeLocked(cmd *Command, f *Fault) result {
	if cmd.Flags&3 != 0 {
		return bad(StatusInvalidField) // fused operations are not supported
	}
	if cmd.SQID != 0 {
		return c.executeIOLocked(cmd)
	}
	switch cmd.Opcode {
	case OpIdentify:
		return c.identifyLocked(cmd, f)
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
		if sqid := int(uint16(cmd.CDW10)); sqid >= len(c.sqs) || c.sqs[sqid] == nil {
			// As QEMU's nvme_abort (nvme_check_sqid): no such SQ.
			return result{dw0: 1, status: StatusInvalidField}
		}
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

func (c *Controller) identifyLocked(cmd *Command, f *Fault) result {
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
	if f != nil && f.Identify != nil {
		f.Identify(b[:])
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
		if c.cqsMade {
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
	c.cqsMade = true
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

// Feature returns the current value (Set Features CDW11) of feature fid,
// for tests that check what the driver configured; ok is false for
// features the model does not have. Number of Queues reports the granted
// counts, 0's based, as Get Features does.
func (c *Controller) Feature(fid uint8) (v uint32, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if fid == fidNumQueues {
		return uint32(c.nsqa-1) | uint32(c.ncqa-1)<<16, true
	}
	v, ok = c.features[fid]
	return v, ok
}
