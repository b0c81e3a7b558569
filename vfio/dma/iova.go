package dma

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// ErrIOVAExhausted means no free IOVA range is large enough for a request.
var ErrIOVAExhausted = errors.New("dma: IOVA space exhausted")

// Range is an inclusive range of I/O virtual addresses [Start, End], the
// form in which VFIO reports the ranges the IOMMU accepts.
type Range struct {
	Start, End uint64
}

func (r Range) String() string { return fmt.Sprintf("[%#x, %#x]", r.Start, r.End) }

// span is a half-open range [start, end) of free IOVA space.
type span struct{ start, end uint64 }

// IOVASpace hands out device addresses from the ranges an IOMMU accepts.
// It is pure bookkeeping (no system calls), first fit over a sorted free list
// with neighbours merged on Free. Every address and size is a multiple of the
// page size, and IOVA 0 is never handed out, so a zero IOVA in a command
// always means a bug rather than a valid buffer.
//
// An IOVASpace is not safe for concurrent use; its owner (vfio.Device) locks.
type IOVASpace struct {
	page  uint64
	valid []span // the usable space, after alignment; for checking Free
	free  []span // sorted by start, disjoint, never adjacent
}

// NewIOVASpace returns an allocator over ranges (inclusive, in any order,
// possibly overlapping) with the given page size, a power of two. Each range
// is shrunk to whole pages, and the first page is dropped so that 0 is never
// used. It fails if nothing usable remains.
func NewIOVASpace(ranges []Range, pageSize int) (*IOVASpace, error) {
	if pageSize <= 0 || pageSize&(pageSize-1) != 0 {
		return nil, fmt.Errorf("dma: IOVA page size %d is not a power of two", pageSize)
	}
	page := uint64(pageSize)
	var spans []span
	for _, r := range ranges {
		if r.End < r.Start {
			return nil, fmt.Errorf("dma: IOVA range %v ends before it starts", r)
		}
		start := max(r.Start, page) // never IOVA 0
		if start > math.MaxUint64-(page-1) {
			continue
		}
		start = (start + page - 1) &^ (page - 1)
		// One past the last byte, rounded down to a page. An End of
		// MaxUint64 would wrap, so that range gives up its last page.
		var end uint64
		if r.End == math.MaxUint64 {
			end = math.MaxUint64 &^ (page - 1)
		} else {
			end = (r.End + 1) &^ (page - 1)
		}
		if end > start {
			spans = append(spans, span{start, end})
		}
	}
	spans = normalize(spans)
	if len(spans) == 0 {
		return nil, fmt.Errorf("dma: no usable IOVA space in %v with %d-byte pages", ranges, pageSize)
	}
	return &IOVASpace{page: page, valid: spans, free: append([]span(nil), spans...)}, nil
}

// normalize sorts spans and merges overlapping or adjacent ones.
func normalize(s []span) []span {
	sort.Slice(s, func(i, j int) bool { return s[i].start < s[j].start })
	var out []span
	for _, x := range s {
		if n := len(out); n > 0 && x.start <= out[n-1].end {
			out[n-1].end = max(out[n-1].end, x.end)
			continue
		}
		out = append(out, x)
	}
	return out
}

// PageSize is the allocation granule.
func (s *IOVASpace) PageSize() int { return int(s.page) }

// Ranges returns the usable space as inclusive ranges (after alignment and
// without page 0), for messages and tests.
func (s *IOVASpace) Ranges() []Range {
	out := make([]Range, len(s.valid))
	for i, v := range s.valid {
		out[i] = Range{v.start, v.end - 1}
	}
	return out
}

// Available is the number of free bytes, in all ranges together.
func (s *IOVASpace) Available() uint64 {
	var n uint64
	for _, f := range s.free {
		n += f.end - f.start
	}
	return n
}

// roundUp rounds size up to whole pages, or reports that it cannot.
func (s *IOVASpace) roundUp(size uint64) (uint64, bool) {
	if size == 0 || size > math.MaxUint64-(s.page-1) {
		return 0, false
	}
	return (size + s.page - 1) &^ (s.page - 1), true
}

// Alloc reserves size bytes (rounded up to whole pages) and returns the
// first address. When no free range is large enough it returns an error
// wrapping ErrIOVAExhausted that says how much is left.
func (s *IOVASpace) Alloc(size uint64) (uint64, error) {
	n, ok := s.roundUp(size)
	if !ok {
		return 0, fmt.Errorf("dma: cannot allocate %#x bytes of IOVA space", size)
	}
	var largest uint64
	for i := range s.free {
		f := &s.free[i]
		if l := f.end - f.start; l >= n {
			iova := f.start
			f.start += n
			if f.start == f.end {
				s.free = append(s.free[:i], s.free[i+1:]...)
			}
			return iova, nil
		} else if l > largest {
			largest = l
		}
	}
	return 0, fmt.Errorf("%w: no free range of %#x bytes (largest free range %#x bytes, %#x bytes free in all)",
		ErrIOVAExhausted, n, largest, s.Available())
}

// Free returns [iova, iova+size) (size rounded up as in Alloc) to the free
// list. It fails, changing nothing, if the range is unaligned, outside the
// space, or partly free already (a double free).
func (s *IOVASpace) Free(iova, size uint64) error {
	n, ok := s.roundUp(size)
	if !ok || iova%s.page != 0 || iova > math.MaxUint64-n {
		return fmt.Errorf("dma: cannot free IOVA %#x+%#x: not page aligned or out of range", iova, size)
	}
	end := iova + n
	inside := false
	for _, v := range s.valid {
		if iova >= v.start && end <= v.end {
			inside = true
			break
		}
	}
	if !inside {
		return fmt.Errorf("dma: cannot free IOVA %#x+%#x: not inside the IOVA space %v", iova, n, s.Ranges())
	}
	// i is the first free span starting after iova.
	i := sort.Search(len(s.free), func(i int) bool { return s.free[i].start > iova })
	if i > 0 && s.free[i-1].end > iova || i < len(s.free) && s.free[i].start < end {
		return fmt.Errorf("dma: cannot free IOVA %#x+%#x: part of it is already free (freed twice?)", iova, n)
	}
	mergePrev := i > 0 && s.free[i-1].end == iova
	mergeNext := i < len(s.free) && s.free[i].start == end
	switch {
	case mergePrev && mergeNext:
		s.free[i-1].end = s.free[i].end
		s.free = append(s.free[:i], s.free[i+1:]...)
	case mergePrev:
		s.free[i-1].end = end
	case mergeNext:
		s.free[i].start = iova
	default:
		s.free = append(s.free, span{})
		copy(s.free[i+1:], s.free[i:])
		s.free[i] = span{iova, end}
	}
	return nil
}
