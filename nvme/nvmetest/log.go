// Log pages: Error Information and SMART / Health, and their counters.

package nvmetest

import "math/bits"

// Log page identifiers.
const (
	lidError  = 0x01 // Error Information
	lidHealth = 0x02 // SMART / Health Information
)

// errorLogEntries is how many Error Information entries the model keeps
// (Identify Controller ELPE + 1).
const errorLogEntries = 64

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
		// QEMU takes 0xffffffff for the whole controller and answers
		// NSID 0 with Invalid Namespace, though the spec allows 0 when
		// LPA bit 0 is clear; refusing it catches a driver that would
		// fail there. Unlike QEMU the model keeps no per-namespace log.
		switch {
		case cmd.NSID == 0xffffffff:
		case c.namespaceLocked(cmd.NSID) == nil: // 0 included
			return bad(StatusInvalidNamespace)
		default:
			return bad(StatusInvalidField) // LPA bit 0 clear
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
	r := c.toHostLocked(cmd, out)
	if r.status == 0 && cmd.CDW10&(1<<15) == 0 { // not Retain Asynchronous Event
		switch lid {
		case lidError:
			c.clearEventsLocked(eventError)
		case lidHealth:
			c.clearEventsLocked(eventHealth)
		}
	}
	return r
}
