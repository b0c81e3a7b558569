package vfio

import (
	"errors"

	"github.com/nvmepoll/nvmepoll/vfio/pci"
)

// Sentinel errors, matched with errors.Is. The errors Open and the DMA
// allocator return wrap one of these together with what the kernel said
// (an errno, also matchable with errors.Is) and carry a message naming the
// fix; doc.go lists them.
var (
	// ErrBadAddress: the string is not a PCI address.
	ErrBadAddress = pci.ErrBadAddress
	// ErrNoDevice: no PCI function has that address.
	ErrNoDevice = pci.ErrNoDevice
	// ErrNoIOMMUGroup: the function has no IOMMU group; the IOMMU is off.
	ErrNoIOMMUGroup = pci.ErrNoIOMMUGroup
	// ErrNotBound: the function is not bound to vfio-pci.
	ErrNotBound = errors.New("not bound to vfio-pci")
	// ErrNoVFIO: /dev/vfio is missing; vfio-pci is not loaded.
	ErrNoVFIO = errors.New("no VFIO device nodes")
	// ErrGroupNotViable: another device in the IOMMU group is bound to a
	// host driver, so the group cannot be handed to user space.
	ErrGroupNotViable = errors.New("IOMMU group not viable")
	// ErrBusy: another process (or this one) has the group open.
	ErrBusy = errors.New("VFIO group in use")
	// ErrUnsupported: the kernel lacks something nvmepoll needs (the
	// VFIO API version, the type1v2 IOMMU, a vfio-pci device).
	ErrUnsupported = errors.New("not supported by the kernel")
	// ErrNoReset: the device offers no reset through VFIO.
	ErrNoReset = errors.New("device offers no reset")
	// ErrMemlock: RLIMIT_MEMLOCK is too low for the memory to be pinned.
	ErrMemlock = errors.New("RLIMIT_MEMLOCK too low")
	// ErrClosed: the Device was closed.
	ErrClosed = errors.New("vfio device closed")
)

// hintError is an error with a full, user-facing message that matches both
// a sentinel and the underlying cause (often a unix.Errno) with errors.Is.
type hintError struct {
	msg      string
	sentinel error
	cause    error // may be nil
}

func (e *hintError) Error() string { return e.msg }

func (e *hintError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.sentinel}
	}
	return []error{e.sentinel, e.cause}
}
