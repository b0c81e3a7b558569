// Package mmio reads and writes device registers in a mapped PCI BAR.
//
// Registers live in uncached memory, so two rules matter:
//
//   - Stores are plain 32-bit stores (MOVL on amd64) that the compiler can
//     neither merge nor drop. atomic.StoreUint32 would be XCHG, a locked
//     instruction, which on uncached memory is a bus lock costing thousands
//     of cycles: never use it on a doorbell.
//   - Loads are 32-bit and aligned (atomic.LoadUint32, a plain MOVL on amd64,
//     but one the compiler must not hoist or merge). A 64-bit register is two
//     32-bit accesses, low half first.
package mmio

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Load32 reads the 32-bit register at p.
func Load32(p *uint32) uint32 { return atomic.LoadUint32(p) }

// Store32 writes v to the 32-bit register at p with one plain store.
// It is implemented in assembly on amd64; see store_amd64.s.
func Store32(p *uint32, v uint32) { store32(p, v) }

// Region is a mapped register block, such as BAR0.
type Region struct {
	mem []byte
}

// NewRegion wraps mapped memory. The slice must stay mapped while the Region
// is used; its owner (vfio.Device) unmaps it on Close.
func NewRegion(mem []byte) Region { return Region{mem: mem} }

// Len is the size of the region in bytes.
func (r Region) Len() int { return len(r.mem) }

// Word returns a pointer to the aligned 32-bit register at off, or an error
// if off is unaligned or outside the region.
func (r Region) Word(off int) (*uint32, error) {
	if off < 0 || off%4 != 0 || off+4 > len(r.mem) {
		return nil, fmt.Errorf("mmio: offset %#x is not an aligned 32-bit register in a %#x-byte region", off, len(r.mem))
	}
	return (*uint32)(unsafe.Pointer(&r.mem[off])), nil
}

// Read32 reads the register at off. It panics on an offset outside the
// region, which is a driver bug (offsets are constants), not device input.
func (r Region) Read32(off int) uint32 {
	return Load32(r.word(off))
}

// Write32 writes the register at off with one plain 32-bit store.
func (r Region) Write32(off int, v uint32) {
	Store32(r.word(off), v)
}

func (r Region) word(off int) *uint32 {
	p, err := r.Word(off)
	if err != nil {
		panic(err)
	}
	return p
}
