package nvme

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"strings"
	"time"
)

// IdentifySize is the size of every Identify data structure.
const IdentifySize = 4096

// IdentifyAnomaly is a kind of implausible Identify data, found by the
// checks below and by Open and Namespace, which check what they size things
// from. It indexes Counters.BadIdentify: a Controller counts each check that
// fires on data it read, whether the data is rejected (an ErrOutOfSpec
// error naming the field) or a field is clamped or ignored.
type IdentifyAnomaly uint8

const (
	// BadSQES: Identify Controller SQES excludes 64-byte entries
	// (rejected).
	BadSQES IdentifyAnomaly = iota
	// BadCQES: CQES excludes 16-byte entries (rejected).
	BadCQES
	// BadNN: NN is the broadcast NSID 0xffffffff (rejected).
	BadNN
	// BadMDTS: MDTS is 32 or more, 2^32 pages or more per command; Open
	// takes it as no limit, so Options.MaxTransfer applies (ignored).
	BadMDTS
	// BadNPSS: NPSS is above 31; only the 32 power state descriptors the
	// page holds are kept (clamped).
	BadNPSS
	// BadNLBAF: Identify Namespace NLBAF is above 63 (rejected).
	BadNLBAF
	// BadFLBAS: FLBAS selects a format past NLBAF (rejected).
	BadFLBAS
	// BadLBADS: the block size of the format in use is outside
	// 2^MinLBADS..2^MaxLBADS, or (Namespace) above 64 KiB (rejected).
	BadLBADS
	// BadCapacity: NCAP is above NSZE, or NUSE above NCAP (rejected).
	BadCapacity
	// BadNSZE: NSZE blocks do not fit in 64 bits of bytes, or (Namespace)
	// in 63 (rejected).
	BadNSZE
	// BadNSList: the active namespace list holds 0xffffffff, is not
	// strictly increasing, or a page does not start after the NSID asked
	// for (rejected).
	BadNSList

	// NumIdentifyAnomalies is the number of kinds, the length of
	// Counters.BadIdentify.
	NumIdentifyAnomalies
)

var anomalyNames = [NumIdentifyAnomalies]string{
	BadSQES: "SQES", BadCQES: "CQES", BadNN: "NN", BadMDTS: "MDTS", BadNPSS: "NPSS",
	BadNLBAF: "NLBAF", BadFLBAS: "FLBAS", BadLBADS: "LBADS", BadCapacity: "NCAP/NUSE", BadNSZE: "NSZE",
	BadNSList: "active namespace list",
}

// String is the field the anomaly is in, as the spec spells it.
func (k IdentifyAnomaly) String() string {
	if k < NumIdentifyAnomalies {
		return anomalyNames[k]
	}
	return fmt.Sprintf("IdentifyAnomaly(%d)", uint8(k))
}

// anomalyFunc is told of each IdentifyAnomaly a check finds, at the check;
// nil ignores them.
type anomalyFunc func(IdentifyAnomaly)

func (f anomalyFunc) add(k IdentifyAnomaly) {
	if f != nil {
		f(k)
	}
}

// Uint128 is a 128-bit little-endian counter or capacity from the device
// (TNVMCAP, SMART data units, ...). Hi is zero for any value a real device
// reaches today; String prints the full value in decimal.
type Uint128 struct {
	Lo, Hi uint64
}

func le128(b []byte) Uint128 {
	return Uint128{Lo: binary.LittleEndian.Uint64(b), Hi: binary.LittleEndian.Uint64(b[8:])}
}

// Uint64 returns the value and true, or the low 64 bits and false if the
// value does not fit.
func (u Uint128) Uint64() (uint64, bool) { return u.Lo, u.Hi == 0 }

// IsZero reports whether the value is 0.
func (u Uint128) IsZero() bool { return u.Lo == 0 && u.Hi == 0 }

// String formats the value in decimal.
func (u Uint128) String() string {
	if u.Hi == 0 {
		return fmt.Sprint(u.Lo)
	}
	// Divide by 10^19 (the largest power of ten below 2^64) to split into
	// base-10^19 digits; at most three are needed for 2^128.
	const e19 = 10_000_000_000_000_000_000
	var parts []uint64
	hi, lo := u.Hi, u.Lo
	for hi != 0 {
		var qhi, r uint64
		qhi, r = bits.Div64(0, hi, e19)
		var qlo uint64
		qlo, r = bits.Div64(r, lo, e19)
		parts = append(parts, r)
		hi, lo = qhi, qlo
	}
	s := fmt.Sprint(lo)
	for i := len(parts) - 1; i >= 0; i-- {
		s += fmt.Sprintf("%019d", parts[i])
	}
	return s
}

