package mmio

import "testing"

func TestStoreAndLoad(t *testing.T) {
	mem := make([]byte, 64)
	r := NewRegion(mem)
	r.Write32(8, 0xdeadbeef)
	if got := r.Read32(8); got != 0xdeadbeef {
		t.Fatalf("Read32(8) = %#x after Write32(8, 0xdeadbeef)", got)
	}
	// Little-endian layout is what the device sees.
	if mem[8] != 0xef || mem[11] != 0xde {
		t.Fatalf("bytes 8..11 = % x, want ef be ad de", mem[8:12])
	}
	if r.Read32(4) != 0 || r.Read32(12) != 0 {
		t.Fatal("Write32 touched a neighbouring register")
	}
}

func TestWordRejectsBadOffsets(t *testing.T) {
	r := NewRegion(make([]byte, 16))
	for _, off := range []int{-4, 2, 13, 16} {
		if _, err := r.Word(off); err == nil {
			t.Errorf("Word(%d) in a 16-byte region: no error", off)
		}
	}
	if _, err := r.Word(12); err != nil {
		t.Errorf("Word(12) in a 16-byte region: %v", err)
	}
}

func BenchmarkStore32(b *testing.B) {
	var w uint32
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		Store32(&w, uint32(i))
	}
}
