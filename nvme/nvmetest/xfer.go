package nvmetest

// segment is one contiguous piece of a data transfer in IOVA space. A bit
// bucket segment (SGL) takes read data and throws it away.
type segment struct {
	iova   uint64
	n      int
	bucket bool
}

// maxSGLDescriptors bounds an SGL walk, so a list that points to itself
// ends in an error instead of a hang.
const maxSGLDescriptors = 1 << 16

// segmentsLocked decodes cmd's data pointer for a transfer of n bytes;
// toHost says the controller writes host memory (a read). PSDT (CDW0 bits
// 15:14) picks PRPs or SGLs.
func (c *Controller) segmentsLocked(cmd *Command, n int, toHost bool) ([]segment, Status) {
	switch psdt := cmd.Flags >> 6; {
	case psdt == 0:
		segs, st := c.prpSegments(cmd.PRP1, cmd.PRP2, n)
		if cap(segs) > cap(c.segs) {
			c.segs = segs[:0] // keep the grown array for the next command
		}
		return segs, st
	case psdt == 3 || cmd.SQID == 0 || !c.cfg.SGL:
		return nil, StatusInvalidField // admin commands must use PRPs on PCIe
	}
	return c.sglSegments(cmd.PRP1, cmd.PRP2, n, toHost)
}

// prpSegments follows PRP1, PRP2 and PRP lists (base specification 2.0,
// section 4.1.1):
//
//   - PRP1 may start anywhere dword aligned in a page; it covers up to the
//     end of that page.
//   - If the rest fits in one page, PRP2 points at it (page aligned).
//   - Otherwise PRP2 points at a PRP list (qword aligned, maybe with an
//     offset); each entry is a page-aligned data page, and when more
//     entries are needed than fit in the list page, its last entry points
//     to the next list page (page aligned).
func (c *Controller) prpSegments(prp1, prp2 uint64, n int) ([]segment, Status) {
	ps := uint64(c.pageSize())
	if prp1&3 != 0 {
		return nil, StatusPRPOffsetInvalid
	}
	if prp1 == 0 {
		return nil, StatusInvalidField
	}
	first := min(uint64(n), ps-prp1%ps)
	segs := append(c.segs[:0], segment{iova: prp1, n: int(first)})
	rem := uint64(n) - first
	if rem == 0 {
		return segs, 0
	}
	if rem <= ps {
		if prp2%ps != 0 {
			return nil, StatusPRPOffsetInvalid
		}
		if prp2 == 0 {
			return nil, StatusInvalidField
		}
		return append(segs, segment{iova: prp2, n: int(rem)}), 0
	}
	list := prp2
	for rem > 0 {
		if list&7 != 0 {
			return nil, StatusPRPOffsetInvalid
		}
		if list == 0 {
			return nil, StatusInvalidField
		}
		slots := (ps - list%ps) / 8 // entries left in this list page
		need := (rem + ps - 1) / ps
		chain := need > slots
		k := min(need, slots)
		if cap(c.list) < int(8*k) {
			c.list = make([]byte, 8*k)
		}
		entries := c.list[:8*k]
		if !c.mem.read(list, entries) {
			return nil, StatusDataTransferError
		}
		data := k
		if chain {
			data = k - 1
		}
		for i := uint64(0); i < data; i++ {
			e := le.Uint64(entries[8*i:])
			if e%ps != 0 {
				return nil, StatusPRPOffsetInvalid
			}
			if e == 0 {
				return nil, StatusInvalidField
			}
			m := min(rem, ps)
			segs = append(segs, segment{iova: e, n: int(m)})
			rem -= m
		}
		if chain {
			// Only PRP2 may point into a list page; the chained
			// pointer is a page, as QEMU's nvme_map_prp checks.
			list = le.Uint64(entries[8*(k-1):])
			if list%ps != 0 {
				return nil, StatusPRPOffsetInvalid
			}
		}
	}
	return segs, 0
}

