package nvme

import (
	"context"
	"fmt"
	"unsafe"

	"github.com/nvmepoll/nvmepoll/queue"
	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// Shadow doorbells (Doorbell Buffer Config, NVMe base spec 2.0 5.8). The
// host gives the controller two pages: the shadow doorbell buffer, where it
// stores every new SQ tail and CQ head, and the EventIdx buffer, where the
// controller writes the value after which it wants an MMIO doorbell again.
// Slot i is at the same offset as doorbell register i (2*qid+isCQ, times
// the doorbell stride). Emulated controllers advertise it (QEMU 7.2 does)
// because every MMIO write is a trap into the hypervisor; with it a busy
// controller is told about new commands through memory.
//
// Only I/O queues use it. The admin queue's slots exist (QEMU maps qid 0
// too), but the spec still requires an MMIO write for every admin doorbell
// update, so the shadow would save nothing there; QEMU mirrors the MMIO
// value into the admin slot itself. Linux does the same.
type dbbuf struct {
	shadow, event dma.Buffer // one page each, freed at Close
	on            bool       // Doorbell Buffer Config succeeded
	err           error      // why shadow doorbells are off, if asked for
}

// setupShadowDoorbells allocates the two pages and sends Doorbell Buffer
// Config when the controller offers it (OACS bit 8) and
// Options.NoShadowDoorbells does not turn it off. A controller that
// rejects the command is not an error: its queues use MMIO doorbells, and
// ShadowDoorbells says why.
func (c *Controller) setupShadowDoorbells(ctx context.Context) error {
	bufs, why := c.shadowDoorbellPlan()
	if bufs == nil {
		c.dbbuf.err = why
		return nil
	}
	a := c.dev.DMA()
	var err error
	for i, b := range []*dma.Buffer{&c.dbbuf.shadow, &c.dbbuf.event} {
		if *b, err = a.Alloc(bufs[i].size); err != nil {
			return fmt.Errorf("nvme: allocating the %s: %w", bufs[i].what, err)
		}
	}
	cmd := queue.Command{Opcode: uint8(AdminDoorbellBufferConfig), PRP1: c.dbbuf.shadow.IOVA, PRP2: c.dbbuf.event.IOVA}
	if _, err := c.AdminCommand(ctx, &cmd); err != nil {
		// The pages stay allocated until Close: the controller may
		// have looked at them.
		c.dbbuf.err = err
		return nil
	}
	c.dbbuf.on = true
	return nil
}

// shadowDoorbellPlan returns the pages setupShadowDoorbells maps, shadow
// then EventIdx, or none: when shadow doorbells are off or not offered
// (why is nil), or when they cannot be used (why says so).
func (c *Controller) shadowDoorbellPlan() (bufs []dmaBuf, why error) {
	if c.opts.NoShadowDoorbells || !c.id.OACS.DoorbellBufferConfig() {
		return nil, nil
	}
	// One page holds the slots of every granted queue unless the stride is
	// large; the spec's buffers are one memory page each.
	if need := DoorbellOffset(uint16(len(c.qids)-1), true, c.stride) + 4 - RegDoorbellBase; need > PageSize {
		return nil, fmt.Errorf("%d queues at a doorbell stride of %d bytes need %d bytes of shadow doorbells, more than a %d-byte page", len(c.qids), c.stride, need, PageSize)
	}
	return []dmaBuf{{"shadow doorbell page", PageSize}, {"EventIdx page", PageSize}}, nil
}

// ShadowDoorbells reports whether I/O queues use shadow doorbells and, when
// they do not although the controller offers them, why.
func (c *Controller) ShadowDoorbells() (on bool, why error) {
	return c.dbbuf.on, c.dbbuf.err
}

// freeShadowDoorbells returns the two pages at Close, after shutdown.
func (c *Controller) freeShadowDoorbells() []error {
	var errs []error
	a := c.dev.DMA()
	for _, b := range []*dma.Buffer{&c.dbbuf.shadow, &c.dbbuf.event} {
		if b.Len() > 0 {
			errs = append(errs, a.Free(*b))
			*b = dma.Buffer{}
		}
	}
	c.dbbuf.on = false
	return errs
}

// shadowDoorbells wraps the queue pair's MMIO doorbells in shadow doorbells
// when they are configured. Called before the queues are created on the
// controller: NewShadowDoorbell zeroes the slots an earlier queue with the
// same id left behind.
func (q *QueuePair) shadowDoorbells(sq, cq queue.Doorbell) (queue.Doorbell, queue.Doorbell) {
	b := &q.c.dbbuf
	if !b.on {
		return sq, cq
	}
	slot := func(buf dma.Buffer, isCQ bool) *uint32 {
		off := DoorbellOffset(q.id, isCQ, q.c.stride) - RegDoorbellBase
		return (*uint32)(unsafe.Pointer(&buf.Bytes[off]))
	}
	q.sqShadow = queue.NewShadowDoorbell(slot(b.shadow, false), slot(b.event, false), sq)
	q.cqShadow = queue.NewShadowDoorbell(slot(b.shadow, true), slot(b.event, true), cq)
	return q.sqShadow, q.cqShadow
}

// DoorbellStats counts one queue pair's doorbell traffic: per direction,
// the values published and the MMIO register writes among them. Without
// shadow doorbells every update is an MMIO write.
type DoorbellStats struct {
	Shadow bool // the pair uses shadow doorbells
	SQ, CQ queue.DoorbellStats
}

// MMIOWrites is the total of MMIO doorbell writes, SQ and CQ.
func (s DoorbellStats) MMIOWrites() uint64 { return s.SQ.MMIOWrites + s.CQ.MMIOWrites }

// Updates is the total of doorbell values published, SQ and CQ.
func (s DoorbellStats) Updates() uint64 { return s.SQ.Updates + s.CQ.Updates }

// Doorbells returns the queue pair's doorbell counters. Like the rest of
// the pair, call it from the goroutine that uses it.
func (q *QueuePair) Doorbells() DoorbellStats {
	if q.sqShadow != nil {
		return DoorbellStats{Shadow: true, SQ: q.sqShadow.Stats(), CQ: q.cqShadow.Stats()}
	}
	s := q.pair.Stats()
	return DoorbellStats{
		SQ: queue.DoorbellStats{Updates: s.SQDoorbells, MMIOWrites: s.SQDoorbells},
		CQ: queue.DoorbellStats{Updates: s.CQDoorbells, MMIOWrites: s.CQDoorbells},
	}
}
