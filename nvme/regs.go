package nvme

import (
	"fmt"
	"time"
)

// Controller register offsets in BAR0 (NVMe Base Specification 2.0, §3.1.3,
// "Controller Registers"). 64-bit registers (CAP, ASQ, ACQ) are accessed as
// two 32-bit halves, low half first.
const (
	RegCAP    = 0x00 // Controller Capabilities, 64-bit, RO (§3.1.3.1)
	RegVS     = 0x08 // Version, RO (§3.1.3.2)
	RegINTMS  = 0x0c // Interrupt Mask Set, RW1S (§3.1.3.3)
	RegINTMC  = 0x10 // Interrupt Mask Clear, RW1C (§3.1.3.4)
	RegCC     = 0x14 // Controller Configuration, RW (§3.1.3.5)
	RegCSTS   = 0x1c // Controller Status (§3.1.3.6)
	RegNSSR   = 0x20 // NVM Subsystem Reset, optional (§3.1.3.7)
	RegAQA    = 0x24 // Admin Queue Attributes (§3.1.3.8)
	RegASQ    = 0x28 // Admin Submission Queue Base Address, 64-bit (§3.1.3.9)
	RegACQ    = 0x30 // Admin Completion Queue Base Address, 64-bit (§3.1.3.10)
	RegCMBLOC = 0x38 // Controller Memory Buffer Location, optional (§3.1.3.11)
	RegCMBSZ  = 0x3c // Controller Memory Buffer Size, optional (§3.1.3.12)

	// RegDoorbellBase is the offset of the first doorbell (the admin SQ
	// tail). See DoorbellOffset for the others (§3.1.3.22).
	RegDoorbellBase = 0x1000
)

// NSSRReset is the value ("NVMe" in ASCII) that, written to NSSR, starts an
// NVM Subsystem Reset (§3.1.3.7).
const NSSRReset = 0x4e564d65

// regNames names the registers for error messages.
var regNames = map[int]string{
	RegCAP: "CAP", RegCAP + 4: "CAP+4", RegVS: "VS", RegINTMS: "INTMS",
	RegINTMC: "INTMC", RegCC: "CC", RegCSTS: "CSTS", RegNSSR: "NSSR",
	RegAQA: "AQA", RegASQ: "ASQ", RegASQ + 4: "ASQ+4", RegACQ: "ACQ",
	RegACQ + 4: "ACQ+4", RegCMBLOC: "CMBLOC", RegCMBSZ: "CMBSZ",
}

// RegName returns the spec name of the register at byte offset off, or the
// offset in hex when it has none ("0x1008").
func RegName(off int) string {
	if n, ok := regNames[off]; ok {
		return n
	}
	return fmt.Sprintf("0x%x", off)
}

// AllOnes reports whether a register read returned 0xffffffff. A PCIe read
// from a device that has gone (surprise removal, link down, function reset
// in progress) completes with all ones, and no register of a working
// controller (CAP low half, VS, CSTS) reads that way.
func AllOnes(v uint32) bool { return v == 0xffffffff }

// CheckRegister returns an error wrapping ErrDeviceGone if v, read from the
// register at off, is all ones; otherwise nil.
func CheckRegister(off int, v uint32) error {
	if AllOnes(v) {
		return fmt.Errorf("register %s reads 0xffffffff: %w", RegName(off), ErrDeviceGone)
	}
	return nil
}

// DoorbellOffset returns the BAR0 offset of the SQ tail doorbell (cq false)
// or CQ head doorbell (cq true) of queue qid, for a doorbell stride in
// bytes as CAP.DoorbellStride reports it (§3.1.3.22, §3.1.3.23):
//
//	0x1000 + (2*qid + cq) * stride
func DoorbellOffset(qid uint16, cq bool, stride int) int {
	i := 2 * int(qid)
	if cq {
		i++
	}
	return RegDoorbellBase + i*stride
}

// field extracts the n-bit field at bit shift of v.
func field(v uint64, shift, n uint) uint64 { return v >> shift & (1<<n - 1) }

