package nvme

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// page is a test helper that writes little-endian values at spec offsets.
type page []byte

func newPage() page                     { return make(page, IdentifySize) }
func (p page) u8(off int, v uint8)      { p[off] = v }
func (p page) u16(off int, v uint16)    { binary.LittleEndian.PutUint16(p[off:], v) }
func (p page) u32(off int, v uint32)    { binary.LittleEndian.PutUint32(p[off:], v) }
func (p page) u64(off int, v uint64)    { binary.LittleEndian.PutUint64(p[off:], v) }
func (p page) str(off, n int, s string) { copy(p[off:off+n], s+strings.Repeat(" ", n-len(s))) }

// qemuControllerPage builds an Identify Controller page modelled on what
// QEMU 7.2's emulated controller returns for
// "-device nvme,serial=deadbeef,mdts=7" (values from hw/nvme/ctrl.c's
// nvme_init_ctrl; not a byte dump of a live page).
func qemuControllerPage() page {
	p := newPage()
	p.u16(0, 0x1b36)                // VID: Red Hat
	p.u16(2, 0x1af4)                // SSVID
	p.str(4, 20, "deadbeef")        // SN
	p.str(24, 40, "QEMU NVMe Ctrl") // MN
	p.str(64, 8, "1.0")             // FR
	p.u8(72, 6)                     // RAB
	copy(p[73:76], []byte{0x00, 0x54, 0x52})
	p.u8(77, 7)                     // MDTS: 512 KiB with 4 KiB pages
	p.u16(78, 0)                    // CNTLID
	p.u32(80, 0x00010400)           // VER 1.4.0
	p.u32(92, 1<<8)                 // OAES: namespace attribute notices
	p.u32(96, 1<<9)                 // CTRATT
	p.u8(111, 1)                    // CNTRLTYPE: I/O controller
	p.u16(256, 1<<1|1<<3|1<<8)      // OACS: Format, NS management, Doorbell Buffer Config
	p.u8(258, 3)                    // ACL
	p.u8(259, 3)                    // AERL
	p.u8(260, 7<<1)                 // FRMW: 7 slots
	p.u8(261, 1<<1|1<<2)            // LPA
	p.u8(263, 0)                    // NPSS: one power state
	p.u16(266, 0x157)               // WCTEMP 343 K
	p.u16(268, 0x175)               // CCTEMP 373 K
	p.u8(512, 0x66)                 // SQES
	p.u8(513, 0x44)                 // CQES
	p.u32(516, 256)                 // NN
	p.u16(520, 0x1ff)               // ONCS: Compare ... Copy
	p.u8(525, 0x7)                  // VWC present, flush behaviour
	p.u32(536, 1|1<<16|1<<17|1<<20) // SGLS
	p.str(768, 256, "nqn.2019-08.org.qemu:deadbeef")
	p.u16(2048, 0x9c4) // PSD0 MP: 25 W
	p.u32(2048+4, 0x10)
	p.u32(2048+8, 0x4)
	for i := 768 + len("nqn.2019-08.org.qemu:deadbeef"); i < 1024; i++ {
		p[i] = 0 // SUBNQN is NUL padded, not space padded
	}
	return p
}

