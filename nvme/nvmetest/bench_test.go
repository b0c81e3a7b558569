package nvmetest

import "testing"

// BenchmarkRead4K measures one 4 KiB read round trip through an inline
// model: the cost the model adds to driver benchmarks.
func BenchmarkRead4K(b *testing.B) {
	h := newHost(b, Config{Inline: true})
	io := h.ioQueue(1, 64)
	buf := h.alloc(4096)
	cmd := rw(OpRead, 1, 0, 8, buf.IOVA, 0)
	b.ReportAllocs()
	b.SetBytes(4096)
	for b.Loop() {
		io.submit(cmd)
		if _, ok := io.poll(); !ok {
			b.Fatal("no completion from an inline model")
		}
	}
}

// TestInlineReadDoesNotAllocate keeps the model out of the driver's
// zero-allocation tests: a steady-state read round trip allocates nothing.
func TestInlineReadDoesNotAllocate(t *testing.T) {
	h := newHost(t, Config{Inline: true})
	io := h.ioQueue(1, 64)
	buf := h.alloc(64 << 10)
	p1, p2 := h.prps(buf, 512, 60<<10) // offset first page, then a PRP list
	for _, cmd := range []Command{
		rw(OpRead, 1, 0, 16, buf.IOVA, buf.IOVA+4096),
		rw(OpRead, 1, 0, 120, p1, p2),
	} {
		io.ok(cmd) // warm up reusable buffers
		if n := testing.AllocsPerRun(100, func() {
			io.submit(cmd)
			if _, ok := io.poll(); !ok {
				t.Fatal("no completion from an inline model")
			}
		}); n != 0 {
			t.Errorf("%v allocations per %d-block read round trip, want 0", n, cmd.NLB())
		}
	}
}