// asciiField decodes a space-padded ASCII field (SN, MN, FR, SUBNQN): the
// padding and anything from the first NUL on are dropped, and any byte that is not printable
// ASCII becomes '?' so a hostile device cannot put terminal escapes into
// nvmectl's output.
func asciiField(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\x00")
	s = strings.TrimRight(s, " ")
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}

// OACS is the Optional Admin Command Support field of Identify Controller.
type OACS uint16

func (o OACS) SecuritySend() bool           { return o&(1<<0) != 0 } // Security Send/Receive
func (o OACS) Format() bool                 { return o&(1<<1) != 0 } // Format NVM
func (o OACS) FirmwareDownload() bool       { return o&(1<<2) != 0 } // Firmware Commit/Image Download
func (o OACS) NSManagement() bool           { return o&(1<<3) != 0 } // Namespace Management/Attachment
func (o OACS) SelfTest() bool               { return o&(1<<4) != 0 } // Device Self-test
func (o OACS) Directives() bool             { return o&(1<<5) != 0 } // Directive Send/Receive
func (o OACS) NVMeMI() bool                 { return o&(1<<6) != 0 } // NVMe-MI Send/Receive
func (o OACS) Virtualization() bool         { return o&(1<<7) != 0 } // Virtualization Management
func (o OACS) DoorbellBufferConfig() bool   { return o&(1<<8) != 0 } // shadow doorbells
func (o OACS) GetLBAStatus() bool           { return o&(1<<9) != 0 } // Get LBA Status
func (o OACS) CommandFeatureLockdown() bool { return o&(1<<10) != 0 }

// ONCS is the Optional NVM Command Support field of Identify Controller.
type ONCS uint16

func (o ONCS) Compare() bool              { return o&(1<<0) != 0 }
func (o ONCS) WriteUncorrectable() bool   { return o&(1<<1) != 0 }
func (o ONCS) DSM() bool                  { return o&(1<<2) != 0 } // Dataset Management (deallocate / trim)
func (o ONCS) WriteZeroes() bool          { return o&(1<<3) != 0 }
func (o ONCS) SaveSelectInFeatures() bool { return o&(1<<4) != 0 } // Save and Select fields of Set/Get Features
func (o ONCS) Reservations() bool         { return o&(1<<5) != 0 }
func (o ONCS) Timestamp() bool            { return o&(1<<6) != 0 }
func (o ONCS) Verify() bool               { return o&(1<<7) != 0 }
func (o ONCS) Copy() bool                 { return o&(1<<8) != 0 }

// SGLS is the SGL Support field of Identify Controller.
type SGLS uint32

// Supported reports whether the NVM command set accepts SGLs (bits 1:0
// not 00b).
func (s SGLS) Supported() bool { return s&3 == 1 || s&3 == 2 }

// DwordAligned reports whether SGL data blocks must be dword aligned
// (bits 1:0 = 10b).
func (s SGLS) DwordAligned() bool { return s&3 == 2 }

// EntrySizes is SQES or CQES: the required (minimum) and maximum queue
// entry sizes as powers of two.
type EntrySizes uint8

// Min is the required entry size, log2 bytes (bits 3:0).
func (e EntrySizes) Min() uint8 { return uint8(e & 0xf) }

// Max is the largest entry size supported, log2 bytes (bits 7:4).
func (e EntrySizes) Max() uint8 { return uint8(e >> 4) }

// Allows reports whether entries of 1<<shift bytes are within the range.
func (e EntrySizes) Allows(shift uint8) bool { return e.Min() <= shift && shift <= e.Max() }

// PowerState is one Power State Descriptor of Identify Controller
// (NVMe 2.0 §5.17.2.1, Figure 276).
type PowerState struct {
	MaxPower     uint16 // MP, in units of MaxPowerScale
	MXPS         bool   // max power scale: 0.0001 W units if set, else 0.01 W
	NOPS         bool   // non-operational state: no I/O is processed
	EntryLatency uint32 // ENLAT, microseconds
	ExitLatency  uint32 // EXLAT, microseconds
	RRT, RRL     uint8  // relative read throughput and latency
	RWT, RWL     uint8  // relative write throughput and latency
	IdlePower    uint16 // IDLP
	IPS          uint8  // idle power scale
	ActivePower  uint16 // ACTP
	APW, APS     uint8  // active power workload and scale
}

