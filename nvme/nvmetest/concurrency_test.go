package nvmetest

import (
	"bytes"
	"fmt"
	"github.com/nvmepoll/nvmepoll/vfio/dma"
	"sync"
	"testing"
)

// TestConcurrentQueues drives four I/O queue pairs from four goroutines
// against the worker: each writes its own region with a pattern and reads
// it back, many times over, with wrap-arounds of both rings. Run with -race.
func TestConcurrentQueues(t *testing.T) {
	t.Run("mmio", func(t *testing.T) { concurrentQueues(t, false) })
	t.Run("shadow", func(t *testing.T) { concurrentQueues(t, true) })
}

// concurrentQueues is TestConcurrentQueues, optionally with shadow
// doorbells: then the host rings MMIO only when EventIdx says the model
// may be asleep, and a lost wake-up shows as a timeout.
func concurrentQueues(t *testing.T, shadow bool) {
	h := newHost(t, Config{ShadowDoorbells: shadow})
	const queues, rounds, depth = 4, 200, 4
	var sh, ev dma.Buffer
	if shadow {
		sh, ev = h.alloc(4096), h.alloc(4096)
		h.admin.ok(Command{Opcode: OpDoorbellBuf, PRP1: sh.IOVA, PRP2: ev.IOVA})
	}
	qs := make([]*hostQueue, queues)
	for i := range qs {
		qs[i] = h.ioQueue(uint16(i+1), depth)
		if shadow {
			qs[i].shadow, qs[i].event = &sh, &ev
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, queues)
	for i, q := range qs {
		buf := h.alloc(4096)
		wg.Go(func() {
			for r := range rounds {
				want := pattern(4096, byte(i*rounds+r))
				copy(buf.Bytes, want)
				lba := uint64(i * 8)
				// A write and a flush back to back (two outstanding, so
				// with shadow doorbells the second usually needs no MMIO
				// write), then a read of what was written.
				q.tail64(rw(OpWrite, 1, lba, 8, buf.IOVA, 0), uint16(3*r))
				q.tail64(Command{Opcode: OpFlush, NSID: 1}, uint16(3*r+1))
				for want := range uint16(2) {
					c, err := q.waitErr()
					if err != nil || c.Status != 0 || c.CID != uint16(3*r)+want {
						errs <- fmt.Errorf("queue %d round %d: %+v %v", i+1, r, c, err)
						return
					}
				}
				clear(buf.Bytes)
				q.tail64(rw(OpRead, 1, lba, 8, buf.IOVA, 0), uint16(3*r+2))
				if c, err := q.waitErr(); err != nil || c.Status != 0 || c.CID != uint16(3*r+2) {
					errs <- fmt.Errorf("queue %d round %d read: %+v %v", i+1, r, c, err)
					return
				}
				if !bytes.Equal(buf.Bytes, want) {
					errs <- fmt.Errorf("queue %d round %d: read back different data", i+1, r)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := h.c.Stats()
	if n := st.IOCommands[OpRead]; n != queues*rounds {
		t.Errorf("%d reads executed, want %d", n, queues*rounds)
	}
	ioSubmits := uint64(3 * queues * rounds)
	adminSubmits := st.AdminCommands[OpCreateCQ] + st.AdminCommands[OpCreateSQ] + st.AdminCommands[OpDoorbellBuf]
	mmio := st.SQDoorbellWrites - adminSubmits
	t.Logf("%d I/O submissions, %d MMIO SQ doorbell writes", ioSubmits, mmio)
	if shadow && mmio >= ioSubmits {
		t.Errorf("shadow doorbells saved no MMIO writes (%d for %d submissions)", mmio, ioSubmits)
	}
	if !shadow && mmio != ioSubmits {
		t.Errorf("%d MMIO SQ doorbell writes for %d submissions", mmio, ioSubmits)
	}
	h.checkNoFaults()
}