// SGL descriptor types (base specification 2.0, Figure 116).
const (
	sglDataBlock   = 0x0
	sglBitBucket   = 0x1
	sglSegment     = 0x2
	sglLastSegment = 0x3
)

// sglSegments walks an SGL whose first descriptor is SGL1 in the SQE
// (address in dptr1; length in dptr2 bits 31:0; identifier in byte 15, type
// in bits 7:4, subtype in 3:0). Data Block and Bit Bucket descriptors carry
// data; a Segment descriptor points to a list whose last descriptor may
// chain to the next list; a Last Segment's list may not chain. The lengths
// must cover n bytes; excess is ignored.
func (c *Controller) sglSegments(dptr1, dptr2 uint64, n int, toHost bool) ([]segment, Status) {
	var segs []segment
	total := 0
	addr, length, id := dptr1, uint32(dptr2), uint8(dptr2>>56)
	last := false // inside a Last Segment's list
	for count := 0; ; {
		typ, sub := id>>4, id&0xf
		if sub != 0 {
			return nil, StatusSGLTypeInvalid // only address subtype
		}
		switch typ {
		case sglDataBlock, sglBitBucket:
			if typ == sglBitBucket && !toHost {
				return nil, StatusSGLTypeInvalid
			}
			if length > 0 && total < n {
				m := min(int(length), n-total)
				segs = append(segs, segment{iova: addr, n: m, bucket: typ == sglBitBucket})
				total += m
			}
			if total < n {
				return nil, StatusDataSGLLengthInvalid
			}
			return segs, 0
		case sglSegment, sglLastSegment:
			if last {
				return nil, StatusInvalidSGLSegment
			}
			if length == 0 || length%16 != 0 || addr%16 != 0 {
				return nil, StatusInvalidSGLSegment
			}
			k := int(length / 16)
			if count += k; count > maxSGLDescriptors {
				return nil, StatusInvalidSGLCount
			}
			list := make([]byte, length)
			if !c.mem.read(addr, list) {
				return nil, StatusDataTransferError
			}
			last = typ == sglLastSegment
			var next []byte
			for i := 0; i < k; i++ {
				d := list[16*i : 16*i+16]
				dt, ds := d[15]>>4, d[15]&0xf
				if ds != 0 {
					return nil, StatusSGLTypeInvalid
				}
				switch dt {
				case sglSegment, sglLastSegment:
					if i != k-1 || last {
						return nil, StatusInvalidSGLSegment
					}
					next = d
				case sglDataBlock, sglBitBucket:
					if dt == sglBitBucket && !toHost {
						return nil, StatusSGLTypeInvalid
					}
					dl := int(le.Uint32(d[8:]))
					if dl > 0 && total < n {
						m := min(dl, n-total)
						segs = append(segs, segment{iova: le.Uint64(d), n: m, bucket: dt == sglBitBucket})
						total += m
					}
				default:
					return nil, StatusSGLTypeInvalid
				}
			}
			if next == nil {
				if !last {
					return nil, StatusInvalidSGLSegment // a Segment's list must chain
				}
				if total < n {
					return nil, StatusDataSGLLengthInvalid
				}
				return segs, 0
			}
			addr, length, id = le.Uint64(next), le.Uint32(next[8:]), next[15]
		default:
			return nil, StatusSGLTypeInvalid
		}
	}
}

// copyToHost writes data to the host through segs (a DMA write).
func (c *Controller) copyToHost(segs []segment, data []byte) {
	for _, s := range segs {
		if !s.bucket {
			c.mem.write(s.iova, data[:s.n])
		}
		data = data[s.n:]
	}
}

// copyFromHost fills data from the host through segs (a DMA read).
func (c *Controller) copyFromHost(segs []segment, data []byte) {
	for _, s := range segs {
		c.mem.read(s.iova, data[:s.n])
		data = data[s.n:]
	}
}
