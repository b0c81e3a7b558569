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
