package nvme

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
)

// TestLazyCQHead keeps 7 reads in flight on an 8-entry SQ for many laps of
// its CQ and checks that the CQ head doorbell is written about once per
// CQDepth-Depth+1 completions, never so late that the controller finds the
// CQ full, with MMIO doorbells and with shadow doorbells; and that a CQ no
// larger than the SQ gets a head write on every reap.
func TestLazyCQHead(t *testing.T) {
	const depth, ios = 8, 3000
	for _, tc := range []struct {
		name    string
		shadow  bool
		cqDepth int // 0: the default
		want    int // CQ entries created
	}{
		{"mmio", false, 0, 256},
		{"shadow", true, 0, 256},
		{"cq-as-deep-as-sq", false, depth, depth},
		{"cq-twice-the-sq", false, 2 * depth, 2 * depth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, m := openModel(t, nvmetest.Config{ShadowDoorbells: tc.shadow}, nil)
			ns, err := c.Namespace(1)
			if err != nil {
				t.Fatal(err)
			}
			qp, err := c.NewQueuePairWith(QueueOptions{Depth: depth, CQDepth: tc.cqDepth, Mode: ModePoll})
			if err != nil {
				t.Fatal(err)
			}
			defer qp.Close()
			if info, ok := m.CompletionQueue(qp.ID()); !ok || info.Size != tc.want {
				t.Fatalf("CQ %d on the controller: %+v, want %d entries", qp.ID(), info, tc.want)
			}
			pool, err := c.NewPool(depth-1, 4096)
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()

			var reqs [depth - 1]Request
			var free []*Request
			completed := 0
			done := func(r *Request) {
				if r.Err != nil {
					t.Errorf("read %d: %v", r.Tag, r.Err)
				}
				completed++
				free = append(free, r)
			}
			for i := range reqs {
				b, err := pool.Get()
				if err != nil {
					t.Fatal(err)
				}
				reqs[i] = Request{Opcode: NVMRead, Namespace: ns, LBA: uint64(i), Blocks: 1, Buf: b, Done: done, Tag: uint64(i)}
				free = append(free, &reqs[i])
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			before := qp.Doorbells()
			for submitted := 0; completed < ios; {
				if n := min(len(free), ios-submitted); n > 0 {
					posted, err := qp.SubmitBatch(free[:n])
					if err != nil && !errors.Is(err, ErrQueueFull) {
						t.Fatal(err)
					}
					submitted += posted
					free = free[:copy(free, free[posted:])]
				}
				if _, err := qp.PollContext(ctx, 1, depth); err != nil {
					t.Fatalf("after %d of %d reads: %v (controller: %+v)", completed, ios, err, m.Stats())
				}
			}
			if n := m.Stats().CQFull; n != 0 {
				t.Errorf("the controller found the CQ full %d times: the head doorbell lagged past the slack", n)
			}
			db := qp.Doorbells()
			writes := int(db.CQ.Updates - before.CQ.Updates)
			if db.CQ.MMIOWrites-before.CQ.MMIOWrites > uint64(writes) {
				t.Errorf("%d CQ MMIO writes for %d head updates", db.CQ.MMIOWrites-before.CQ.MMIOWrites, writes)
			}
			// A write once the unwritten entries pass the slack; a reap
			// takes 1 to depth-1 entries, so it passes by up to depth-2.
			slack := tc.want - depth
			lo, hi := ios/(slack+depth-1)-1, ios/(slack+1)+1
			if writes < lo || writes > hi {
				t.Errorf("%d reads with CQ slack %d: %d CQ head updates, want %d..%d", ios, slack, writes, lo, hi)
			}
		})
	}
}

// TestCQDepthOutOfRange rejects a CQ smaller than its SQ or past CAP.MQES.
func TestCQDepthOutOfRange(t *testing.T) {
	c, _ := openModel(t, nvmetest.Config{}, nil)
	limit := c.CAP().MaxQueueEntries()
	for _, cq := range []int{7, limit + 1} {
		_, err := c.NewQueuePairWith(QueueOptions{Depth: 8, CQDepth: cq})
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("CQDepth %d with Depth 8: %v, want ErrInvalidArgument", cq, err)
		}
	}
}