func TestParseIdentifyControllerQEMU(t *testing.T) {
	got, err := ParseIdentifyController(qemuControllerPage())
	if err != nil {
		t.Fatal(err)
	}
	want := &IdentifyController{
		VID: 0x1b36, SSVID: 0x1af4, SN: "deadbeef", MN: "QEMU NVMe Ctrl", FR: "1.0",
		RAB: 6, IEEE: [3]byte{0x00, 0x54, 0x52}, MDTS: 7, VER: 0x00010400,
		OAES: 1 << 8, CTRATT: 1 << 9, CNTRLTYPE: 1,
		OACS: 0x10a, ACL: 3, AERL: 3, FRMW: 14, LPA: 6, WCTEMP: 343, CCTEMP: 373,
		SQES: 0x66, CQES: 0x44, NN: 256, ONCS: 0x1ff, VWC: 7, SGLS: 0x130001,
		SUBNQN:      "nqn.2019-08.org.qemu:deadbeef",
		PowerStates: []PowerState{{MaxPower: 0x9c4, EntryLatency: 16, ExitLatency: 4}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseIdentifyController (-want +got):\n%s", diff)
	}
	if !got.OACS.Format() || !got.OACS.NSManagement() || !got.OACS.DoorbellBufferConfig() || got.OACS.SecuritySend() || got.OACS.FirmwareDownload() {
		t.Errorf("OACS %#x bits decoded wrong", uint16(got.OACS))
	}
	o := got.ONCS
	if !(o.Compare() && o.WriteUncorrectable() && o.DSM() && o.WriteZeroes() && o.SaveSelectInFeatures() && o.Reservations() && o.Timestamp() && o.Verify() && o.Copy()) {
		t.Errorf("ONCS %#x: every bit 0-8 should be set", uint16(o))
	}
	if !got.SGLS.Supported() || got.SGLS.DwordAligned() {
		t.Errorf("SGLS %#x: supported without alignment", uint32(got.SGLS))
	}
	if !got.VolatileWriteCache() {
		t.Error("VolatileWriteCache = false")
	}
	if got.MaxTransfer(4096) != 512<<10 {
		t.Errorf("MaxTransfer(4096) = %d, want 512 KiB", got.MaxTransfer(4096))
	}
	if mw := got.PowerStates[0].MaxPowerMilliwatts(); mw != 25000 {
		t.Errorf("PSD0 max power = %v mW, want 25000", mw)
	}
}

// Every field at a distinct spec offset, so a swapped offset shows up.
func TestParseIdentifyControllerOffsets(t *testing.T) {
	p := qemuControllerPage()
	p.u8(76, 0x0b)
	p.u16(78, 0x1234)
	p.u32(84, 0xa1a2a3a4)
	p.u32(88, 0xb1b2b3b4)
	for i := range 16 {
		p[112+i] = byte(0xf0 + i)
	}
	p.u16(128, 11)
	p.u16(130, 22)
	p.u16(132, 33)
	p.u8(262, 63)
	p.u8(264, 1)
	p.u8(265, 1)
	p.u16(270, 0x77)
	p.u32(272, 0x1000)
	p.u32(276, 0x800)
	p.u64(280, 0xfedcba9876543210)
	p.u64(288, 1)
	p.u64(296, 42)
	p.u16(320, 100)
	p.u16(514, 0x400)
	p.u16(522, 1)
	p.u8(524, 0x5)
	p.u16(526, 7)
	p.u16(528, 3)
	p.u8(530, 1)
	p.u8(531, 0x3)
	p.u16(532, 1)
	p.u16(534, 0xf)
	p.u32(540, 17)
	got, err := ParseIdentifyController(p)
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, got, want any) {
		t.Helper()
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got): %s", name, diff)
		}
	}
	check("CMIC", got.CMIC, uint8(0x0b))
	check("CNTLID", got.CNTLID, uint16(0x1234))
	check("RTD3R", got.RTD3R, uint32(0xa1a2a3a4))
	check("RTD3E", got.RTD3E, uint32(0xb1b2b3b4))
	check("FGUID", got.FGUID, [16]byte{0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff})
	check("CRDT", got.CRDT, [3]uint16{11, 22, 33})
	check("ELPE", got.ELPE, uint8(63))
	check("AVSCC", got.AVSCC, uint8(1))
	check("APSTA", got.APSTA, uint8(1))
	check("MTFA", got.MTFA, uint16(0x77))
	check("HMPRE", got.HMPRE, uint32(0x1000))
	check("HMMIN", got.HMMIN, uint32(0x800))
	check("TNVMCAP", got.TNVMCAP, Uint128{Lo: 0xfedcba9876543210, Hi: 1})
	check("UNVMCAP", got.UNVMCAP, Uint128{Lo: 42})
	check("KAS", got.KAS, uint16(100))
	check("MAXCMD", got.MAXCMD, uint16(0x400))
	check("FUSES", got.FUSES, uint16(1))
	check("FNA", got.FNA, uint8(5))
	check("AWUN", got.AWUN, uint16(7))
	check("AWUPF", got.AWUPF, uint16(3))
	check("NVSCC", got.NVSCC, uint8(1))
	check("NWPC", got.NWPC, uint8(3))
	check("ACWU", got.ACWU, uint16(1))
	check("OCFS", got.OCFS, uint16(0xf))
	check("MNAN", got.MNAN, uint32(17))
	check("TNVMCAP string", got.TNVMCAP.String(), "36811502618202616336") // 2^64 + 0xfedcba9876543210
}

