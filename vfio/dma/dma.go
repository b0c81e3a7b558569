// Package dma describes memory a device can reach by DMA.
//
// A Buffer is host memory outside the Go heap (an anonymous mmap, populated
// and locked) together with the I/O virtual address (IOVA) at which the
// device sees it. Never store Go pointers in a Buffer: the garbage collector
// does not scan it and the device may overwrite it.
//
// An Allocator hands out Buffers. vfio.Container is the real one (it maps
// through the IOMMU); nvme/nvmetest has a model one. Allocation is for set-up
// time: queues, PRP pages and buffer pools are mapped once, never per I/O.
package dma

import "unsafe"

// Buffer is a DMA-reachable memory region.
type Buffer struct {
	// Bytes is the host view of the memory. Its length is the size asked
	// for, rounded up to the page size.
	Bytes []byte
	// IOVA is the device's address of Bytes[0].
	IOVA uint64
}

// Len is the size of the buffer in bytes.
func (b Buffer) Len() int { return len(b.Bytes) }

// Ptr is the host address of the first byte, for code that must write
// words the device reads concurrently.
func (b Buffer) Ptr() unsafe.Pointer {
	if len(b.Bytes) == 0 {
		return nil
	}
	return unsafe.Pointer(&b.Bytes[0])
}

// Slice returns the part [off, off+n) as a Buffer with its own IOVA.
// It panics if the range is outside b, like a slice expression would.
func (b Buffer) Slice(off, n int) Buffer {
	return Buffer{Bytes: b.Bytes[off : off+n : off+n], IOVA: b.IOVA + uint64(off)}
}

// Allocator hands out page-aligned, zeroed DMA buffers.
type Allocator interface {
	// Alloc maps at least size bytes for DMA. The result is page aligned in
	// both host and IOVA space.
	Alloc(size int) (Buffer, error)
	// Free unmaps a buffer from Alloc. Freeing it twice is an error.
	Free(Buffer) error
	// PageSize is the smallest unit of mapping (4096 on x86).
	PageSize() int
}