// MaxPowerMilliwatts is MP in milliwatts.
func (p PowerState) MaxPowerMilliwatts() float64 {
	if p.MXPS {
		return float64(p.MaxPower) / 10
	}
	return float64(p.MaxPower) * 10
}

// MaxPowerStates is the number of power state descriptors Identify
// Controller can hold.
const MaxPowerStates = 32

// IdentifyController is the Identify Controller data structure (CNS 01h;
// NVMe Base Specification 2.0, §5.17.2.1, Figure 275), decoded. Field names
// follow the spec's abbreviations; multi-byte fields are little endian on
// the wire and plain integers here.
type IdentifyController struct {
	VID       uint16  // PCI Vendor ID (bytes 1:0)
	SSVID     uint16  // PCI Subsystem Vendor ID (3:2)
	SN        string  // Serial Number (23:4), padding trimmed
	MN        string  // Model Number (63:24)
	FR        string  // Firmware Revision (71:64)
	RAB       uint8   // Recommended Arbitration Burst, log2 commands (72)
	IEEE      [3]byte // IEEE OUI, as stored (75:73)
	CMIC      uint8   // Controller Multi-Path I/O and Namespace Sharing (76)
	MDTS      uint8   // Maximum Data Transfer Size, log2 of min pages; 0 = no limit (77). See MaxTransfer.
	CNTLID    uint16  // Controller ID (79:78)
	VER       VS      // Version, same layout as the VS register (83:80)
	RTD3R     uint32  // RTD3 Resume Latency, µs (87:84)
	RTD3E     uint32  // RTD3 Entry Latency, µs (91:88)
	OAES      uint32  // Optional Asynchronous Events Supported (95:92)
	CTRATT    uint32  // Controller Attributes (99:96)
	CNTRLTYPE uint8   // Controller Type: 1 I/O, 2 discovery, 3 administrative (111)
	FGUID     [16]byte
	CRDT      [3]uint16 // Command Retry Delay Times 1-3, 100 ms units (133:128)

	OACS    OACS    // Optional Admin Command Support (257:256)
	ACL     uint8   // Abort Command Limit, 0-based (258)
	AERL    uint8   // Asynchronous Event Request Limit, 0-based (259)
	FRMW    uint8   // Firmware Updates (260)
	LPA     uint8   // Log Page Attributes (261)
	ELPE    uint8   // Error Log Page Entries, 0-based (262)
	NPSS    uint8   // Number of Power States Support, 0-based (263)
	AVSCC   uint8   // Admin Vendor Specific Command Configuration (264)
	APSTA   uint8   // Autonomous Power State Transition Attributes (265)
	WCTEMP  uint16  // Warning Composite Temperature Threshold, kelvin (267:266)
	CCTEMP  uint16  // Critical Composite Temperature Threshold, kelvin (269:268)
	MTFA    uint16  // Maximum Time for Firmware Activation, 100 ms units (271:270)
	HMPRE   uint32  // Host Memory Buffer Preferred Size, 4 KiB units (275:272)
	HMMIN   uint32  // Host Memory Buffer Minimum Size (279:276)
	TNVMCAP Uint128 // Total NVM Capacity, bytes (295:280)
	UNVMCAP Uint128 // Unallocated NVM Capacity, bytes (311:296)
	KAS     uint16  // Keep Alive Support, 100 ms units (321:320)

	SQES   EntrySizes // Submission Queue Entry Size (512)
	CQES   EntrySizes // Completion Queue Entry Size (513)
	MAXCMD uint16     // Maximum Outstanding Commands, 0 = not reported (515:514)
	NN     uint32     // Number of Namespaces: the largest valid NSID (519:516)
	ONCS   ONCS       // Optional NVM Command Support (521:520)
	FUSES  uint16     // Fused Operation Support (523:522)
	FNA    uint8      // Format NVM Attributes (524)
	VWC    uint8      // Volatile Write Cache; bit 0 = present (525)
	AWUN   uint16     // Atomic Write Unit Normal, 0-based blocks (527:526)
	AWUPF  uint16     // Atomic Write Unit Power Fail, 0-based blocks (529:528)
	NVSCC  uint8      // I/O Command Set Vendor Specific Command Configuration (530)
	NWPC   uint8      // Namespace Write Protection Capabilities (531)
	ACWU   uint16     // Atomic Compare & Write Unit, 0-based blocks (533:532)
	OCFS   uint16     // Optional Copy Formats Supported (535:534)
	SGLS   SGLS       // SGL Support (539:536)
	MNAN   uint32     // Maximum Number of Allowed Namespaces (543:540)
	SUBNQN string     // NVM Subsystem NVMe Qualified Name (1023:768)

	// PowerStates holds descriptors 0..NPSS (2047+32*i), at most 32.
	PowerStates []PowerState
}

