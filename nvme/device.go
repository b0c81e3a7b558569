package nvme

import (
	"github.com/nvmepoll/nvmepoll/queue"
	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// Device is the hardware under a Controller: BAR0 and memory the controller
// can reach by DMA. A VFIO-bound PCI function provides one (see OpenPCI), and
// so does the in-process model in nvme/nvmetest, which is why the interface
// uses only types from queue and vfio/dma: the model does not import nvme.
type Device interface {
	// Read32 and Write32 access the 32-bit register at byte offset off in
	// BAR0. A 64-bit register is two accesses, low half first.
	Read32(off int) uint32
	Write32(off int, v uint32)
	// Doorbell returns the doorbell register at byte offset off
	// (0x1000 + (2*qid + isCQ) * (4 << CAP.DSTRD)).
	Doorbell(off int) (queue.Doorbell, error)
	// DMA allocates memory the controller can reach.
	DMA() dma.Allocator
	// Close releases the device. It is safe to call more than once.
	Close() error
}

// MemlockChecker is an optional ability of a Device whose DMA memory counts
// against a limit, as a VFIO device's does against RLIMIT_MEMLOCK.
// CheckMemlock reports, mapping nothing, whether DMA buffers of these sizes
// (as they would be passed to Alloc) could all be mapped now, counting them
// as Alloc does; its error names the bytes needed, the limit and how to
// raise it. Open calls it before it maps anything (see Open).
type MemlockChecker interface {
	CheckMemlock(sizes ...int) error
}
