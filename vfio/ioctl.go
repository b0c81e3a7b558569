package vfio

// The VFIO ABI from linux/include/uapi/linux/vfio.h: ioctl numbers, flags and
// structs. golang.org/x/sys has none of it. Constants keep the kernel's
// spelling so they can be grepped against the header; structs get Go names
// and their sizes are checked in ioctl_test.go against the header's values.
//
// Every VFIO request is _IO(';', 100+n): the header deliberately encodes no
// size or direction, because each struct starts with argsz, which the caller
// fills in and the kernel checks.

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	VFIO_TYPE = ';'
	VFIO_BASE = 100
)

// _IO is the kernel's _IO(type, nr) for the generic ioctl layout (x86,
// arm64, riscv): direction and size are zero, so the number is type<<8 | nr.
// (powerpc, mips and sparc encode _IOC_NONE differently; nvmepoll does not
// run there.)
func _IO(typ, nr uintptr) uintptr { return typ<<8 | nr }

// Requests on the container (/dev/vfio/vfio).
var (
	VFIO_GET_API_VERSION = _IO(VFIO_TYPE, VFIO_BASE+0)
	VFIO_CHECK_EXTENSION = _IO(VFIO_TYPE, VFIO_BASE+1)
	VFIO_SET_IOMMU       = _IO(VFIO_TYPE, VFIO_BASE+2)
	VFIO_IOMMU_GET_INFO  = _IO(VFIO_TYPE, VFIO_BASE+12)
	VFIO_IOMMU_MAP_DMA   = _IO(VFIO_TYPE, VFIO_BASE+13)
	VFIO_IOMMU_UNMAP_DMA = _IO(VFIO_TYPE, VFIO_BASE+14)
)

// Requests on a group (/dev/vfio/$GROUP).
var (
	VFIO_GROUP_GET_STATUS      = _IO(VFIO_TYPE, VFIO_BASE+3)
	VFIO_GROUP_SET_CONTAINER   = _IO(VFIO_TYPE, VFIO_BASE+4)
	VFIO_GROUP_UNSET_CONTAINER = _IO(VFIO_TYPE, VFIO_BASE+5)
	VFIO_GROUP_GET_DEVICE_FD   = _IO(VFIO_TYPE, VFIO_BASE+6)
)

// Requests on a device fd.
var (
	VFIO_DEVICE_GET_INFO        = _IO(VFIO_TYPE, VFIO_BASE+7)
	VFIO_DEVICE_GET_REGION_INFO = _IO(VFIO_TYPE, VFIO_BASE+8)
	VFIO_DEVICE_GET_IRQ_INFO    = _IO(VFIO_TYPE, VFIO_BASE+9)
	VFIO_DEVICE_SET_IRQS        = _IO(VFIO_TYPE, VFIO_BASE+10)
	VFIO_DEVICE_RESET           = _IO(VFIO_TYPE, VFIO_BASE+11)
)

// ioctlNames turns a request number into its name for error messages.
var ioctlNames = map[uintptr]string{
	VFIO_GET_API_VERSION:        "VFIO_GET_API_VERSION",
	VFIO_CHECK_EXTENSION:        "VFIO_CHECK_EXTENSION",
	VFIO_SET_IOMMU:              "VFIO_SET_IOMMU",
	VFIO_IOMMU_GET_INFO:         "VFIO_IOMMU_GET_INFO",
	VFIO_IOMMU_MAP_DMA:          "VFIO_IOMMU_MAP_DMA",
	VFIO_IOMMU_UNMAP_DMA:        "VFIO_IOMMU_UNMAP_DMA",
	VFIO_GROUP_GET_STATUS:       "VFIO_GROUP_GET_STATUS",
	VFIO_GROUP_SET_CONTAINER:    "VFIO_GROUP_SET_CONTAINER",
	VFIO_GROUP_UNSET_CONTAINER:  "VFIO_GROUP_UNSET_CONTAINER",
	VFIO_GROUP_GET_DEVICE_FD:    "VFIO_GROUP_GET_DEVICE_FD",
	VFIO_DEVICE_GET_INFO:        "VFIO_DEVICE_GET_INFO",
	VFIO_DEVICE_GET_REGION_INFO: "VFIO_DEVICE_GET_REGION_INFO",
	VFIO_DEVICE_GET_IRQ_INFO:    "VFIO_DEVICE_GET_IRQ_INFO",
	VFIO_DEVICE_SET_IRQS:        "VFIO_DEVICE_SET_IRQS",
	VFIO_DEVICE_RESET:           "VFIO_DEVICE_RESET",
}