// CAP is the Controller Capabilities register (§3.1.3.1).
type CAP uint64

// MQES is the Maximum Queue Entries Supported field, 0-based as in the
// register: a value of 1 means queues of 2 entries. See MaxQueueEntries.
func (c CAP) MQES() uint16 { return uint16(field(uint64(c), 0, 16)) }

// MaxQueueEntries is the largest queue depth the controller accepts
// (MQES+1), from 2 to 65536 for a controller that follows the spec.
func (c CAP) MaxQueueEntries() int { return int(c.MQES()) + 1 }

// CQR (Contiguous Queues Required) reports whether I/O queues must be
// physically contiguous. nvmepoll always allocates them contiguous.
func (c CAP) CQR() bool { return field(uint64(c), 16, 1) == 1 }

// AMS is the Arbitration Mechanism Supported field: bit 0 weighted round
// robin with urgent priority, bit 1 vendor specific. Round robin is always
// supported.
func (c CAP) AMS() uint8 { return uint8(field(uint64(c), 17, 2)) }

// TO is the Timeout field: the worst-case time, in 500 ms units, to wait
// for CSTS.RDY to change after CC.EN changes. See Timeout.
func (c CAP) TO() uint8 { return uint8(field(uint64(c), 24, 8)) }

// Timeout is TO as a duration. A TO of 0 (out of spec) gives 500 ms rather
// than a zero deadline that would fail every enable at once.
func (c CAP) Timeout() time.Duration {
	to := c.TO()
	if to == 0 {
		to = 1
	}
	return time.Duration(to) * 500 * time.Millisecond
}

// DSTRD is the Doorbell Stride field: doorbells are 4 << DSTRD bytes
// apart. See DoorbellStride.
func (c CAP) DSTRD() uint8 { return uint8(field(uint64(c), 32, 4)) }

// DoorbellStride is the distance between doorbell registers in bytes.
func (c CAP) DoorbellStride() int { return 4 << c.DSTRD() }

// NSSRS reports whether NVM Subsystem Reset (the NSSR register) is supported.
func (c CAP) NSSRS() bool { return field(uint64(c), 36, 1) == 1 }

// CSS is the Command Sets Supported field (bits 44:37). Bit 0 is the NVM
// command set, bit 6 "one or more I/O command sets", bit 7 "admin only".
func (c CAP) CSS() uint8 { return uint8(field(uint64(c), 37, 8)) }

// SupportsNVM reports whether the NVM command set is supported, directly
// (CSS bit 0) or as one of several I/O command sets (CSS bit 6).
func (c CAP) SupportsNVM() bool { return c.CSS()&(1<<0|1<<6) != 0 }

// BPS reports whether Boot Partitions are supported.
func (c CAP) BPS() bool { return field(uint64(c), 45, 1) == 1 }

// MPSMIN is the Memory Page Size Minimum field: 1 << (12+MPSMIN) bytes.
func (c CAP) MPSMIN() uint8 { return uint8(field(uint64(c), 48, 4)) }

// MPSMAX is the Memory Page Size Maximum field: 1 << (12+MPSMAX) bytes.
func (c CAP) MPSMAX() uint8 { return uint8(field(uint64(c), 52, 4)) }

// MinPageSize is the smallest host memory page size the controller
// supports, in bytes (4096 on nearly every controller).
func (c CAP) MinPageSize() int { return 1 << (12 + c.MPSMIN()) }

// MaxPageSize is the largest host memory page size the controller
// supports, in bytes.
func (c CAP) MaxPageSize() int { return 1 << (12 + c.MPSMAX()) }

// PMRS reports whether a Persistent Memory Region is supported.
func (c CAP) PMRS() bool { return field(uint64(c), 56, 1) == 1 }

// CMBS reports whether the Controller Memory Buffer location registers
// are supported.
func (c CAP) CMBS() bool { return field(uint64(c), 57, 1) == 1 }

// NSSS reports whether NVM Subsystem Shutdown is supported.
func (c CAP) NSSS() bool { return field(uint64(c), 58, 1) == 1 }

