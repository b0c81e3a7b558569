package queue

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// TestControllerOnAnotherGoroutine runs the device end on its own goroutine,
// as real hardware runs beside the CPU, talking to the host only through
// ring memory and doorbells. Under -race this checks the memory protocol:
// SQE stores before the tail doorbell, CQE DW0-2 before DW3 (atomic) on the
// device side, DW3 (atomic) before DW0-2 on the host side, and the head
// doorbell before the device reuses a CQ slot.
func TestControllerOnAnotherGoroutine(t *testing.T) {
	const depth, ios = 16, 5000
	var sqTail, cqHead atomic.Uint32
	cfg := Config{
		ID: 5, Depth: depth,
		// Go heap memory, not MapHost: the race detector only watches the
		// Go heap. Size classes keep these 1024- and 256-byte blocks
		// aligned to their size, which New checks.
		SQ:     dma.Buffer{Bytes: make([]byte, depth*SQESize), IOVA: fakeIOVA},
		CQ:     dma.Buffer{Bytes: make([]byte, depth*CQESize), IOVA: fakeIOVA + 0x1000},
		SQTail: DoorbellFunc(func(v uint32) { sqTail.Store(v) }),
		CQHead: DoorbellFunc(func(v uint32) { cqHead.Store(v) }),
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // the controller
		var head, tail uint32
		phase := true
		for {
			select {
			case <-stop:
				return
			default:
			}
			if head == sqTail.Load() || (tail+1)%depth == cqHead.Load() {
				runtime.Gosched() // nothing to fetch, or CQ full
				continue
			}
			sqe := cfg.SQ.Bytes[head*SQESize : (head+1)*SQESize]
			cmd := ParseCommand(sqe)
			head = (head + 1) % depth
			// Echo the LBA in DW0 so the host can check it got the
			// completion of the command it posted under that cid.
			PostCompletion(cfg.CQ.Bytes[tail*CQESize:(tail+1)*CQESize],
				Completion{DW0: cmd.CDW10, CID: cmd.CID, SQID: 5, SQHead: uint16(head)}, phase)
			if tail = (tail + 1) % depth; tail == 0 {
				phase = !phase
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()

	var lbaOf [depth - 1]uint32
	posted, done := 0, 0
	for done < ios {
		for posted < ios {
			cid, err := p.Acquire()
			if err != nil {
				break
			}
			cmd := readCmd(cid, uint64(posted))
			lbaOf[cid] = uint32(posted)
			p.Post(&cmd)
			posted++
		}
		p.UpdateTail()
		for {
			c, ok, err := p.Next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			if c.DW0 != lbaOf[c.CID] {
				t.Fatalf("cid %d completed with lba %d, posted lba %d", c.CID, c.DW0, lbaOf[c.CID])
			}
			p.Release(c.CID)
			done++
		}
		if !p.UpdateHead() {
			runtime.Gosched()
		}
	}
	if s := p.Stats(); s.Completed != ios || s.Bad() != 0 {
		t.Errorf("stats %+v", s)
	}
}