// VolatileWriteCache reports whether the controller has a volatile write
// cache, so that a Flush is needed for durability.
func (c *IdentifyController) VolatileWriteCache() bool { return c.VWC&1 == 1 }

// RetryDelay is how long to wait before retrying a command whose
// *StatusError has Command Retry Delay crd: 0 for crd 0, else CRDT1-3 in
// 100 ms units. A crd above 3 (not representable in the 2-bit field) gives 0.
func (c *IdentifyController) RetryDelay(crd uint8) time.Duration {
	if crd == 0 || crd > 3 {
		return 0
	}
	return time.Duration(c.CRDT[crd-1]) * 100 * time.Millisecond
}

// DefaultMaxTransfer is the transfer size limit MaxTransfer uses when the
// controller reports no limit (MDTS 0) or a limit above it: 2 MiB, what one
// PRP list page of 4 KiB pages describes (512 entries).
const DefaultMaxTransfer = 2 << 20

// MaxTransfer returns the largest data transfer of one command in bytes:
// minPageSize (CAP.MinPageSize) << MDTS, capped at DefaultMaxTransfer, which
// is also the answer for MDTS 0 ("no limit"). The shift cannot overflow.
// A minPageSize that is not a power of two of at least 4096 is taken as
// 4096.
func (c *IdentifyController) MaxTransfer(minPageSize int) int {
	if minPageSize < 4096 || minPageSize&(minPageSize-1) != 0 {
		minPageSize = 4096
	}
	if c.MDTS == 0 || c.MDTS >= 32 {
		return DefaultMaxTransfer
	}
	n := uint64(minPageSize) << c.MDTS
	if n > DefaultMaxTransfer {
		return DefaultMaxTransfer
	}
	return int(n)
}

// ParseIdentifyController decodes an Identify Controller page. b must hold
// at least IdentifySize bytes. The page comes from the device, so fields
// nvmepoll relies on are checked: SQES must allow 64-byte and CQES 16-byte
// entries, and NN must not be 0xffffffff (the broadcast NSID). Errors wrap
// ErrOutOfSpec and name the field and its value.
func ParseIdentifyController(b []byte) (*IdentifyController, error) {
	return parseIdentifyController(b, nil)
}

