// Package vfio gives a user-space driver a PCI function through Linux VFIO:
// its BARs mapped into the process, its PCI configuration space, reset, and
// host memory it can reach by DMA through the IOMMU.
//
//	d, err := vfio.Open("0000:00:03.0") // or "00:03.0"
//	if err != nil { ... }               // the message says what to do
//	defer d.Close()
//	bar0, err := d.BAR(0)               // mmio.Region over the registers
//	buf, err := d.DMA().Alloc(4096)     // dma.Buffer{Bytes, IOVA}
//
// The function must be bound to vfio-pci first (nvmectl bind, or
// pci.Bind in the vfio/pci subpackage, which also lists NVMe controllers).
//
// # What Open does
//
// Open uses the type1 container/group API: it opens the container
// /dev/vfio/vfio, checks VFIO_GET_API_VERSION and the VFIO_TYPE1v2_IOMMU
// extension, opens the function's group /dev/vfio/$GROUP, checks that the
// group is viable, attaches it to the container, selects the type1v2 IOMMU,
// reads the IOMMU's allowed IOVA ranges from the VFIO_IOMMU_GET_INFO
// capability chain, gets the device fd and its config region, and sets
// memory-space decoding and bus mastering in the PCI command register.
//
// # Who owns what
//
// A Device owns three fds (container, group, device), each BAR mapping made
// by BAR, and each DMA buffer made by its allocator that has not been
// freed. Close releases all of them: DMA buffers are unmapped from the IOMMU
// and their host memory unmapped, then the BARs are unmapped, then the fds
// are closed (device, group, container). Close is idempotent and safe on a
// nil *Device. After Close, a mmio.Region from BAR and the Bytes of every
// dma.Buffer point to unmapped memory: stop the device and stop using them
// first. Reset leaves mappings and buffers in place.
//
// DMA memory comes from dma.MapHost: anonymous, populated, locked, outside
// the Go heap. IOVAs come from a dma.IOVASpace over the ranges the kernel
// reports (never 0, page aligned, first fit), not from host addresses. The
// kernel pins mapped pages and counts them against RLIMIT_MEMLOCK, and so
// does mlock, so each buffer counts twice; Alloc checks the limit before
// mapping anything. CheckMemlock does the same check for several buffers
// at once and maps nothing, so a caller about to map them (nvme.Open) can
// fail before any is mapped, with the total in the message.
//
// All ioctl numbers and structs are in ioctl.go, with the kernel's names,
// and every raw ioctl goes through one function there. The IRQ structures
// (IRQInfo, IRQSet) and constants are there for MSI-X, which irq.go uses:
// Device.Interrupt attaches an eventfd to one MSI-X vector.
//
// # Errors
//
// Errors wrap a sentinel, to be tested with errors.Is, and keep the errno
// the kernel returned (errors.Is(err, unix.EBUSY) works too):
//
//   - ErrBadAddress: the string is not a PCI address.
//   - ErrNoDevice: no PCI function at that address (see nvmectl list).
//   - ErrNoIOMMUGroup: the function has no IOMMU group, so the IOMMU is
//     off: boot with intel_iommu=on (amd_iommu=on on AMD).
//   - ErrNotBound: bound to another driver (usually nvme) or none; the
//     message gives the nvmectl bind command.
//   - ErrNoVFIO: /dev/vfio is missing: modprobe vfio-pci.
//   - ErrBusy: the group is open already, in another process or in
//     another Device of this one (one user per group).
//   - ErrGroupNotViable: another device in the IOMMU group is on a host
//     driver; the message lists the group's other devices and drivers.
//   - ErrUnsupported: no type1v2 IOMMU, an unknown API version, or not a
//     vfio-pci device.
//   - ErrMemlock: RLIMIT_MEMLOCK is too low for the buffer (or, from
//     CheckMemlock, the buffers together); the message gives the current
//     limit, the bytes needed and how to raise it (ulimit -l,
//     LimitMEMLOCK= in systemd, or root with CAP_IPC_LOCK).
//   - ErrNoReset: the device does not offer VFIO_DEVICE_RESET.
//   - ErrClosed: the Device was closed.
//
// dma.ErrIOVAExhausted (wrapped) means the IOMMU's address space has no free
// range big enough for a buffer.
package vfio
