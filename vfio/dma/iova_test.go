package dma

import (
	"errors"
	"math"
	"math/rand"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const pg = 4096

func mustSpace(t *testing.T, ranges []Range) *IOVASpace {
	t.Helper()
	s, err := NewIOVASpace(ranges, pg)
	if err != nil {
		t.Fatalf("NewIOVASpace(%v): %v", ranges, err)
	}
	return s
}

func TestIOVANeverZero(t *testing.T) {
	s := mustSpace(t, []Range{{0, 0xffff}})
	iova, err := s.Alloc(1)
	if err != nil {
		t.Fatal(err)
	}
	if iova == 0 {
		t.Fatal("Alloc handed out IOVA 0")
	}
	if iova != pg {
		t.Errorf("first IOVA = %#x, want %#x (first fit after page 0)", iova, pg)
	}
}

// The kernel reports ranges as inclusive and not necessarily page aligned;
// only whole pages inside a range may be used.
func TestIOVARangesAreShrunkToPages(t *testing.T) {
	s := mustSpace(t, []Range{
		{0x10001, 0x1ffff}, // starts mid-page: first page dropped
		{0x30000, 0x32ffe}, // ends mid-page: last page dropped
		{0x50000, 0x50fff}, // exactly one page
		{0x70000, 0x70ffe}, // less than a page: nothing usable
	})
	want := []Range{{0x11000, 0x1ffff}, {0x30000, 0x31fff}, {0x50000, 0x50fff}}
	if diff := cmp.Diff(want, s.Ranges()); diff != "" {
		t.Errorf("usable ranges (-want +got):\n%s", diff)
	}
}

func TestIOVABadRanges(t *testing.T) {
	if _, err := NewIOVASpace([]Range{{0x2000, 0x1000}}, pg); err == nil {
		t.Error("a range that ends before it starts was accepted")
	}
	if _, err := NewIOVASpace([]Range{{0, 0xfff}}, pg); err == nil {
		t.Error("a space holding only page 0 was accepted")
	}
	if _, err := NewIOVASpace(nil, pg); err == nil {
		t.Error("an empty space was accepted")
	}
	if _, err := NewIOVASpace([]Range{{0, 1 << 30}}, 3000); err == nil {
		t.Error("a page size that is not a power of two was accepted")
	}
}

// A range reaching the top of the 64-bit space must not wrap around.
func TestIOVATopOfSpace(t *testing.T) {
	s := mustSpace(t, []Range{{math.MaxUint64 - 3*pg + 1, math.MaxUint64}})
	want := []Range{{math.MaxUint64 - 3*pg + 1, math.MaxUint64 - pg}}
	if diff := cmp.Diff(want, s.Ranges()); diff != "" {
		t.Errorf("usable ranges (-want +got):\n%s", diff)
	}
	a, err := s.Alloc(2 * pg)
	if err != nil {
		t.Fatal(err)
	}
	if a != math.MaxUint64-3*pg+1 {
		t.Errorf("Alloc = %#x", a)
	}
	if _, err := s.Alloc(math.MaxUint64); err == nil {
		t.Error("Alloc(MaxUint64) succeeded")
	}
}

// With a hole in the space (like x86's MSI window at 0xfee00000), an
// allocation that does not fit before the hole goes after it, and nothing is
// ever handed out inside the hole.
func TestIOVAHoles(t *testing.T) {
	s := mustSpace(t, []Range{
		{0xfef00000, 0xffffffff}, // given out of order on purpose
		{0, 0xfedfffff},
	})
	hole := Range{0xfee00000, 0xfeefffff}
	big, err := s.Alloc(0xfed00000) // all of the first range after page 0, minus 0xff000
	if err != nil {
		t.Fatal(err)
	}
	if big != pg {
		t.Errorf("big = %#x, want %#x", big, pg)
	}
	// 0xff000 bytes remain below the hole; 0x100000 does not fit there.
	next, err := s.Alloc(0x100000)
	if err != nil {
		t.Fatal(err)
	}
	if next != 0xfef00000 {
		t.Errorf("allocation that does not fit below the hole went to %#x, want 0xfef00000", next)
	}
	// The remainder below the hole is still used first.
	small, err := s.Alloc(pg)
	if err != nil {
		t.Fatal(err)
	}
	if small != 0xfed01000 {
		t.Errorf("small = %#x, want 0xfed01000", small)
	}
	for _, a := range []uint64{big, next, small} {
		if a >= hole.Start && a <= hole.End {
			t.Errorf("IOVA %#x is inside the hole %v", a, hole)
		}
	}
}

func TestIOVAExhaustion(t *testing.T) {
	s := mustSpace(t, []Range{{0, 4*pg - 1}}) // pages 1..3 usable
	for i := 0; i < 3; i++ {
		if _, err := s.Alloc(pg); err != nil {
			t.Fatalf("Alloc #%d: %v", i, err)
		}
	}
	_, err := s.Alloc(pg)
	if !errors.Is(err, ErrIOVAExhausted) {
		t.Fatalf("Alloc when full: %v, want ErrIOVAExhausted", err)
	}
	want := "dma: IOVA space exhausted: no free range of 0x1000 bytes (largest free range 0x0 bytes, 0x0 bytes free in all)"
	if err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}
}