// SupportsPageSize reports whether a host page size in bytes is a power of
// two within [MinPageSize, MaxPageSize].
func (c CAP) SupportsPageSize(size int) bool {
	return size > 0 && size&(size-1) == 0 && size >= c.MinPageSize() && size <= c.MaxPageSize()
}

// Validate checks that CAP describes a controller nvmepoll can drive: not
// all ones (device gone), queues of at least 2 entries, a sane page size
// range, and the NVM command set. The register is device data, so nothing
// is assumed.
func (c CAP) Validate() error {
	// Either half all ones: both halves have reserved bits (23:19, 63:61)
	// that a working controller reads as zero.
	if AllOnes(uint32(c)) || AllOnes(uint32(c>>32)) {
		return fmt.Errorf("CAP reads 0x%016x: %w", uint64(c), ErrDeviceGone)
	}
	if c.MQES() == 0 {
		return fmt.Errorf("CAP.MQES is 0 (1-entry queues; the spec requires at least 2 entries): %w", ErrOutOfSpec)
	}
	if c.MPSMIN() > c.MPSMAX() {
		return fmt.Errorf("CAP.MPSMIN %d is above CAP.MPSMAX %d: %w", c.MPSMIN(), c.MPSMAX(), ErrOutOfSpec)
	}
	if !c.SupportsNVM() {
		return fmt.Errorf("CAP.CSS 0x%02x does not include the NVM command set: %w", c.CSS(), ErrNotSupported)
	}
	return nil
}

// String summarises the fields a bring-up log wants.
func (c CAP) String() string {
	return fmt.Sprintf("CAP(0x%016x: mqes %d, dstrd %d, to %v, css 0x%02x, mps %d-%d)",
		uint64(c), c.MQES(), c.DSTRD(), c.Timeout(), c.CSS(), c.MinPageSize(), c.MaxPageSize())
}

// VS is the Version register (§3.1.3.2).
type VS uint32

// Major is the MJR field (bits 31:16).
func (v VS) Major() uint16 { return uint16(v >> 16) }

// Minor is the MNR field (bits 15:8).
func (v VS) Minor() uint8 { return uint8(v >> 8) }

// Tertiary is the TER field (bits 7:0).
func (v VS) Tertiary() uint8 { return uint8(v) }

// String formats the version as "1.4.0".
func (v VS) String() string { return fmt.Sprintf("%d.%d.%d", v.Major(), v.Minor(), v.Tertiary()) }

// MakeVS returns the version register value for major.minor.tertiary.
func MakeVS(major uint16, minor, tertiary uint8) VS {
	return VS(uint32(major)<<16 | uint32(minor)<<8 | uint32(tertiary))
}

// Command set selections for CC.CSS (§3.1.3.5).
const (
	CCCSSNVM       = 0 // NVM command set
	CCCSSAll       = 6 // all supported I/O command sets (needs CAP.CSS bit 6)
	CCCSSAdminOnly = 7 // admin command set only
)

// ShutdownNotification is the CC.SHN field (§3.1.3.5).
type ShutdownNotification uint8

// Shutdown notifications written to CC.SHN.
const (
	ShutdownNone   ShutdownNotification = 0 // no notification
	ShutdownNormal ShutdownNotification = 1 // normal shutdown: flush, then stop
	ShutdownAbrupt ShutdownNotification = 2 // abrupt shutdown: stop now
)

func (s ShutdownNotification) String() string {
	switch s {
	case ShutdownNone:
		return "none"
	case ShutdownNormal:
		return "normal"
	case ShutdownAbrupt:
		return "abrupt"
	}
	return fmt.Sprintf("reserved(%d)", uint8(s))
}

// Queue entry sizes as powers of two, for CC.IOSQES and CC.IOCQES.
const (
	SQEntryShift = 6 // 64-byte submission queue entries
	CQEntryShift = 4 // 16-byte completion queue entries
)