// Values for VFIO_GET_API_VERSION and VFIO_CHECK_EXTENSION / VFIO_SET_IOMMU.
const (
	VFIO_API_VERSION   = 0
	VFIO_TYPE1_IOMMU   = 1
	VFIO_TYPE1v2_IOMMU = 3
)

// vfio_group_status.flags
const (
	VFIO_GROUP_FLAGS_VIABLE        = 1 << 0
	VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1
)

// vfio_device_info.flags
const (
	VFIO_DEVICE_FLAGS_RESET = 1 << 0
	VFIO_DEVICE_FLAGS_PCI   = 1 << 1
	VFIO_DEVICE_FLAGS_CAPS  = 1 << 7
)

// vfio_region_info.flags
const (
	VFIO_REGION_INFO_FLAG_READ  = 1 << 0
	VFIO_REGION_INFO_FLAG_WRITE = 1 << 1
	VFIO_REGION_INFO_FLAG_MMAP  = 1 << 2
	VFIO_REGION_INFO_FLAG_CAPS  = 1 << 3
)

// Fixed vfio-pci region indexes.
const (
	VFIO_PCI_BAR0_REGION_INDEX   = 0
	VFIO_PCI_BAR5_REGION_INDEX   = 5
	VFIO_PCI_ROM_REGION_INDEX    = 6
	VFIO_PCI_CONFIG_REGION_INDEX = 7
	VFIO_PCI_VGA_REGION_INDEX    = 8
	VFIO_PCI_NUM_REGIONS         = 9
)

// Fixed vfio-pci IRQ indexes.
const (
	VFIO_PCI_INTX_IRQ_INDEX = 0
	VFIO_PCI_MSI_IRQ_INDEX  = 1
	VFIO_PCI_MSIX_IRQ_INDEX = 2
	VFIO_PCI_ERR_IRQ_INDEX  = 3
	VFIO_PCI_REQ_IRQ_INDEX  = 4
	VFIO_PCI_NUM_IRQS       = 5
)

// vfio_irq_info.flags
const (
	VFIO_IRQ_INFO_EVENTFD    = 1 << 0
	VFIO_IRQ_INFO_MASKABLE   = 1 << 1
	VFIO_IRQ_INFO_AUTOMASKED = 1 << 2
	VFIO_IRQ_INFO_NORESIZE   = 1 << 3
)

// vfio_irq_set.flags
const (
	VFIO_IRQ_SET_DATA_NONE      = 1 << 0
	VFIO_IRQ_SET_DATA_BOOL      = 1 << 1
	VFIO_IRQ_SET_DATA_EVENTFD   = 1 << 2
	VFIO_IRQ_SET_ACTION_MASK    = 1 << 3
	VFIO_IRQ_SET_ACTION_UNMASK  = 1 << 4
	VFIO_IRQ_SET_ACTION_TRIGGER = 1 << 5
)

// vfio_iommu_type1_info.flags and its capability ids.
const (
	VFIO_IOMMU_INFO_PGSIZES = 1 << 0
	VFIO_IOMMU_INFO_CAPS    = 1 << 1

	VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1
)

// vfio_iommu_type1_dma_map.flags
const (
	VFIO_DMA_MAP_FLAG_READ  = 1 << 0
	VFIO_DMA_MAP_FLAG_WRITE = 1 << 1
)

// groupStatus is struct vfio_group_status.
type groupStatus struct {
	Argsz uint32
	Flags uint32
}

// deviceInfo is struct vfio_device_info.
type deviceInfo struct {
	Argsz      uint32
	Flags      uint32
	NumRegions uint32
	NumIRQs    uint32
	CapOffset  uint32
}

