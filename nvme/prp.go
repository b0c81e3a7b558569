package nvme

import (
	"encoding/binary"
	"fmt"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// PRP entries (NVMe base spec 2.0, 4.1.1) tell the controller where a
// transfer's data lives, one entry per memory page:
//
//   - PRP1 is the address of the first byte. It must be dword aligned and may
//     sit anywhere inside its page; every later entry is page aligned.
//   - If the transfer touches one page, PRP2 is unused (0).
//   - If it touches exactly two pages, PRP2 is the second page.
//   - Otherwise PRP2 points at a PRP list: a page of 8-byte entries, the 2nd
//     page onwards. When the entries do not fit in one list page, the last
//     entry of a full list page points at the next list page (a chain).
//
// Each queue slot owns enough pre-mapped list pages for the largest transfer
// the controller accepts (see prpListPages), so building PRPs on the hot path
// maps and allocates nothing.

// prpPages is how many memory pages a transfer of n bytes starting at iova
// touches.
func prpPages(iova uint64, n, pageSize int) int {
	off := int(iova % uint64(pageSize))
	return (off + n + pageSize - 1) / pageSize
}

// prpListPages is how many PRP list pages a transfer of n bytes needs when
// its first byte sits at offset off inside a page. Every list page but the
// last spends its final entry on the chain pointer.
func prpListPages(off, n, pageSize int) int {
	rest := (off+n+pageSize-1)/pageSize - 1 // entries after PRP1
	if rest <= 1 {
		return 0 // PRP2 is the second page itself, or unused
	}
	perPage := pageSize / 8
	return (rest - 1 + perPage - 2) / (perPage - 1)
}

// buildPRP describes the n bytes at data (an IOVA, dword aligned) to the
// controller. It writes list entries into list, which must hold
// prpListPages(data%pageSize, n, pageSize) contiguous, page-aligned pages,
// and returns the values for the command's PRP1 and PRP2.
func buildPRP(data uint64, n, pageSize int, list dma.Buffer) (prp1, prp2 uint64, err error) {
	switch {
	case n <= 0:
		return 0, 0, fmt.Errorf("%w: transfer of %d bytes", ErrInvalidArgument, n)
	case data%4 != 0:
		return 0, 0, fmt.Errorf("%w: data address %#x is not dword aligned (PRP1 must be)", ErrInvalidArgument, data)
	}
	page := uint64(pageSize)
	// The common case, a transfer inside one page (a 4 KiB read into a
	// pool buffer): no division, no list.
	if page&(page-1) == 0 && data&(page-1)+uint64(n) <= page {
		return data, 0, nil
	}
	prp1 = data
	rest := prpPages(data, n, pageSize) - 1
	next := data&^(page-1) + page // the second page, if any
	switch rest {
	case 0:
		return prp1, 0, nil
	case 1:
		return prp1, next, nil
	}
	need := prpListPages(int(data%page), n, pageSize)
	if list.Len() < need*pageSize || list.IOVA%page != 0 {
		return 0, 0, fmt.Errorf("%w: transfer of %d bytes at %#x needs %d PRP list pages, slot has %d bytes at %#x",
			ErrInvalidArgument, n, data, need, list.Len(), list.IOVA)
	}
	perPage := pageSize / 8
	b := list.Bytes
	for lp := 0; rest > 0; lp++ {
		entries := b[lp*pageSize : (lp+1)*pageSize]
		for i := 0; i < perPage && rest > 0; i++ {
			if i == perPage-1 && rest > 1 {
				// The page is full and more entries follow: chain.
				binary.LittleEndian.PutUint64(entries[i*8:], list.IOVA+uint64(lp+1)*page)
				break
			}
			binary.LittleEndian.PutUint64(entries[i*8:], next)
			next += page
			rest--
		}
	}
	return prp1, list.IOVA, nil
}