func parseIdentifyController(b []byte, anomalies anomalyFunc) (*IdentifyController, error) {
	if len(b) < IdentifySize {
		return nil, fmt.Errorf("identify controller: %d bytes, want %d: %w", len(b), IdentifySize, ErrInvalidArgument)
	}
	le := binary.LittleEndian
	c := &IdentifyController{
		VID:       le.Uint16(b[0:]),
		SSVID:     le.Uint16(b[2:]),
		SN:        asciiField(b[4:24]),
		MN:        asciiField(b[24:64]),
		FR:        asciiField(b[64:72]),
		RAB:       b[72],
		CMIC:      b[76],
		MDTS:      b[77],
		CNTLID:    le.Uint16(b[78:]),
		VER:       VS(le.Uint32(b[80:])),
		RTD3R:     le.Uint32(b[84:]),
		RTD3E:     le.Uint32(b[88:]),
		OAES:      le.Uint32(b[92:]),
		CTRATT:    le.Uint32(b[96:]),
		CNTRLTYPE: b[111],
		CRDT:      [3]uint16{le.Uint16(b[128:]), le.Uint16(b[130:]), le.Uint16(b[132:])},

		OACS:    OACS(le.Uint16(b[256:])),
		ACL:     b[258],
		AERL:    b[259],
		FRMW:    b[260],
		LPA:     b[261],
		ELPE:    b[262],
		NPSS:    b[263],
		AVSCC:   b[264],
		APSTA:   b[265],
		WCTEMP:  le.Uint16(b[266:]),
		CCTEMP:  le.Uint16(b[268:]),
		MTFA:    le.Uint16(b[270:]),
		HMPRE:   le.Uint32(b[272:]),
		HMMIN:   le.Uint32(b[276:]),
		TNVMCAP: le128(b[280:]),
		UNVMCAP: le128(b[296:]),
		KAS:     le.Uint16(b[320:]),

		SQES:   EntrySizes(b[512]),
		CQES:   EntrySizes(b[513]),
		MAXCMD: le.Uint16(b[514:]),
		NN:     le.Uint32(b[516:]),
		ONCS:   ONCS(le.Uint16(b[520:])),
		FUSES:  le.Uint16(b[522:]),
		FNA:    b[524],
		VWC:    b[525],
		AWUN:   le.Uint16(b[526:]),
		AWUPF:  le.Uint16(b[528:]),
		NVSCC:  b[530],
		NWPC:   b[531],
		ACWU:   le.Uint16(b[532:]),
		OCFS:   le.Uint16(b[534:]),
		SGLS:   SGLS(le.Uint32(b[536:])),
		MNAN:   le.Uint32(b[540:]),
		SUBNQN: asciiField(b[768:1024]),
	}
	copy(c.IEEE[:], b[73:76])
	copy(c.FGUID[:], b[112:128])

	if !c.SQES.Allows(SQEntryShift) {
		anomalies.add(BadSQES)
		return nil, fmt.Errorf("identify controller: SQES 0x%02x (min %d, max %d) does not allow 64-byte entries: %w",
			uint8(c.SQES), c.SQES.Min(), c.SQES.Max(), ErrOutOfSpec)
	}
	if !c.CQES.Allows(CQEntryShift) {
		anomalies.add(BadCQES)
		return nil, fmt.Errorf("identify controller: CQES 0x%02x (min %d, max %d) does not allow 16-byte entries: %w",
			uint8(c.CQES), c.CQES.Min(), c.CQES.Max(), ErrOutOfSpec)
	}
	if c.NN == 0xffffffff {
		anomalies.add(BadNN)
		return nil, fmt.Errorf("identify controller: NN 0x%08x is the broadcast namespace ID: %w", c.NN, ErrOutOfSpec)
	}

	// NPSS above 31 is out of spec, but power states are informational:
	// keep the 32 descriptors the page has room for rather than failing.
	if int(c.NPSS) >= MaxPowerStates {
		anomalies.add(BadNPSS)
	}
	n := min(int(c.NPSS)+1, MaxPowerStates)
	c.PowerStates = make([]PowerState, n)
	for i := range c.PowerStates {
		c.PowerStates[i] = parsePowerState(b[2048+32*i:])
	}
	return c, nil
}

func parsePowerState(d []byte) PowerState {
	le := binary.LittleEndian
	return PowerState{
		MaxPower:     le.Uint16(d[0:]),
		MXPS:         d[3]&1 != 0,
		NOPS:         d[3]&2 != 0,
		EntryLatency: le.Uint32(d[4:]),
		ExitLatency:  le.Uint32(d[8:]),
		RRT:          d[12] & 0x1f,
		RRL:          d[13] & 0x1f,
		RWT:          d[14] & 0x1f,
		RWL:          d[15] & 0x1f,
		IdlePower:    le.Uint16(d[16:]),
		IPS:          d[18] >> 6,
		ActivePower:  le.Uint16(d[20:]),
		APW:          d[22] & 7,
		APS:          d[22] >> 6,
	}
}

// LBAFormat is one LBA Format Data Structure of Identify Namespace (NVM
// Command Set Specification 1.0, Figure 98).
type LBAFormat struct {
	MS    uint16 // Metadata Size, bytes per block
	LBADS uint8  // LBA Data Size, log2 bytes; 0 = format not available
	RP    uint8  // Relative Performance: 0 best ... 3 degraded
}

// BlockSize is the data size of a block in this format, in bytes, or 0
// when LBADS is 0 (format not available) or above 30.
func (f LBAFormat) BlockSize() int {
	if f.LBADS == 0 || f.LBADS > MaxLBADS {
		return 0
	}
	return 1 << f.LBADS
}

// LBADS limits nvmepoll accepts for the format in use: 512-byte blocks are
// the smallest the spec allows; 1 GiB blocks are far beyond any device and
// keep byte offsets from overflowing.
const (
	MinLBADS = 9
	MaxLBADS = 30
)

// MaxLBAFormats is the number of LBA formats Identify Namespace can hold.
const MaxLBAFormats = 64

