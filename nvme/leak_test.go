package nvme

import (
	"runtime"
	"testing"
	"time"
)

// checkGoroutines records the number of goroutines now and, when the test
// and every cleanup registered after this call have finished (the model's
// worker, the Controller), fails if more are left. Call it first in a
// test, before anything that starts goroutines.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		// Goroutines that were told to stop may need a moment to exit.
		deadline := time.Now().Add(2 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines left behind (%d before, %d after):\n%s", n-before, before, n, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// checkSlots fails if qp holds a slot or a request: after every request
// has been delivered, every command slot must be free again and nothing
// may still count as in flight.
func checkSlots(t *testing.T, qp *QueuePair) {
	t.Helper()
	if n := qp.Inflight(); n != 0 {
		t.Errorf("queue %d: %d requests still in flight", qp.id, n)
	}
	if free, slots := qp.pair.Free(), qp.pair.Slots(); free != slots {
		t.Errorf("queue %d: %d of %d slots free: %d leaked", qp.id, free, slots, slots-free)
	}
	for cid, r := range qp.inflight {
		if r != nil {
			t.Errorf("queue %d: cid %d still maps to a request (%v lba %d)", qp.id, cid, r.Opcode, r.LBA)
		}
	}
}
