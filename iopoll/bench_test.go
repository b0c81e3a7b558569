package iopoll

import (
	"fmt"
	"testing"
)

// instantDevice completes, at the next Reap, everything issued since the
// last one: a device with zero latency, so the benchmarks measure the
// Ring's own overhead.
type instantDevice struct {
	ring    *Ring
	pending [64]*Request
	n       int
}

func (d *instantDevice) issue(q *Request) {
	d.pending[d.n] = q
	d.n++
}

func (d *instantDevice) Reap(max int) (int, error) {
	n := min(d.n, max)
	for _, q := range d.pending[:n] {
		d.ring.Complete(q)
	}
	copy(d.pending[:], d.pending[n:d.n])
	d.n -= n
	return n, nil
}

// BenchmarkPoll is the cost per request of Submitted plus its share of a
// Poll: at QD1 one Poll(1, 1) per request, at QD32 one Poll(32, 32) per 32.
func BenchmarkPoll(b *testing.B) {
	for _, qd := range []int{1, 32} {
		b.Run(fmt.Sprintf("QD%d", qd), func(b *testing.B) {
			d := &instantDevice{}
			delivered := 0
			d.ring = New(d, func(batch []*Request) { delivered += len(batch) })
			reqs := make([]Request, qd)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				q := &reqs[i%qd]
				d.issue(q)
				if err := d.ring.Submitted(q); err != nil {
					b.Fatal(err)
				}
				if i++; i%qd != 0 {
					continue
				}
				if n, err := d.ring.Poll(qd, qd); n != qd || err != nil {
					b.Fatalf("Poll(%d, %d) = %d, %v", qd, qd, n, err)
				}
			}
			if delivered != i/qd*qd {
				b.Fatalf("delivered %d of %d", delivered, i/qd*qd)
			}
		})
	}
}

// BenchmarkPollIdle is a non-spinning Poll(0, 8) with nothing in flight:
// what a reaper pays to look.
func BenchmarkPollIdle(b *testing.B) {
	r := New(&instantDevice{}, func([]*Request) {})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Poll(0, 8); err != nil {
			b.Fatal(err)
		}
	}
}