// CC is the Controller Configuration register (§3.1.3.5). Build one with
// NewCC and the With methods; each returns a new value.
type CC uint32

// NewCC returns the configuration nvmepoll enables a controller with: the
// NVM command set, round robin arbitration, 64-byte SQEs, 16-byte CQEs and
// the given host page size, which must be a power of two from 4 KiB to
// 128 MiB. EN is left clear; set it with WithEN once AQA/ASQ/ACQ are written.
func NewCC(pageSize int) (CC, error) {
	var c CC
	c, err := c.WithPageSize(pageSize)
	if err != nil {
		return 0, err
	}
	return c.WithCSS(CCCSSNVM).WithIOSQES(SQEntryShift).WithIOCQES(CQEntryShift), nil
}

func (c CC) set(shift, n uint, v uint32) CC {
	mask := uint32(1<<n-1) << shift
	return CC(uint32(c)&^mask | v<<shift&mask)
}

// EN is the Enable bit.
func (c CC) EN() bool { return c&1 == 1 }

// CSS is the I/O Command Set Selected field (bits 6:4).
func (c CC) CSS() uint8 { return uint8(field(uint64(c), 4, 3)) }

// MPS is the Memory Page Size field: pages are 1 << (12+MPS) bytes.
func (c CC) MPS() uint8 { return uint8(field(uint64(c), 7, 4)) }

// PageSize is the host memory page size in bytes.
func (c CC) PageSize() int { return 1 << (12 + c.MPS()) }

// AMS is the Arbitration Mechanism Selected field (0 = round robin).
func (c CC) AMS() uint8 { return uint8(field(uint64(c), 11, 3)) }

// SHN is the Shutdown Notification field.
func (c CC) SHN() ShutdownNotification { return ShutdownNotification(field(uint64(c), 14, 2)) }

// IOSQES is the I/O Submission Queue Entry Size, a power of two (6 = 64 B).
func (c CC) IOSQES() uint8 { return uint8(field(uint64(c), 16, 4)) }

// IOCQES is the I/O Completion Queue Entry Size, a power of two (4 = 16 B).
func (c CC) IOCQES() uint8 { return uint8(field(uint64(c), 20, 4)) }

// WithEN returns c with the Enable bit set or cleared.
func (c CC) WithEN(en bool) CC {
	var b uint32
	if en {
		b = 1
	}
	return c.set(0, 1, b)
}

// WithCSS returns c with CSS set (CCCSSNVM, CCCSSAll, CCCSSAdminOnly).
func (c CC) WithCSS(css uint8) CC { return c.set(4, 3, uint32(css)) }

// WithMPS returns c with the MPS field set; see WithPageSize.
func (c CC) WithMPS(mps uint8) CC { return c.set(7, 4, uint32(mps)) }

// WithPageSize returns c with MPS set for a page size in bytes, or an
// error wrapping ErrInvalidArgument if the size is not a power of two
// between 4 KiB and 128 MiB.
func (c CC) WithPageSize(size int) (CC, error) {
	for mps := uint8(0); mps < 16; mps++ {
		if 1<<(12+mps) == size {
			return c.WithMPS(mps), nil
		}
	}
	return c, fmt.Errorf("page size %d is not a power of two from 4096 to %d: %w", size, 1<<27, ErrInvalidArgument)
}

// WithAMS returns c with the arbitration mechanism selected.
func (c CC) WithAMS(ams uint8) CC { return c.set(11, 3, uint32(ams)) }

// WithSHN returns c with the shutdown notification set.
func (c CC) WithSHN(s ShutdownNotification) CC { return c.set(14, 2, uint32(s)) }

// WithIOSQES returns c with the I/O SQ entry size (a power of two) set.
func (c CC) WithIOSQES(shift uint8) CC { return c.set(16, 4, uint32(shift)) }

// WithIOCQES returns c with the I/O CQ entry size (a power of two) set.
func (c CC) WithIOCQES(shift uint8) CC { return c.set(20, 4, uint32(shift)) }

