package vfio

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// fallbackIOVARanges is used when the kernel reports no IOVA ranges (before
// Linux 5.4): 39 address bits, which every x86 IOMMU supports, minus the
// x86 MSI window that is never mapped for DMA.
var fallbackIOVARanges = []dma.Range{
	{Start: 0, End: 0xfedfffff},
	{Start: 0xfef00000, End: 1<<39 - 1},
}

// parseIOVARanges walks the capability chain of a vfio_iommu_type1_info as
// returned by VFIO_IOMMU_GET_INFO (buf holds the whole argsz bytes) and
// returns the ranges of the IOVA_RANGE capability. found is false when the
// chain has no such capability. The buffer comes from the kernel but is
// still checked: a link or count that points outside it is an error, not a
// panic, and a chain that does not move forward is cut off.
func parseIOVARanges(buf []byte) (ranges []dma.Range, found bool, err error) {
	const infoSize = int(unsafe.Sizeof(iommuType1Info{}))
	const hdrSize = int(unsafe.Sizeof(capHeader{}))
	const capSize = int(unsafe.Sizeof(capIOVARange{}))
	const rangeSize = int(unsafe.Sizeof(iovaRange{}))
	if len(buf) < infoSize {
		return nil, false, fmt.Errorf("vfio: IOMMU info is %d bytes, want at least %d", len(buf), infoSize)
	}
	ne := binary.NativeEndian
	flags := ne.Uint32(buf[4:])
	off := int(ne.Uint32(buf[16:])) // cap_offset
	if flags&VFIO_IOMMU_INFO_CAPS == 0 || off == 0 {
		return nil, false, nil
	}
	for off != 0 {
		if off < infoSize || off > len(buf)-hdrSize {
			return nil, false, fmt.Errorf("vfio: IOMMU info capability at offset %d is outside the %d-byte info", off, len(buf))
		}
		id := ne.Uint16(buf[off:])
		next := int(ne.Uint32(buf[off+4:]))
		if id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE {
			if off > len(buf)-capSize {
				return nil, false, fmt.Errorf("vfio: IOVA range capability at offset %d is cut off at %d bytes", off, len(buf))
			}
			n := int(ne.Uint32(buf[off+hdrSize:]))
			first := off + capSize
			if n > (len(buf)-first)/rangeSize {
				return nil, false, fmt.Errorf("vfio: IOVA range capability claims %d ranges but the info has room for %d", n, (len(buf)-first)/rangeSize)
			}
			ranges = make([]dma.Range, n)
			for i := range ranges {
				p := first + i*rangeSize
				ranges[i] = dma.Range{Start: ne.Uint64(buf[p:]), End: ne.Uint64(buf[p+8:])}
			}
			return ranges, true, nil
		}
		if next != 0 && next <= off {
			return nil, false, fmt.Errorf("vfio: IOMMU info capability chain loops back from offset %d to %d", off, next)
		}
		off = next
	}
	return nil, false, nil
}
