// Doorbell Buffer Config (shadow doorbells and EventIdx) and asynchronous
// events.

package nvmetest

// Asynchronous event information for event type 0, Error (base
// specification 2.0, Figure 148).
const (
	aenInvalidDoorbell      = 0x00 // Write to Invalid Doorbell Register
	aenInvalidDoorbellValue = 0x01 // Invalid Doorbell Write Value
	aerLimit                = 4    // Identify Controller AERL + 1
	maxQueuedEvents         = 64   // QEMU's aer_max_queued default
)

// Asynchronous event types (completion DW0 bits 2:0).
const (
	eventError  = 0 // Error status
	eventHealth = 1 // SMART / Health status
)

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
		if sq := c.sqs[qid]; sq != nil && sq.awake {
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

// sleepEmptyLocked stops reading the shadow tail of every SQ found empty
// after EventIdx was published: until its next MMIO doorbell write.
func (c *Controller) sleepEmptyLocked() {
	for _, sq := range c.sqs {
		if sq != nil && sq.head == sq.tail {
			sq.awake = false
		}
	}
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

// Asynchronous events follow QEMU's hw/nvme (nvme_enqueue_event,
// nvme_process_aers): an event waits in a queue of at most
// maxQueuedEvents; the newest outstanding request takes it; once an event
// of a type is posted that type is masked (later ones wait) until the host
// reads the type's log page without Retain Asynchronous Event.

// asyncRequestLocked takes an Asynchronous Event Request: it stays
// outstanding until an event can be posted on it (or the controller
// resets).
func (c *Controller) asyncRequestLocked(cmd *Command, sqhd uint16) {
	if len(c.aers) >= aerLimit {
		c.finishLocked(cmd, sqhd, nil, bad(StatusAERLimitExceeded))
		return
	}
	c.aers = append(c.aers, pendingCmd{cmd: *cmd, sqhd: sqhd})
	c.postEventsLocked()
}

// enqueueEventLocked queues an event (its completion DW0) and posts what
// it can. A full queue drops the event, as QEMU does.
func (c *Controller) enqueueEventLocked(dw0 uint32) {
	if len(c.events) >= maxQueuedEvents {
		return
	}
	c.events = append(c.events, dw0)
	c.postEventsLocked()
}

// postEventsLocked completes outstanding requests with queued events of
// types not masked, oldest event first, newest request first.
func (c *Controller) postEventsLocked() {
	kept := c.events[:0]
	for _, dw0 := range c.events {
		bit := uint8(1) << (dw0 & 7) // event type
		if len(c.aers) == 0 || c.masked&bit != 0 {
			kept = append(kept, dw0)
			continue
		}
		c.masked |= bit
		p := c.aers[len(c.aers)-1]
		c.aers = c.aers[:len(c.aers)-1]
		c.finishLocked(&p.cmd, p.sqhd, nil, result{dw0: dw0})
	}
	c.events = kept
}

// clearEventsLocked unmasks an event type, once the host has read its log
// page without Retain Asynchronous Event, and posts what waited.
func (c *Controller) clearEventsLocked(eventType uint8) {
	c.masked &^= 1 << eventType
	c.postEventsLocked()
}

// invalidDoorbellLocked counts an ignored doorbell write and, if a request
// is outstanding (QEMU's nvme_process_db raises no event otherwise),
// reports it as an Error event pointing at the Error Information log.
func (c *Controller) invalidDoorbellLocked(info uint8) {
	c.stats.InvalidDoorbellWrites++
	if len(c.aers) > 0 {
		c.enqueueEventLocked(uint32(info)<<8 | lidError<<16 | eventError)
	}
}