func TestParseIdentifyControllerRejects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(p page)
		want  error
		field string
	}{
		{"short", nil, ErrInvalidArgument, "4095 bytes"},
		{"sqes min 7", func(p page) { p.u8(512, 0x77) }, ErrOutOfSpec, "SQES 0x77"},
		{"sqes max 5", func(p page) { p.u8(512, 0x55) }, ErrOutOfSpec, "SQES 0x55"},
		{"cqes zero", func(p page) { p.u8(513, 0) }, ErrOutOfSpec, "CQES 0x00"},
		{"cqes min 5", func(p page) { p.u8(513, 0x55) }, ErrOutOfSpec, "CQES 0x55"},
		{"nn broadcast", func(p page) { p.u32(516, 0xffffffff) }, ErrOutOfSpec, "NN 0xffffffff"},
	} {
		p := qemuControllerPage()
		if tc.edit == nil {
			p = p[:IdentifySize-1]
		} else {
			tc.edit(p)
		}
		c, err := ParseIdentifyController(p)
		if c != nil || !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: got %v, %v; want %v naming %q", tc.name, c, err, tc.want, tc.field)
		}
	}
}

func TestIdentifyControllerStringsAndPowerStates(t *testing.T) {
	p := qemuControllerPage()
	p.str(4, 20, "SN\x1b[31mX\x00")                            // an escape sequence from a hostile device
	copy(p[24:64], "Model\x00\x00\x00 leftover after the NUL") // NUL padded instead of spaces
	p.u8(263, 200)                                             // NPSS far out of spec
	p.u16(2048+31*32, 0x1234)                                  // PSD31
	p.u8(2048+31*32+3, 3)                                      // MXPS, NOPS
	d := p[2048+32:]                                           // PSD1: every byte field
	d[12], d[13], d[14], d[15] = 0xe1, 2, 3, 4
	binary.LittleEndian.PutUint16(d[16:], 500)
	d[18] = 2 << 6
	binary.LittleEndian.PutUint16(d[20:], 700)
	d[22] = 2<<6 | 5
	c, err := ParseIdentifyController(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.SN != "SN?[31mX" {
		t.Errorf("SN = %q, want escapes replaced by '?' and NULs trimmed", c.SN)
	}
	if c.MN != "Model" {
		t.Errorf("MN = %q", c.MN)
	}
	if len(c.PowerStates) != MaxPowerStates {
		t.Fatalf("NPSS 200: %d power states, want the %d the page holds", len(c.PowerStates), MaxPowerStates)
	}
	ps := c.PowerStates[31]
	if ps.MaxPower != 0x1234 || !ps.MXPS || !ps.NOPS || ps.MaxPowerMilliwatts() != 0x1234/10.0 {
		t.Errorf("PSD31 = %+v", ps)
	}
	want := PowerState{RRT: 1, RRL: 2, RWT: 3, RWL: 4, IdlePower: 500, IPS: 2, ActivePower: 700, APW: 5, APS: 2}
	if diff := cmp.Diff(want, c.PowerStates[1]); diff != "" {
		t.Errorf("PSD1 (-want +got):\n%s", diff)
	}
}

func TestMaxTransfer(t *testing.T) {
	for _, tc := range []struct {
		mdts uint8
		page int
		want int
	}{
		{0, 4096, DefaultMaxTransfer}, // no limit: our cap
		{5, 4096, 128 << 10},
		{5, 8192, 256 << 10},
		{9, 4096, DefaultMaxTransfer},   // 2 MiB, exactly the cap
		{10, 4096, DefaultMaxTransfer},  // 4 MiB, capped
		{63, 4096, DefaultMaxTransfer},  // would overflow a uint64 shift
		{255, 4096, DefaultMaxTransfer}, // ditto
		{5, 0, 128 << 10},               // bad page size taken as 4 KiB
		{5, 6000, 128 << 10},
	} {
		c := &IdentifyController{MDTS: tc.mdts}
		if got := c.MaxTransfer(tc.page); got != tc.want {
			t.Errorf("MDTS %d page %d: MaxTransfer = %d, want %d", tc.mdts, tc.page, got, tc.want)
		}
	}
}

func TestUint128(t *testing.T) {
	for _, tc := range []struct {
		u    Uint128
		want string
	}{
		{Uint128{}, "0"},
		{Uint128{Lo: 12345}, "12345"},
		{Uint128{Lo: ^uint64(0)}, "18446744073709551615"},
		{Uint128{Hi: 1}, "18446744073709551616"},
		{Uint128{Lo: ^uint64(0), Hi: ^uint64(0)}, "340282366920938463463374607431768211455"},
		{Uint128{Lo: 0, Hi: 1 << 10}, "18889465931478580854784"},
	} {
		if got := tc.u.String(); got != tc.want {
			t.Errorf("%+v.String() = %s, want %s", tc.u, got, tc.want)
		}
	}
	if v, ok := (Uint128{Lo: 7}).Uint64(); v != 7 || !ok {
		t.Error("Uint64 of a small value")
	}
	if _, ok := (Uint128{Hi: 1}).Uint64(); ok {
		t.Error("Uint64 of 2^64 reported as fitting")
	}
	if !(Uint128{}).IsZero() || (Uint128{Hi: 1}).IsZero() {
		t.Error("IsZero")
	}
}

// namespacePage builds an Identify Namespace page like QEMU's for a 1 GiB
// image: 512-byte blocks in use, a 4 KiB format offered.
func namespacePage() page {
	p := newPage()
	const blocks = 1 << 21
	p.u64(0, blocks)  // NSZE
	p.u64(8, blocks)  // NCAP
	p.u64(16, blocks) // NUSE
	p.u8(24, 1<<2)    // NSFEAT
	p.u8(25, 7)       // NLBAF: 8 formats
	p.u8(26, 0)       // FLBAS: format 0
	p.u8(33, 1|1<<3)  // DLFEAT: deallocated reads zeroes, write zeroes can deallocate
	for i, f := range []struct {
		ms    uint16
		lbads uint8
	}{{0, 9}, {8, 9}, {16, 9}, {64, 9}, {0, 12}, {8, 12}, {16, 12}, {64, 12}} {
		p.u32(128+4*i, uint32(f.ms)|uint32(f.lbads)<<16)
	}
	copy(p[104:120], []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	copy(p[120:128], []byte{0x52, 0x54, 0, 0, 0, 0, 0, 1})
	return p
}

func TestParseIdentifyNamespace(t *testing.T) {
	got, err := ParseIdentifyNamespace(namespacePage())
	if err != nil {
		t.Fatal(err)
	}
	want := &IdentifyNamespace{
		NSZE: 1 << 21, NCAP: 1 << 21, NUSE: 1 << 21, NSFEAT: 4, NLBAF: 7, DLFEAT: 9,
		NGUID: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		EUI64: [8]byte{0x52, 0x54, 0, 0, 0, 0, 0, 1},
		LBAF: []LBAFormat{{0, 9, 0}, {8, 9, 0}, {16, 9, 0}, {64, 9, 0},
			{0, 12, 0}, {8, 12, 0}, {16, 12, 0}, {64, 12, 0}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseIdentifyNamespace (-want +got):\n%s", diff)
	}
	if got.BlockSize() != 512 || got.MetadataSize() != 0 || got.Blocks() != 1<<21 || got.Size() != 1<<30 {
		t.Errorf("block %d md %d blocks %d size %d, want 512 0 2097152 1GiB", got.BlockSize(), got.MetadataSize(), got.Blocks(), got.Size())
	}
	if got.ThinProvisioned() || got.MetadataAtEnd() {
		t.Error("thin provisioning or extended LBA reported")
	}
}

func TestIdentifyNamespaceFormats(t *testing.T) {
	// Format 5 (4 KiB + 8 bytes metadata at the end of each block).
	p := namespacePage()
	p.u8(26, 5|1<<4)
	p.u64(0, 1<<18)
	p.u64(8, 1<<18)
	p.u64(16, 1<<10)
	p.u8(24, 1)
	n, err := ParseIdentifyNamespace(p)
	if err != nil {
		t.Fatal(err)
	}
	if n.FormatIndex() != 5 || n.BlockSize() != 4096 || n.MetadataSize() != 8 || !n.MetadataAtEnd() || !n.ThinProvisioned() {
		t.Errorf("format %d block %d md %d ext %t thin %t", n.FormatIndex(), n.BlockSize(), n.MetadataSize(), n.MetadataAtEnd(), n.ThinProvisioned())
	}

	// More than 16 formats: FLBAS bits 6:5 are the upper bits of the index.
	p = namespacePage()
	p.u8(25, 20)                        // 21 formats
	p.u8(26, 1|1<<5)                    // index 17
	p.u32(128+4*17, 16<<16|1<<24|3<<30) // 64 KiB, RP 1 (reserved bits above RP set)
	n, err = ParseIdentifyNamespace(p)
	if err != nil {
		t.Fatal(err)
	}
	if n.FormatIndex() != 17 || n.BlockSize() != 65536 || n.Format().RP != 1 {
		t.Errorf("format %d block %d rp %d, want 17 65536 1", n.FormatIndex(), n.BlockSize(), n.Format().RP)
	}
	if len(n.LBAF) != 21 {
		t.Errorf("%d formats, want 21", len(n.LBAF))
	}

	// With 16 or fewer formats bits 6:5 are reserved and ignored.
	p = namespacePage()
	p.u8(26, 4|1<<5|1<<6)
	if n, err = ParseIdentifyNamespace(p); err != nil || n.FormatIndex() != 4 || n.BlockSize() != 4096 {
		t.Errorf("reserved FLBAS bits: %v, %v", n, err)
	}
	if (LBAFormat{LBADS: 0}).BlockSize() != 0 || (LBAFormat{LBADS: 31}).BlockSize() != 0 {
		t.Error("unavailable or absurd formats report a block size")
	}
}

func TestParseIdentifyNamespaceRejects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(p page)
		want  error
		field string
	}{
		{"short", nil, ErrInvalidArgument, "100 bytes"},
		{"inactive", func(p page) { clear(p) }, ErrNamespaceInactive, "NSZE is 0"},
		{"nlbaf", func(p page) { p.u8(25, 64) }, ErrOutOfSpec, "NLBAF 64"},
		{"index past nlbaf", func(p page) { p.u8(26, 8) }, ErrOutOfSpec, "selects format 8 but NLBAF is 7"},
		{"index past nlbaf hi", func(p page) { p.u8(25, 16); p.u8(26, 3<<5) }, ErrOutOfSpec, "selects format 48"},
		{"lbads 8", func(p page) { p.u32(128, 8<<16) }, ErrOutOfSpec, "LBADS 8 of format 0"},
		{"lbads 0", func(p page) { p.u32(128, 0) }, ErrOutOfSpec, "LBADS 0"},
		{"lbads 31", func(p page) { p.u32(128, 31<<16) }, ErrOutOfSpec, "LBADS 31"},
		{"ncap > nsze", func(p page) { p.u64(8, 1<<22) }, ErrOutOfSpec, "NCAP 4194304"},
		{"nuse > ncap", func(p page) { p.u64(16, 1<<22) }, ErrOutOfSpec, "NUSE 4194304"},
		{"overflow", func(p page) { p.u64(0, 1<<60); p.u64(8, 1); p.u64(16, 1) }, ErrOutOfSpec, "overflows"},
	} {
		p := namespacePage()
		if tc.edit == nil {
			p = p[:100]
		} else {
			tc.edit(p)
		}
		n, err := ParseIdentifyNamespace(p)
		if n != nil || !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: got %v, %v; want %v naming %q", tc.name, n, err, tc.want, tc.field)
		}
	}
}

