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