func (c CC) String() string {
	return fmt.Sprintf("CC(0x%08x: en %t, css %d, page %d, ams %d, shn %v, iosqes %d, iocqes %d)",
		uint32(c), c.EN(), c.CSS(), c.PageSize(), c.AMS(), c.SHN(), c.IOSQES(), c.IOCQES())
}

// ShutdownStatus is the CSTS.SHST field (§3.1.3.6).
type ShutdownStatus uint8

// Shutdown states reported in CSTS.SHST.
const (
	ShutdownStatusNormal     ShutdownStatus = 0 // normal operation, no shutdown requested
	ShutdownStatusProcessing ShutdownStatus = 1 // shutdown in progress
	ShutdownStatusComplete   ShutdownStatus = 2 // shutdown complete
)

func (s ShutdownStatus) String() string {
	switch s {
	case ShutdownStatusNormal:
		return "normal"
	case ShutdownStatusProcessing:
		return "processing"
	case ShutdownStatusComplete:
		return "complete"
	}
	return fmt.Sprintf("reserved(%d)", uint8(s))
}

// CSTS is the Controller Status register (§3.1.3.6).
type CSTS uint32

// RDY is the Ready bit: the controller processes commands after CC.EN is
// set and RDY reads 1.
func (s CSTS) RDY() bool { return s&1 == 1 }

// CFS is the Controller Fatal Status bit: the controller hit a fatal error
// and needs a reset. See ErrControllerFatal.
func (s CSTS) CFS() bool { return s>>1&1 == 1 }

// SHST is the Shutdown Status field.
func (s CSTS) SHST() ShutdownStatus { return ShutdownStatus(s >> 2 & 3) }

// NSSRO reports that an NVM Subsystem Reset occurred (write 1 to clear).
func (s CSTS) NSSRO() bool { return s>>4&1 == 1 }

// PP is the Processing Paused bit.
func (s CSTS) PP() bool { return s>>5&1 == 1 }

// Check returns an error wrapping ErrDeviceGone if CSTS reads all ones or
// ErrControllerFatal if CFS is set; otherwise nil. Poll loops waiting for
// RDY should call it on every read so they fail at once instead of at
// CAP.TO.
func (s CSTS) Check() error {
	if AllOnes(uint32(s)) {
		return fmt.Errorf("CSTS reads 0xffffffff: %w", ErrDeviceGone)
	}
	if s.CFS() {
		return fmt.Errorf("CSTS 0x%08x has CFS set: %w", uint32(s), ErrControllerFatal)
	}
	return nil
}

func (s CSTS) String() string {
	return fmt.Sprintf("CSTS(0x%08x: rdy %t, cfs %t, shst %v, nssro %t, pp %t)",
		uint32(s), s.RDY(), s.CFS(), s.SHST(), s.NSSRO(), s.PP())
}

// AQA is the Admin Queue Attributes register (§3.1.3.8). Both sizes are
// 0-based, as in the register.
type AQA uint32

// MaxAdminQueueEntries is the largest admin queue depth the register can
// express (ASQS/ACQS are 12 bits, 0-based).
const MaxAdminQueueEntries = 4096

// MakeAQA returns AQA for admin queues of sq and cq entries (not 0-based),
// or an error wrapping ErrInvalidArgument if either is outside 2..4096.
func MakeAQA(sq, cq int) (AQA, error) {
	if sq < 2 || sq > MaxAdminQueueEntries || cq < 2 || cq > MaxAdminQueueEntries {
		return 0, fmt.Errorf("admin queue sizes sq %d cq %d outside 2..%d: %w", sq, cq, MaxAdminQueueEntries, ErrInvalidArgument)
	}
	return AQA(uint32(cq-1)<<16 | uint32(sq-1)), nil
}

// ASQS is the Admin Submission Queue Size, 0-based.
func (a AQA) ASQS() uint16 { return uint16(a & 0xfff) }

// ACQS is the Admin Completion Queue Size, 0-based.
func (a AQA) ACQS() uint16 { return uint16(a >> 16 & 0xfff) }