// IdentifyNamespace is the Identify Namespace data structure of the NVM
// command set (CNS 00h; NVM Command Set Specification 1.0, §4.1.5.1,
// Figure 97), decoded.
type IdentifyNamespace struct {
	NSZE     uint64   // Namespace Size, blocks (7:0)
	NCAP     uint64   // Namespace Capacity, blocks (15:8)
	NUSE     uint64   // Namespace Utilization, blocks (23:16)
	NSFEAT   uint8    // Namespace Features (24)
	NLBAF    uint8    // Number of LBA Formats, 0-based (25)
	FLBAS    uint8    // Formatted LBA Size (26); see FormatIndex, MetadataAtEnd
	MC       uint8    // Metadata Capabilities (27)
	DPC      uint8    // End-to-end Data Protection Capabilities (28)
	DPS      uint8    // End-to-end Data Protection Type Settings (29)
	NMIC     uint8    // Namespace Multi-path I/O and Sharing Capabilities (30)
	RESCAP   uint8    // Reservation Capabilities (31)
	FPI      uint8    // Format Progress Indicator (32)
	DLFEAT   uint8    // Deallocate Logical Block Features (33)
	NAWUN    uint16   // Namespace Atomic Write Unit Normal, 0-based (35:34)
	NAWUPF   uint16   // Namespace Atomic Write Unit Power Fail, 0-based (37:36)
	NACWU    uint16   // Namespace Atomic Compare & Write Unit, 0-based (39:38)
	NABSN    uint16   // Namespace Atomic Boundary Size Normal (41:40)
	NABO     uint16   // Namespace Atomic Boundary Offset (43:42)
	NABSPF   uint16   // Namespace Atomic Boundary Size Power Fail (45:44)
	NOIOB    uint16   // Namespace Optimal I/O Boundary, blocks (47:46)
	NVMCAP   Uint128  // NVM Capacity, bytes (63:48)
	NPWG     uint16   // Namespace Preferred Write Granularity, 0-based (65:64)
	NPWA     uint16   // Namespace Preferred Write Alignment, 0-based (67:66)
	NPDG     uint16   // Namespace Preferred Deallocate Granularity, 0-based (69:68)
	NPDA     uint16   // Namespace Preferred Deallocate Alignment, 0-based (71:70)
	NOWS     uint16   // Namespace Optimal Write Size, 0-based (73:72)
	ANAGRPID uint32   // ANA Group Identifier (95:92)
	NSATTR   uint8    // Namespace Attributes; bit 0 = write protected (99)
	NVMSETID uint16   // NVM Set Identifier (101:100)
	ENDGID   uint16   // Endurance Group Identifier (103:102)
	NGUID    [16]byte // Namespace Globally Unique Identifier (119:104)
	EUI64    [8]byte  // IEEE Extended Unique Identifier (127:120)

	// LBAF holds formats 0..NLBAF (128+4*i).
	LBAF []LBAFormat
}

// FormatIndex is the LBA format in use: FLBAS bits 3:0, plus bits 6:5 as
// the upper bits when the namespace has more than 16 formats.
func (n *IdentifyNamespace) FormatIndex() int {
	i := int(n.FLBAS & 0xf)
	if n.NLBAF >= 16 {
		i |= int(n.FLBAS>>5&3) << 4
	}
	return i
}

// MetadataAtEnd reports FLBAS bit 4: metadata is transferred at the end of
// each block's data (an extended LBA) rather than in a separate buffer.
func (n *IdentifyNamespace) MetadataAtEnd() bool { return n.FLBAS&(1<<4) != 0 }

// Format is the LBA format in use. ParseIdentifyNamespace guarantees it
// exists and has a block size within MinLBADS..MaxLBADS; for a value built
// by hand with FLBAS past LBAF it is the zero LBAFormat (block size 0).
func (n *IdentifyNamespace) Format() LBAFormat {
	if i := n.FormatIndex(); i < len(n.LBAF) {
		return n.LBAF[i]
	}
	return LBAFormat{}
}

// BlockSize is the size of a logical block's data in bytes.
func (n *IdentifyNamespace) BlockSize() int { return n.Format().BlockSize() }

// MetadataSize is the metadata size per block in bytes (0 for most
// namespaces).
func (n *IdentifyNamespace) MetadataSize() int { return int(n.Format().MS) }

// Blocks is the namespace size in logical blocks (NSZE).
func (n *IdentifyNamespace) Blocks() uint64 { return n.NSZE }

