//go:build amd64

package mmio

//go:noescape
func store32(p *uint32, v uint32)

// Barrier orders earlier stores to DMA memory before a later doorbell store.
// x86 does not reorder stores with stores, so it is empty here.
func Barrier() {}
