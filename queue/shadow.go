package queue

import "sync/atomic"

// ShadowDoorbell is a doorbell backed by the controller's shadow doorbell
// buffer (Doorbell Buffer Config, NVMe base spec 2.0 5.8): the new value is
// stored in host memory, where the controller reads it while it works, and
// the MMIO register is written only when the controller's EventIdx says it
// may have stopped looking. An MMIO write is a trap into the hypervisor (or
// a posted PCIe write); a store to host memory is a cache line.
//
// Like Pair, a ShadowDoorbell is not safe for concurrent Ring calls: it
// belongs to one queue, whose owner serialises it.
type ShadowDoorbell struct {
	shadow   *uint32 // the queue's slot in the shadow doorbell buffer
	eventIdx *uint32 // the queue's slot in the EventIdx buffer
	mmio     Doorbell
	old      uint32 // the value last stored in the shadow slot
	stats    DoorbellStats
}

// DoorbellStats counts what a doorbell did: Updates is how many new values
// the queue published (shadow stores, or MMIO writes without shadow
// doorbells), MMIOWrites how many of them reached the register.
type DoorbellStats struct {
	Updates    uint64
	MMIOWrites uint64
}

// NewShadowDoorbell returns a doorbell that publishes values in *shadow and
// rings mmio when *eventIdx asks for it. Both pointers are 4-byte aligned
// words in DMA memory the controller was given with Doorbell Buffer Config.
// Call it before the queue is created on the controller: it zeroes both
// slots, so a value left by an earlier queue with the same id is not taken
// for this queue's tail or head.
func NewShadowDoorbell(shadow, eventIdx *uint32, mmio Doorbell) *ShadowDoorbell {
	atomic.StoreUint32(shadow, 0)
	atomic.StoreUint32(eventIdx, 0)
	return &ShadowDoorbell{shadow: shadow, eventIdx: eventIdx, mmio: mmio}
}

// Reset starts the doorbell over for a queue re-created after a controller
// reset: both slots and the last value zeroed, as NewShadowDoorbell leaves
// them, and mmio as the register. The counters keep counting.
func (d *ShadowDoorbell) Reset(mmio Doorbell) {
	atomic.StoreUint32(d.shadow, 0)
	atomic.StoreUint32(d.eventIdx, 0)
	d.old, d.mmio = 0, mmio
}

// Ring publishes v in the shadow slot and writes the MMIO doorbell if the
// controller's EventIdx lies in [old, v), the values it has not been told
// about and asked to hear of.
func (d *ShadowDoorbell) Ring(v uint32) {
	old := d.old
	d.old = v
	// The atomic store is a release (the SQEs written before it are
	// visible first) and, on amd64, an XCHG: a full fence, so the EventIdx
	// load below cannot pass it. Without that fence the load could read an
	// EventIdx older than the controller's last look at the shadow slot,
	// both sides would think the other one is awake, and the command would
	// sit in the ring. This is host memory, never the MMIO register.
	atomic.StoreUint32(d.shadow, v)
	d.stats.Updates++
	if NeedEvent(atomic.LoadUint32(d.eventIdx), v, old) {
		d.mmio.Ring(v)
		d.stats.MMIOWrites++
	}
}

// Stats returns the doorbell's counters.
func (d *ShadowDoorbell) Stats() DoorbellStats { return d.stats }

// NeedEvent reports whether a doorbell moving from old to new passes
// eventIdx, i.e. eventIdx is in [old, new) counted modulo 2^16: the
// controller asked to be told once the value goes past eventIdx. It is
// Linux's nvme_dbbuf_need_event (and virtio's vring_need_event). Ring
// indexes wrap at the queue depth, not at 2^16, but depth <= 2^16 keeps the
// modular comparison right.
func NeedEvent(eventIdx, new, old uint32) bool {
	return uint16(new-eventIdx-1) < uint16(new-old)
}