// regionInfo is struct vfio_region_info.
type regionInfo struct {
	Argsz     uint32
	Flags     uint32
	Index     uint32
	CapOffset uint32
	Size      uint64 // bytes
	Offset    uint64 // of the region within the device fd, for pread/pwrite/mmap
}

// IRQInfo is struct vfio_irq_info, the argument of VFIO_DEVICE_GET_IRQ_INFO.
// Exported for the MSI-X work that will build on it.
type IRQInfo struct {
	Argsz uint32
	Flags uint32 // VFIO_IRQ_INFO_*
	Index uint32 // VFIO_PCI_*_IRQ_INDEX
	Count uint32 // vectors in this index
}

// IRQSet is the fixed header of struct vfio_irq_set, the argument of
// VFIO_DEVICE_SET_IRQS. In the kernel's struct it is followed by a flexible
// data[] array (Count int32 eventfds for VFIO_IRQ_SET_DATA_EVENTFD), so a
// caller builds a buffer of IRQSetSize + 4*Count bytes and sets Argsz to it.
type IRQSet struct {
	Argsz uint32
	Flags uint32 // VFIO_IRQ_SET_DATA_* | VFIO_IRQ_SET_ACTION_*
	Index uint32
	Start uint32
	Count uint32
}

// IRQSetSize is sizeof(struct vfio_irq_set), the offset of its data[].
const IRQSetSize = int(unsafe.Sizeof(IRQSet{}))

// iommuType1Info is struct vfio_iommu_type1_info. The kernel fills Argsz
// with the size it needs for the capability chain when that is larger than
// what was passed, and the caller asks again with a bigger buffer.
type iommuType1Info struct {
	Argsz       uint32
	Flags       uint32
	IOVAPgsizes uint64 // bitmap of supported IOMMU page sizes
	CapOffset   uint32 // of the first capability, from the start of this struct
	_           uint32 // the C struct's tail padding
}

// capHeader is struct vfio_info_cap_header, the link of a capability chain.
type capHeader struct {
	ID      uint16
	Version uint16
	Next    uint32 // offset of the next header from the start of the info struct; 0 ends the chain
}

// capIOVARange is the fixed part of struct
// vfio_iommu_type1_info_cap_iova_range; NrIOVAs iovaRange entries follow.
type capIOVARange struct {
	Header   capHeader
	NrIOVAs  uint32
	Reserved uint32
}

// iovaRange is struct vfio_iova_range: an inclusive range [Start, End].
type iovaRange struct {
	Start uint64
	End   uint64
}

// dmaMap is struct vfio_iommu_type1_dma_map.
type dmaMap struct {
	Argsz uint32
	Flags uint32
	Vaddr uint64
	IOVA  uint64
	Size  uint64
}

// dmaUnmap is struct vfio_iommu_type1_dma_unmap (without its flexible
// data[], used only for dirty bitmaps). The kernel writes back in Size how
// much it unmapped.
type dmaUnmap struct {
	Argsz uint32
	Flags uint32
	IOVA  uint64
	Size  uint64
}

// ioctl is the one place where nvmepoll calls ioctl(2) on a VFIO fd, so every
// raw call can be audited here. A request takes either a pointer to a struct
// the kernel reads or fills (ptr) or, for VFIO_CHECK_EXTENSION and
// VFIO_SET_IOMMU, a plain integer (val); ptr wins when both are given.
// The result is the kernel's return value (a version, a boolean, a new fd).
// Errors name the request and wrap the errno, so errors.Is(err, unix.EBUSY)
// works on them.
func ioctl(fd int, req uintptr, ptr unsafe.Pointer, val uintptr) (uintptr, error) {
	var r uintptr
	var errno unix.Errno
	if ptr != nil {
		// The conversion must stay inside the Syscall call so the
		// pointer stays valid for the call's duration (unsafe.Pointer rule 4).
		r, _, errno = unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(ptr))
	} else {
		r, _, errno = unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, val)
	}
	if errno != 0 {
		return 0, fmt.Errorf("%s: %w", ioctlName(req), errno)
	}
	return r, nil
}

func ioctlName(req uintptr) string {
	if n, ok := ioctlNames[req]; ok {
		return n
	}
	return fmt.Sprintf("ioctl %#x", req)
}
