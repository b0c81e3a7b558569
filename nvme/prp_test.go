package nvme

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// walkPRP decodes PRP1/PRP2 the way a controller does and returns the
// IOVA of every page-sized (or shorter) piece of the transfer, in order.
// list is the only memory PRP list entries may live in.
func walkPRP(t *testing.T, prp1, prp2 uint64, n, pageSize int, list dma.Buffer) []uint64 {
	t.Helper()
	page := uint64(pageSize)
	pieces := []uint64{prp1}
	left := n - (pageSize - int(prp1%page))
	if left <= 0 {
		if prp2 != 0 {
			t.Errorf("one-page transfer has PRP2 %#x, want 0", prp2)
		}
		return pieces
	}
	if left <= pageSize {
		return append(pieces, prp2)
	}
	read := func(addr uint64) uint64 {
		off := addr - list.IOVA
		if addr < list.IOVA || off+8 > uint64(list.Len()) {
			t.Fatalf("PRP list entry at %#x is outside the slot's list pages [%#x, %#x)", addr, list.IOVA, list.IOVA+uint64(list.Len()))
		}
		return binary.LittleEndian.Uint64(list.Bytes[off:])
	}
	addr := prp2
	for left > 0 {
		e := read(addr)
		last := (addr+8)%page == 0
		if last && left > pageSize {
			addr = e // chain to the next list page
			if e%page != 0 {
				t.Fatalf("chain pointer %#x is not page aligned", e)
			}
			continue
		}
		pieces = append(pieces, e)
		left -= pageSize
		addr += 8
	}
	return pieces
}

func TestBuildPRP(t *testing.T) {
	const page = 4096
	const dataIOVA = 0x10_0000_0000
	list := dma.Buffer{Bytes: make([]byte, 4*page), IOVA: 0x2000_0000}
	cases := []struct {
		name      string
		off, n    int
		wantPRP2  string // "zero", "page", "list"
		listPages int
	}{
		{"single page", 0, 4096, "zero", 0},
		{"single sector", 0, 512, "zero", 0},
		{"unaligned inside one page", 512, 1024, "zero", 0},
		{"two pages", 0, 8192, "page", 0},
		{"unaligned first buffer, two pages", 4092, 8, "page", 0},
		{"list of three", 0, 3 * page, "list", 1},
		{"unaligned first buffer, list", 100, 3 * page, "list", 1},
		{"full list page (512 entries)", 0, 513 * page, "list", 1},
		{"chained list pages", 0, 514 * page, "list", 2},
		{"chained, unaligned first buffer", 2048, 1024 * page, "list", 3},
		{"max of three list pages", 0, (1 + 3*511 + 1) * page, "list", 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := uint64(dataIOVA + tc.off)
			if got := prpListPages(tc.off, tc.n, page); got != tc.listPages {
				t.Fatalf("prpListPages(%d, %d) = %d, want %d", tc.off, tc.n, got, tc.listPages)
			}
			clear(list.Bytes)
			prp1, prp2, err := buildPRP(data, tc.n, page, list)
			if err != nil {
				t.Fatal(err)
			}
			if prp1 != data {
				t.Errorf("PRP1 = %#x, want the first byte %#x", prp1, data)
			}
			switch tc.wantPRP2 {
			case "zero":
				if prp2 != 0 {
					t.Errorf("PRP2 = %#x, want 0", prp2)
				}
			case "page":
				if want := data&^(page-1) + page; prp2 != want {
					t.Errorf("PRP2 = %#x, want the second page %#x", prp2, want)
				}
			case "list":
				if prp2 != list.IOVA {
					t.Errorf("PRP2 = %#x, want the list at %#x", prp2, list.IOVA)
				}
			}
			got := walkPRP(t, prp1, prp2, tc.n, page, list)
			want := []uint64{data}
			for p := data&^(page-1) + page; p < data+uint64(tc.n); p += page {
				want = append(want, p)
			}
			if len(got) != len(want) {
				t.Fatalf("controller would see %d pages, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("page %d at %#x, want %#x", i, got[i], want[i])
				}
			}
		})
	}
}

func TestBuildPRPBadInput(t *testing.T) {
	list := dma.Buffer{Bytes: make([]byte, 4096), IOVA: 0x1000}
	for _, tc := range []struct {
		name string
		data uint64
		n    int
	}{
		{"zero length", 0x10000, 0},
		{"negative length", 0x10000, -1},
		{"not dword aligned", 0x10002, 512},
		{"list too small", 0x10000, 600 * 4096},
	} {
		if _, _, err := buildPRP(tc.data, tc.n, 4096, list); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", tc.name, err)
		}
	}
}