// Fragmentation: enough bytes free in total but no single range big enough.
func TestIOVAFragmented(t *testing.T) {
	s := mustSpace(t, []Range{{0, 5*pg - 1}}) // pages 1..4
	var a [4]uint64
	for i := range a {
		var err error
		if a[i], err = s.Alloc(pg); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []int{0, 2} {
		if err := s.Free(a[i], pg); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.Alloc(2 * pg)
	if !errors.Is(err, ErrIOVAExhausted) {
		t.Fatalf("2-page Alloc with two separate free pages: %v, want ErrIOVAExhausted", err)
	}
	// Freeing the page between them merges the three into one range.
	if err := s.Free(a[1], pg); err != nil {
		t.Fatal(err)
	}
	got, err := s.Alloc(3 * pg)
	if err != nil {
		t.Fatalf("3-page Alloc after merge: %v", err)
	}
	if got != a[0] {
		t.Errorf("merged range starts at %#x, want %#x", got, a[0])
	}
}

func TestIOVAFreeErrors(t *testing.T) {
	s := mustSpace(t, []Range{{0, 16*pg - 1}})
	a, err := s.Alloc(2 * pg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		iova, size uint64
	}{
		{"unaligned", a + 1, pg},
		{"outside the space", 64 * pg, pg},
		{"page 0", 0, pg},
		{"never allocated", a + 4*pg, pg},
		{"overlapping a free range", a + pg, 2 * pg},
		{"zero size", a, 0},
	} {
		if err := s.Free(tc.iova, tc.size); err == nil {
			t.Errorf("Free %s (%#x+%#x) succeeded", tc.name, tc.iova, tc.size)
		}
	}
	if err := s.Free(a, 2*pg); err != nil {
		t.Fatalf("Free of a real allocation: %v", err)
	}
	if err := s.Free(a, 2*pg); err == nil {
		t.Error("double Free succeeded")
	}
	if got, want := s.Available(), uint64(15*pg); got != want {
		t.Errorf("Available = %#x after freeing everything, want %#x", got, want)
	}
}

// Random allocs and frees never hand out overlapping or out-of-space ranges,
// and freeing everything gives back one range per input range.
func TestIOVARandom(t *testing.T) {
	ranges := []Range{{0, 0x3fffff}, {0x800000, 0x9fffff}, {0x1000000, 0x10fffff}}
	s := mustSpace(t, ranges)
	total := s.Available()
	r := rand.New(rand.NewSource(1))
	live := map[uint64]uint64{}
	owner := map[uint64]uint64{} // page -> allocation
	for step := 0; step < 5000; step++ {
		if len(live) > 0 && r.Intn(2) == 0 {
			for a, n := range live {
				if err := s.Free(a, n); err != nil {
					t.Fatalf("step %d: Free(%#x, %#x): %v", step, a, n, err)
				}
				for p := a; p < a+n; p += pg {
					delete(owner, p)
				}
				delete(live, a)
				break
			}
			continue
		}
		n := uint64(1+r.Intn(16)) * pg
		a, err := s.Alloc(n)
		if errors.Is(err, ErrIOVAExhausted) {
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		in := false
		for _, rg := range s.Ranges() {
			if a >= rg.Start && a+n-1 <= rg.End {
				in = true
			}
		}
		if !in || a == 0 {
			t.Fatalf("step %d: Alloc(%#x) = %#x is outside %v", step, n, a, s.Ranges())
		}
		for p := a; p < a+n; p += pg {
			if o, ok := owner[p]; ok {
				t.Fatalf("step %d: page %#x handed out twice (allocations %#x and %#x)", step, p, o, a)
			}
			owner[p] = a
		}
		live[a] = n
	}
	for a, n := range live {
		if err := s.Free(a, n); err != nil {
			t.Fatal(err)
		}
	}
	if s.Available() != total || len(s.free) != len(ranges) {
		t.Errorf("after freeing everything: %#x bytes free in %d ranges, want %#x in %d", s.Available(), len(s.free), total, len(ranges))
	}
}
