//go:build !amd64

package mmio

import "sync/atomic"

// store32 is a fallback for architectures without an assembly store. Other
// architectures need a store barrier before doorbells anyway; an atomic store
// gives both (and is not a bus lock there).
//
//go:noinline
func store32(p *uint32, v uint32) { atomic.StoreUint32(p, v) }

// Barrier orders earlier stores to DMA memory before a later doorbell store.
func Barrier() {
	var x uint32
	atomic.AddUint32(&x, 0)
}
