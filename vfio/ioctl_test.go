package vfio

import (
	"errors"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The literals below come from linux/include/uapi/linux/vfio.h: every request
// is _IO(';', 100+n) = 0x3b00 | (100+n), and the sizes are the C structs'
// (checked with sizeof() against the installed header when this was written).
func TestIoctlNumbers(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"VFIO_GET_API_VERSION", VFIO_GET_API_VERSION, 0x3b64},
		{"VFIO_CHECK_EXTENSION", VFIO_CHECK_EXTENSION, 0x3b65},
		{"VFIO_SET_IOMMU", VFIO_SET_IOMMU, 0x3b66},
		{"VFIO_GROUP_GET_STATUS", VFIO_GROUP_GET_STATUS, 0x3b67},
		{"VFIO_GROUP_SET_CONTAINER", VFIO_GROUP_SET_CONTAINER, 0x3b68},
		{"VFIO_GROUP_UNSET_CONTAINER", VFIO_GROUP_UNSET_CONTAINER, 0x3b69},
		{"VFIO_GROUP_GET_DEVICE_FD", VFIO_GROUP_GET_DEVICE_FD, 0x3b6a},
		{"VFIO_DEVICE_GET_INFO", VFIO_DEVICE_GET_INFO, 0x3b6b},
		{"VFIO_DEVICE_GET_REGION_INFO", VFIO_DEVICE_GET_REGION_INFO, 0x3b6c},
		{"VFIO_DEVICE_GET_IRQ_INFO", VFIO_DEVICE_GET_IRQ_INFO, 0x3b6d},
		{"VFIO_DEVICE_SET_IRQS", VFIO_DEVICE_SET_IRQS, 0x3b6e},
		{"VFIO_DEVICE_RESET", VFIO_DEVICE_RESET, 0x3b6f},
		{"VFIO_IOMMU_GET_INFO", VFIO_IOMMU_GET_INFO, 0x3b70},
		{"VFIO_IOMMU_MAP_DMA", VFIO_IOMMU_MAP_DMA, 0x3b71},
		{"VFIO_IOMMU_UNMAP_DMA", VFIO_IOMMU_UNMAP_DMA, 0x3b72},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
		if n := ioctlName(tc.got); n != tc.name {
			t.Errorf("ioctlName(%#x) = %q, want %q", tc.got, n, tc.name)
		}
	}
}

func TestIoctlConstants(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want int
	}{
		{"VFIO_API_VERSION", VFIO_API_VERSION, 0},
		{"VFIO_TYPE1v2_IOMMU", VFIO_TYPE1v2_IOMMU, 3},
		{"VFIO_PCI_CONFIG_REGION_INDEX", VFIO_PCI_CONFIG_REGION_INDEX, 7},
		{"VFIO_PCI_NUM_REGIONS", VFIO_PCI_NUM_REGIONS, 9},
		{"VFIO_PCI_MSIX_IRQ_INDEX", VFIO_PCI_MSIX_IRQ_INDEX, 2},
		{"VFIO_PCI_NUM_IRQS", VFIO_PCI_NUM_IRQS, 5},
		{"VFIO_IRQ_SET_DATA_EVENTFD", VFIO_IRQ_SET_DATA_EVENTFD, 4},
		{"VFIO_IRQ_SET_ACTION_TRIGGER", VFIO_IRQ_SET_ACTION_TRIGGER, 0x20},
		{"VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE", VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 1},
		{"VFIO_DEVICE_FLAGS_RESET", VFIO_DEVICE_FLAGS_RESET, 1},
		{"VFIO_REGION_INFO_FLAG_MMAP", VFIO_REGION_INFO_FLAG_MMAP, 4},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
}

func TestStructSizes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"vfio_group_status", unsafe.Sizeof(groupStatus{}), 8},
		{"vfio_device_info", unsafe.Sizeof(deviceInfo{}), 20},
		{"vfio_region_info", unsafe.Sizeof(regionInfo{}), 32},
		{"vfio_irq_info", unsafe.Sizeof(IRQInfo{}), 16},
		{"vfio_irq_set", unsafe.Sizeof(IRQSet{}), 20},
		{"vfio_iommu_type1_info", unsafe.Sizeof(iommuType1Info{}), 24},
		{"vfio_info_cap_header", unsafe.Sizeof(capHeader{}), 8},
		{"vfio_iommu_type1_info_cap_iova_range", unsafe.Sizeof(capIOVARange{}), 16},
		{"vfio_iova_range", unsafe.Sizeof(iovaRange{}), 16},
		{"vfio_iommu_type1_dma_map", unsafe.Sizeof(dmaMap{}), 32},
		{"vfio_iommu_type1_dma_unmap", unsafe.Sizeof(dmaUnmap{}), 24},
	} {
		if tc.got != tc.want {
			t.Errorf("sizeof(struct %s) = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
	// Offsets the kernel's minsz checks depend on.
	if off := unsafe.Offsetof(iommuType1Info{}.CapOffset); off != 16 {
		t.Errorf("vfio_iommu_type1_info.cap_offset at %d, want 16", off)
	}
	if off := unsafe.Offsetof(regionInfo{}.Offset); off != 24 {
		t.Errorf("vfio_region_info.offset at %d, want 24", off)
	}
	if IRQSetSize != 20 {
		t.Errorf("IRQSetSize = %d, want 20 (offset of vfio_irq_set.data)", IRQSetSize)
	}
}

// A failing ioctl keeps the errno and names the request.
func TestIoctlErrorKeepsErrno(t *testing.T) {
	_, err := ioctl(-1, VFIO_GET_API_VERSION, nil, 0)
	if !errors.Is(err, unix.EBADF) {
		t.Fatalf("ioctl on fd -1: %v, want EBADF", err)
	}
	if got, want := err.Error(), "VFIO_GET_API_VERSION: bad file descriptor"; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
}
