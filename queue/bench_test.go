package queue

import (
	"fmt"
	"testing"
)

// BenchmarkSubmitReap measures the host side of one 4 KiB read: Acquire,
// Post, the SQ doorbell, Next, the CQ doorbell and Release, against a
// zero-work controller that turns each SQE into a CQE inside the doorbell
// write. One op is one I/O; at QD32 the doorbells are shared by a batch of
// 32, so their cost per I/O is 1/32.
func BenchmarkSubmitReap(b *testing.B) {
	for _, qd := range []int{1, 32} {
		b.Run(fmt.Sprintf("QD%d", qd), func(b *testing.B) {
			p, f, _ := testPair(b, 1, 64)
			f.auto = true
			cmd := readCmd(0, 0)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				cid, err := p.Acquire()
				if err != nil {
					b.Fatal(err)
				}
				cmd.CID = cid
				cmd.CDW10 = uint32(i) * 8
				p.Post(&cmd)
				if i++; i%qd != 0 {
					continue
				}
				p.UpdateTail()
				for {
					c, ok, err := p.Next()
					if err != nil {
						b.Fatal(err)
					}
					if !ok {
						break
					}
					p.Release(c.CID)
				}
				p.UpdateHead()
			}
			if s := p.Stats(); s.Bad() != 0 {
				b.Fatalf("bad CQEs: %+v", s)
			}
		})
	}
}