// Size is the namespace size in bytes. ParseIdentifyNamespace guarantees
// it does not overflow; for a value built by hand it is 0 when there is no
// valid block size.
func (n *IdentifyNamespace) Size() uint64 { return n.NSZE * uint64(n.BlockSize()) }

// ThinProvisioned reports NSFEAT bit 0 (NCAP may be below NSZE).
func (n *IdentifyNamespace) ThinProvisioned() bool { return n.NSFEAT&1 != 0 }

// ParseIdentifyNamespace decodes an Identify Namespace page (NVM command
// set). b must hold at least IdentifySize bytes. The page comes from the
// device: an all-zero page (the answer for an inactive NSID) wraps
// ErrNamespaceInactive, and a format index beyond NLBAF, a block size
// outside 2^9..2^30, NCAP or NUSE above NSZE, or a size that overflows 64
// bits of bytes wraps ErrOutOfSpec.
func ParseIdentifyNamespace(b []byte) (*IdentifyNamespace, error) {
	return parseIdentifyNamespace(b, nil)
}

func parseIdentifyNamespace(b []byte, anomalies anomalyFunc) (*IdentifyNamespace, error) {
	if len(b) < IdentifySize {
		return nil, fmt.Errorf("identify namespace: %d bytes, want %d: %w", len(b), IdentifySize, ErrInvalidArgument)
	}
	le := binary.LittleEndian
	n := &IdentifyNamespace{
		NSZE:     le.Uint64(b[0:]),
		NCAP:     le.Uint64(b[8:]),
		NUSE:     le.Uint64(b[16:]),
		NSFEAT:   b[24],
		NLBAF:    b[25],
		FLBAS:    b[26],
		MC:       b[27],
		DPC:      b[28],
		DPS:      b[29],
		NMIC:     b[30],
		RESCAP:   b[31],
		FPI:      b[32],
		DLFEAT:   b[33],
		NAWUN:    le.Uint16(b[34:]),
		NAWUPF:   le.Uint16(b[36:]),
		NACWU:    le.Uint16(b[38:]),
		NABSN:    le.Uint16(b[40:]),
		NABO:     le.Uint16(b[42:]),
		NABSPF:   le.Uint16(b[44:]),
		NOIOB:    le.Uint16(b[46:]),
		NVMCAP:   le128(b[48:]),
		NPWG:     le.Uint16(b[64:]),
		NPWA:     le.Uint16(b[66:]),
		NPDG:     le.Uint16(b[68:]),
		NPDA:     le.Uint16(b[70:]),
		NOWS:     le.Uint16(b[72:]),
		ANAGRPID: le.Uint32(b[92:]),
		NSATTR:   b[99],
		NVMSETID: le.Uint16(b[100:]),
		ENDGID:   le.Uint16(b[102:]),
	}
	copy(n.NGUID[:], b[104:120])
	copy(n.EUI64[:], b[120:128])

	if n.NSZE == 0 {
		return nil, fmt.Errorf("identify namespace: NSZE is 0: %w", ErrNamespaceInactive)
	}
	if int(n.NLBAF) >= MaxLBAFormats {
		anomalies.add(BadNLBAF)
		return nil, fmt.Errorf("identify namespace: NLBAF %d (0-based) is above the %d formats the page holds: %w",
			n.NLBAF, MaxLBAFormats, ErrOutOfSpec)
	}
	n.LBAF = make([]LBAFormat, int(n.NLBAF)+1)
	for i := range n.LBAF {
		v := le.Uint32(b[128+4*i:])
		n.LBAF[i] = LBAFormat{MS: uint16(v), LBADS: uint8(v >> 16), RP: uint8(v >> 24 & 3)}
	}
	if i := n.FormatIndex(); i > int(n.NLBAF) {
		anomalies.add(BadFLBAS)
		return nil, fmt.Errorf("identify namespace: FLBAS 0x%02x selects format %d but NLBAF is %d: %w",
			n.FLBAS, i, n.NLBAF, ErrOutOfSpec)
	}
	f := n.Format()
	if f.LBADS < MinLBADS || f.LBADS > MaxLBADS {
		anomalies.add(BadLBADS)
		return nil, fmt.Errorf("identify namespace: LBADS %d of format %d is outside %d..%d: %w",
			f.LBADS, n.FormatIndex(), MinLBADS, MaxLBADS, ErrOutOfSpec)
	}
	if n.NCAP > n.NSZE || n.NUSE > n.NCAP {
		anomalies.add(BadCapacity)
		return nil, fmt.Errorf("identify namespace: NSZE %d, NCAP %d, NUSE %d are not in decreasing order: %w",
			n.NSZE, n.NCAP, n.NUSE, ErrOutOfSpec)
	}
	if n.NSZE > ^uint64(0)>>f.LBADS {
		anomalies.add(BadNSZE)
		return nil, fmt.Errorf("identify namespace: NSZE %d blocks of %d bytes overflows 64 bits: %w",
			n.NSZE, f.BlockSize(), ErrOutOfSpec)
	}
	return n, nil
}

