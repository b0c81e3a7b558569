package nvmetest

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// iovaBase is where the model's IOVA space starts. It is deliberately far
// from any host address, so a driver that puts a host pointer where an IOVA
// belongs (or the other way round) hits unmapped space and is caught.
const iovaBase = 0x1_0000_0000

// Memory is the model's DMA allocator and IOMMU. It hands out anonymous
// mmap'd memory outside the Go heap (not locked: the model needs no pinning,
// and tests should not depend on RLIMIT_MEMLOCK) at fake IOVAs, and
// translates the controller's accesses through its table.
//
// Consecutive allocations are separated by an unmapped guard page in IOVA
// space, so a transfer that runs past the end of a buffer is a DMA fault, not
// a silent write into the neighbour.
//
// A DMA to an unmapped IOVA behaves as QEMU's emulated controller behind an
// IOMMU does: the command still completes with status 0, a write by the
// controller is dropped and a read returns zeros. Faults counts such
// accesses so tests can assert that none happened.
type Memory struct {
	mu     sync.RWMutex
	maps   []mapping // sorted by iova
	next   uint64
	closed bool
	faults atomic.Uint64
}

type mapping struct {
	iova uint64
	mem  []byte
}

var _ dma.Allocator = (*Memory)(nil)

func newMemory() *Memory { return &Memory{next: iovaBase} }

// PageSize is 4096: allocations are page aligned in host and IOVA space.
func (m *Memory) PageSize() int { return 4096 }

// Alloc maps at least size bytes, zeroed, at a fresh IOVA.
func (m *Memory) Alloc(size int) (dma.Buffer, error) {
	if size <= 0 {
		return dma.Buffer{}, fmt.Errorf("nvmetest: cannot allocate %d bytes of DMA memory", size)
	}
	n := (size + 4095) &^ 4095
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return dma.Buffer{}, errors.New("nvmetest: DMA allocation after Close")
	}
	mem, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return dma.Buffer{}, fmt.Errorf("nvmetest: mmap of %d bytes: %w", n, err)
	}
	iova := m.next
	m.next += uint64(n) + 4096 // guard page
	m.maps = append(m.maps, mapping{iova: iova, mem: mem})
	return dma.Buffer{Bytes: mem[:n:n], IOVA: iova}, nil
}

// Free unmaps a buffer from Alloc. Afterwards its IOVAs are unmapped: a
// controller access to them is a DMA fault.
func (m *Memory) Free(b dma.Buffer) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := m.find(b.IOVA)
	if i < 0 || m.maps[i].iova != b.IOVA || len(m.maps[i].mem) != len(b.Bytes) {
		return fmt.Errorf("nvmetest: free of %d bytes at iova %#x: not a buffer from Alloc (or freed twice)", len(b.Bytes), b.IOVA)
	}
	err := unix.Munmap(m.maps[i].mem)
	m.maps = append(m.maps[:i], m.maps[i+1:]...)
	if err != nil {
		return fmt.Errorf("nvmetest: munmap of %d bytes at iova %#x: %w", len(b.Bytes), b.IOVA, err)
	}
	return nil
}

// Faults is the number of controller accesses to unmapped IOVAs so far.
func (m *Memory) Faults() uint64 { return m.faults.Load() }

// Mapped reports how many buffers are currently allocated.
func (m *Memory) Mapped() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.maps)
}

// close frees every buffer; later Allocs fail.
func (m *Memory) close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var first error
	for _, mp := range m.maps {
		if err := unix.Munmap(mp.mem); err != nil && first == nil {
			first = fmt.Errorf("nvmetest: munmap at iova %#x: %w", mp.iova, err)
		}
	}
	m.maps = nil
	m.closed = true
	return first
}

// find returns the index of the mapping containing iova, or -1.
// The caller holds mu.
func (m *Memory) find(iova uint64) int {
	i := sort.Search(len(m.maps), func(i int) bool { return m.maps[i].iova+uint64(len(m.maps[i].mem)) > iova })
	if i < len(m.maps) && m.maps[i].iova <= iova {
		return i
	}
	return -1
}

// view returns the host bytes for [iova, iova+n) if they lie in one mapping.
// The caller holds mu (read).
func (m *Memory) view(iova uint64, n int) ([]byte, bool) {
	i := m.find(iova)
	if i < 0 {
		return nil, false
	}
	mp := m.maps[i]
	off := iova - mp.iova
	if off+uint64(n) > uint64(len(mp.mem)) {
		return nil, false
	}
	return mp.mem[off : off+uint64(n)], true
}

// read copies device-visible memory at iova into p, as the controller
// reading host memory. Unmapped bytes read as zeros and count a fault.
func (m *Memory) read(iova uint64, p []byte) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if b, ok := m.view(iova, len(p)); ok {
		copy(p, b)
		return true
	}
	clear(p)
	m.faults.Add(1)
	return false
}

// write copies p to host memory at iova, as the controller writing by DMA.
// A write to unmapped IOVAs is dropped and counts a fault.
func (m *Memory) write(iova uint64, p []byte) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if b, ok := m.view(iova, len(p)); ok {
		copy(b, p)
		return true
	}
	m.faults.Add(1)
	return false
}

// store32 writes a 32-bit little-endian word at iova with an atomic store,
// the way a CQE's status/phase word must appear to a polling host: all at
// once, after the words before it.
func (m *Memory) store32(iova uint64, v uint32) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	b, ok := m.view(iova, 4)
	if !ok || iova%4 != 0 {
		m.faults.Add(1)
		return false
	}
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&b[0])), v)
	return true
}

// load32 reads a 32-bit word at iova atomically (shadow doorbells, which the
// host updates while the controller runs). Unmapped reads give 0.
func (m *Memory) load32(iova uint64) uint32 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	b, ok := m.view(iova, 4)
	if !ok || iova%4 != 0 {
		m.faults.Add(1)
		return 0
	}
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&b[0])))
}