func TestParseActiveNamespaces(t *testing.T) {
	list := func(ids ...uint32) page {
		p := newPage()
		for i, id := range ids {
			p.u32(4*i, id)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		in   page
		want []uint32
		err  string
	}{
		{"empty", list(), nil, ""},
		{"three", list(1, 2, 7), []uint32{1, 2, 7}, ""},
		{"stops at zero", list(1, 3, 0, 5), []uint32{1, 3}, ""},
		{"descending", list(1, 5, 4), nil, "entry 2 (nsid 4) does not follow nsid 5"},
		{"duplicate", list(2, 2), nil, "entry 1 (nsid 2) does not follow nsid 2"},
		{"broadcast", list(1, 0xffffffff), nil, "entry 1 is the broadcast NSID"},
		{"short", newPage()[:4092], nil, "4092 bytes"},
	} {
		got, err := ParseActiveNamespaces(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
	// A full list: all 1024 entries are returned, none lost at the end.
	full := newPage()
	for i := range MaxActiveNamespaces {
		full.u32(4*i, uint32(i+1))
	}
	if got, err := ParseActiveNamespaces(full); err != nil || len(got) != 1024 || got[1023] != 1024 {
		t.Errorf("full list: %d ids, %v", len(got), err)
	}
}

func TestOACSBits(t *testing.T) {
	bits := []func(OACS) bool{OACS.SecuritySend, OACS.Format, OACS.FirmwareDownload, OACS.NSManagement,
		OACS.SelfTest, OACS.Directives, OACS.NVMeMI, OACS.Virtualization, OACS.DoorbellBufferConfig,
		OACS.GetLBAStatus, OACS.CommandFeatureLockdown}
	for i, bit := range bits {
		for j := range bits {
			if got := bit(OACS(1 << j)); got != (i == j) {
				t.Errorf("OACS bit %d method reads %t for value 1<<%d", i, got, j)
			}
		}
	}
}

// A hand-built value (tests, the model) must not panic on a bad format.
func TestIdentifyNamespaceZeroValue(t *testing.T) {
	n := &IdentifyNamespace{NSZE: 10, FLBAS: 3}
	if n.BlockSize() != 0 || n.MetadataSize() != 0 || n.Size() != 0 {
		t.Errorf("zero value: block %d md %d size %d, want zeros", n.BlockSize(), n.MetadataSize(), n.Size())
	}
}

func TestRetryDelay(t *testing.T) {
	c := &IdentifyController{CRDT: [3]uint16{1, 20, 300}}
	for crd, want := range map[uint8]time.Duration{0: 0, 1: 100 * time.Millisecond, 2: 2 * time.Second, 3: 30 * time.Second, 4: 0} {
		if got := c.RetryDelay(crd); got != want {
			t.Errorf("RetryDelay(%d) = %v, want %v", crd, got, want)
		}
	}
}

func TestParseNamespaceDescriptors(t *testing.T) {
	p := newPage()
	off := 0
	add := func(typ, n uint8, fill byte) {
		p[off], p[off+1] = typ, n
		for i := range int(n) {
			p[off+4+i] = fill
		}
		off += 4 + int(n)
	}
	add(NIDTEUI64, 8, 0xe1)
	add(NIDTNGUID, 16, 0xa5)
	add(NIDTCSI, 1, 0)
	add(9, 2, 0x77) // a type from a later spec: kept as is
	got, err := ParseNamespaceDescriptors(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []NamespaceDescriptor{
		{NIDTEUI64, []byte{0xe1, 0xe1, 0xe1, 0xe1, 0xe1, 0xe1, 0xe1, 0xe1}},
		{NIDTNGUID, bytes.Repeat([]byte{0xa5}, 16)},
		{NIDTCSI, []byte{0}},
		{9, []byte{0x77, 0x77}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("descriptors (-want +got):\n%s", diff)
	}

	bad := newPage()
	bad[0], bad[1] = NIDTUUID, 8
	if _, err := ParseNamespaceDescriptors(bad); !errors.Is(err, ErrOutOfSpec) || !strings.Contains(err.Error(), "type 3 at byte 0 has length 8, want 16") {
		t.Errorf("wrong length: %v", err)
	}
	over := newPage()
	for o := 0; o+4+255 <= IdentifySize; o += 4 + 255 {
		over[o], over[o+1] = 9, 255
	}
	// 15 descriptors of 259 bytes end at 3885; the 16th starts there and
	// would end at 4144, past the page.
	over[3885], over[3886] = 9, 255
	if _, err := ParseNamespaceDescriptors(over); !errors.Is(err, ErrOutOfSpec) || !strings.Contains(err.Error(), "runs past") {
		t.Errorf("overrun: %v", err)
	}
	if _, err := ParseNamespaceDescriptors(p[:10]); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("short page: %v", err)
	}
	if got, err := ParseNamespaceDescriptors(newPage()); err != nil || len(got) != 0 {
		t.Errorf("empty list: %v, %v", got, err)
	}
}