// MaxActiveNamespaces is the number of NSIDs one Active Namespace ID list
// (CNS 02h) holds.
const MaxActiveNamespaces = IdentifySize / 4

// ParseActiveNamespaces decodes an Active Namespace ID list (CNS 02h): up
// to 1024 NSIDs in increasing order, ended by the first 0. A list that is
// not strictly increasing or holds the broadcast NSID 0xffffffff wraps
// ErrOutOfSpec. A full list (1024 entries) means there may be more: ask
// again with CDW1.NSID set to the last one.
func ParseActiveNamespaces(b []byte) ([]uint32, error) {
	return parseActiveNamespaces(b, nil)
}

func parseActiveNamespaces(b []byte, anomalies anomalyFunc) ([]uint32, error) {
	if len(b) < IdentifySize {
		return nil, fmt.Errorf("active namespace list: %d bytes, want %d: %w", len(b), IdentifySize, ErrInvalidArgument)
	}
	var ids []uint32
	for i := 0; i < MaxActiveNamespaces; i++ {
		id := binary.LittleEndian.Uint32(b[4*i:])
		if id == 0 {
			break
		}
		if id == 0xffffffff {
			anomalies.add(BadNSList)
			return nil, fmt.Errorf("active namespace list: entry %d is the broadcast NSID 0xffffffff: %w", i, ErrOutOfSpec)
		}
		if len(ids) > 0 && id <= ids[len(ids)-1] {
			anomalies.add(BadNSList)
			return nil, fmt.Errorf("active namespace list: entry %d (nsid %d) does not follow nsid %d in increasing order: %w",
				i, id, ids[len(ids)-1], ErrOutOfSpec)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// Namespace Identifier Types of the Namespace Identification Descriptor
// list (CNS 03h; NVMe 2.0 §5.17.2.3, Figure 279), with their lengths.
const (
	NIDTEUI64 = 1 // 8 bytes
	NIDTNGUID = 2 // 16 bytes
	NIDTUUID  = 3 // 16 bytes
	NIDTCSI   = 4 // 1 byte: the namespace's command set
)

var nidLengths = map[uint8]int{NIDTEUI64: 8, NIDTNGUID: 16, NIDTUUID: 16, NIDTCSI: 1}

// NamespaceDescriptor is one entry of the Namespace Identification
// Descriptor list.
type NamespaceDescriptor struct {
	Type uint8  // NIDT
	ID   []byte // NID, of the length the type requires
}

// ParseNamespaceDescriptors decodes a Namespace Identification Descriptor
// list (CNS 03h), which ends at the first descriptor of type 0 or at the
// end of the page. A descriptor that runs past the page, or whose length
// does not match its known type, wraps ErrOutOfSpec; descriptors of types
// this package does not know are returned as they are.
func ParseNamespaceDescriptors(b []byte) ([]NamespaceDescriptor, error) {
	if len(b) < IdentifySize {
		return nil, fmt.Errorf("namespace descriptor list: %d bytes, want %d: %w", len(b), IdentifySize, ErrInvalidArgument)
	}
	var out []NamespaceDescriptor
	for off := 0; off+4 <= IdentifySize; {
		typ, n := b[off], int(b[off+1])
		if typ == 0 {
			break
		}
		if want, ok := nidLengths[typ]; ok && n != want {
			return nil, fmt.Errorf("namespace descriptor list: type %d at byte %d has length %d, want %d: %w",
				typ, off, n, want, ErrOutOfSpec)
		}
		end := off + 4 + n
		if end > IdentifySize {
			return nil, fmt.Errorf("namespace descriptor list: type %d at byte %d with length %d runs past the %d-byte page: %w",
				typ, off, n, IdentifySize, ErrOutOfSpec)
		}
		out = append(out, NamespaceDescriptor{Type: typ, ID: append([]byte(nil), b[off+4:end]...)})
		off = end
	}
	return out, nil
}
