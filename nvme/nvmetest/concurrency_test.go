package nvmetest

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
)

// TestConcurrentQueues drives four I/O queue pairs from four goroutines
// against the worker: each writes its own region with a pattern and reads
// it back, many times over, with wrap-arounds of both rings. Run with -race.
func TestConcurrentQueues(t *testing.T) {
	h := newHost(t, Config{})
	const queues, rounds, depth = 4, 50, 4
	qs := make([]*hostQueue, queues)
	for i := range qs {
		qs[i] = h.ioQueue(uint16(i+1), depth)
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
				for _, op := range []uint8{OpWrite, OpRead} {
					if op == OpRead {
						clear(buf.Bytes)
					}
					q.tail64(rw(op, 1, lba, 8, buf.IOVA, 0), uint16(r))
					c, err := q.waitErr()
					if err != nil || c.Status != 0 || c.CID != uint16(r) {
						errs <- fmt.Errorf("queue %d round %d op %#x: %+v %v", i+1, r, op, c, err)
						return
					}
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
	if n := h.c.Stats().IOCommands[OpRead]; n != queues*rounds {
		t.Errorf("%d reads executed, want %d", n, queues*rounds)
	}
	h.checkNoFaults()
}
