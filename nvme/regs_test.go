package nvme

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// qemuCAP is CAP as QEMU 7.2's emulated controller reports it: MQES 2047,
// CQR, TO 15 (7.5 s), DSTRD 0, NSSRS, CSS NVM + I/O command sets, MPSMIN 0
// (4 KiB), MPSMAX 4 (64 KiB), CMBS.
const qemuCAP CAP = 0x7ff | 1<<16 | 15<<24 | 1<<36 | (1|1<<6)<<37 | 0<<48 | 4<<52 | 1<<57

func TestCAPFields(t *testing.T) {
	c := qemuCAP
	if got := c.MQES(); got != 2047 {
		t.Errorf("MQES = %d, want 2047 (0-based)", got)
	}
	if got := c.MaxQueueEntries(); got != 2048 {
		t.Errorf("MaxQueueEntries = %d, want 2048", got)
	}
	if !c.CQR() {
		t.Error("CQR = false, want true")
	}
	if got := c.Timeout(); got != 7500*time.Millisecond {
		t.Errorf("Timeout = %v, want 7.5s", got)
	}
	if got := c.DoorbellStride(); got != 4 {
		t.Errorf("DoorbellStride = %d, want 4", got)
	}
	if !c.NSSRS() || !c.CMBS() || c.PMRS() || c.BPS() || c.NSSS() {
		t.Errorf("NSSRS %t CMBS %t PMRS %t BPS %t NSSS %t, want true true false false false",
			c.NSSRS(), c.CMBS(), c.PMRS(), c.BPS(), c.NSSS())
	}
	if !c.SupportsNVM() {
		t.Error("SupportsNVM = false")
	}
	if c.MinPageSize() != 4096 || c.MaxPageSize() != 65536 {
		t.Errorf("page sizes %d-%d, want 4096-65536", c.MinPageSize(), c.MaxPageSize())
	}
	for size, want := range map[int]bool{4096: true, 8192: true, 65536: true, 131072: false, 2048: false, 6000: false, 0: false, -4096: false} {
		if got := c.SupportsPageSize(size); got != want {
			t.Errorf("SupportsPageSize(%d) = %t, want %t", size, got, want)
		}
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if s := c.String(); !strings.Contains(s, "mqes 2047") || !strings.Contains(s, "to 7.5s") {
		t.Errorf("String = %q, want mqes and timeout", s)
	}
}

func TestCAPHighFields(t *testing.T) {
	// Every field at its maximum must not spill into its neighbours.
	c := CAP(0xffff | 3<<17 | 0xff<<24 | 0xf<<32 | 0xf<<48 | 0xf<<52)
	if c.MQES() != 0xffff || c.MaxQueueEntries() != 65536 || c.AMS() != 3 || c.TO() != 255 || c.DSTRD() != 15 {
		t.Errorf("MQES %d AMS %d TO %d DSTRD %d", c.MQES(), c.AMS(), c.TO(), c.DSTRD())
	}
	if c.CQR() || c.NSSRS() || c.CSS() != 0 {
		t.Errorf("neighbouring bits leaked: CQR %t NSSRS %t CSS %#x", c.CQR(), c.NSSRS(), c.CSS())
	}
	if c.DoorbellStride() != 4<<15 || c.MaxPageSize() != 1<<27 || c.Timeout() != 255*500*time.Millisecond {
		t.Errorf("stride %d max page %d timeout %v", c.DoorbellStride(), c.MaxPageSize(), c.Timeout())
	}
	if got := CAP(0).Timeout(); got != 500*time.Millisecond {
		t.Errorf("TO 0: Timeout = %v, want the 500ms floor", got)
	}
}

func TestCAPValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cap  CAP
		want error
		msg  string
	}{
		{"gone", ^CAP(0), ErrDeviceGone, "0xffffffffffffffff"},
		{"low half gone", qemuCAP | 0xffffffff, ErrDeviceGone, "0x"},
		{"high half gone", qemuCAP | 0xffffffff<<32, ErrDeviceGone, "0xffffffff"},
		{"mqes0", qemuCAP &^ 0xffff, ErrOutOfSpec, "MQES is 0"},
		{"mps", qemuCAP | 5<<48, ErrOutOfSpec, "MPSMIN 5 is above CAP.MPSMAX 4"},
		{"no nvm", qemuCAP&^(0xff<<37) | 1<<44, ErrNotSupported, "CSS 0x80"},
	} {
		err := tc.cap.Validate()
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: Validate = %v, want %v naming %q", tc.name, err, tc.want, tc.msg)
		}
	}
}

func TestVS(t *testing.T) {
	v := MakeVS(1, 4, 0)
	if v != 0x00010400 {
		t.Errorf("MakeVS(1,4,0) = %#x, want 0x10400", uint32(v))
	}
	if v.String() != "1.4.0" || v.Major() != 1 || v.Minor() != 4 || v.Tertiary() != 0 {
		t.Errorf("VS %#x = %s", uint32(v), v)
	}
	if got := VS(0x00020001).String(); got != "2.0.1" {
		t.Errorf("VS 0x20001 = %s, want 2.0.1", got)
	}
}

func TestCCBuilder(t *testing.T) {
	cc, err := NewCC(4096)
	if err != nil {
		t.Fatal(err)
	}
	// The value Linux writes for a 4 KiB page, NVM command set, before EN.
	if cc != 0x00460000 {
		t.Errorf("NewCC(4096) = %#08x, want 0x00460000", uint32(cc))
	}
	cc = cc.WithEN(true)
	if cc != 0x00460001 || !cc.EN() {
		t.Errorf("WithEN(true) = %#08x", uint32(cc))
	}
	cc = cc.WithSHN(ShutdownNormal)
	if cc.SHN() != ShutdownNormal || cc != 0x00464001 {
		t.Errorf("WithSHN(normal) = %#08x shn %v", uint32(cc), cc.SHN())
	}
	cc = cc.WithSHN(ShutdownAbrupt).WithEN(false)
	if cc.SHN() != ShutdownAbrupt || cc.EN() || cc.IOSQES() != 6 || cc.IOCQES() != 4 {
		t.Errorf("after abrupt + disable: %v", cc)
	}
	cc, err = cc.WithPageSize(65536)
	if err != nil || cc.PageSize() != 65536 || cc.MPS() != 4 {
		t.Errorf("WithPageSize(65536) = %v, %v", cc, err)
	}
	cc = cc.WithCSS(CCCSSAll).WithAMS(1)
	if cc.CSS() != 6 || cc.AMS() != 1 || cc.PageSize() != 65536 {
		t.Errorf("WithCSS/WithAMS: %v", cc)
	}
	// Out-of-range values are masked to their field, never spilling over.
	if got := CC(0).WithCSS(0xff); got != 7<<4 {
		t.Errorf("WithCSS(0xff) = %#x, want only bits 6:4", uint32(got))
	}
	for _, bad := range []int{0, 2048, 4095, 6144, 1 << 28} {
		if _, err := NewCC(bad); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "page size") {
			t.Errorf("NewCC(%d) = %v, want ErrInvalidArgument naming the page size", bad, err)
		}
	}
	if s := cc.String(); !strings.Contains(s, "shn abrupt") {
		t.Errorf("String = %q", s)
	}
	if ShutdownNotification(3).String() != "reserved(3)" || ShutdownNone.String() != "none" || ShutdownNormal.String() != "normal" {
		t.Error("reserved SHN not named as reserved")
	}
}

func TestCSTS(t *testing.T) {
	for _, tc := range []struct {
		v                   CSTS
		rdy, cfs, nssro, pp bool
		shst                ShutdownStatus
		err                 error
	}{
		{0, false, false, false, false, ShutdownStatusNormal, nil},
		{1, true, false, false, false, ShutdownStatusNormal, nil},
		{1 | 1<<2, true, false, false, false, ShutdownStatusProcessing, nil},
		{2 << 2, false, false, false, false, ShutdownStatusComplete, nil},
		{1<<4 | 1<<5, false, false, true, true, ShutdownStatusNormal, nil},
		{3, true, true, false, false, ShutdownStatusNormal, ErrControllerFatal},
		{0xffffffff, true, true, true, true, 3, ErrDeviceGone},
	} {
		if tc.v.RDY() != tc.rdy || tc.v.CFS() != tc.cfs || tc.v.NSSRO() != tc.nssro || tc.v.PP() != tc.pp || tc.v.SHST() != tc.shst {
			t.Errorf("%v: want rdy %t cfs %t nssro %t pp %t shst %v", tc.v, tc.rdy, tc.cfs, tc.nssro, tc.pp, tc.shst)
		}
		if err := tc.v.Check(); !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("%v.Check() = %v, want %v", tc.v, err, tc.err)
		}
	}
	if got := CSTS(1 | 2<<2).String(); got != "CSTS(0x00000009: rdy true, cfs false, shst complete, nssro false, pp false)" {
		t.Errorf("CSTS String = %q", got)
	}
	if ShutdownStatus(3).String() != "reserved(3)" || ShutdownStatusComplete.String() != "complete" ||
		ShutdownStatusProcessing.String() != "processing" || ShutdownStatusNormal.String() != "normal" {
		t.Error("ShutdownStatus names")
	}
}

func TestAQA(t *testing.T) {
	a, err := MakeAQA(32, 64)
	if err != nil {
		t.Fatal(err)
	}
	if a != 0x003f001f || a.ASQS() != 31 || a.ACQS() != 63 {
		t.Errorf("MakeAQA(32, 64) = %#x (asqs %d acqs %d), want 0x3f001f", uint32(a), a.ASQS(), a.ACQS())
	}
	if a, err := MakeAQA(4096, 2); err != nil || a.ASQS() != 4095 || a.ACQS() != 1 {
		t.Errorf("MakeAQA(4096, 2) = %#x, %v", uint32(a), err)
	}
	for _, bad := range [][2]int{{1, 32}, {32, 4097}, {0, 0}, {-1, 2}} {
		if _, err := MakeAQA(bad[0], bad[1]); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("MakeAQA(%d, %d) = %v, want ErrInvalidArgument", bad[0], bad[1], err)
		}
	}
}

func TestDoorbellOffset(t *testing.T) {
	for _, tc := range []struct {
		qid    uint16
		cq     bool
		stride int
		want   int
	}{
		{0, false, 4, 0x1000},
		{0, true, 4, 0x1004},
		{1, false, 4, 0x1008},
		{1, true, 4, 0x100c},
		{3, true, 16, 0x1000 + 7*16},
		{65535, true, 4 << 15, 0x1000 + 131071*(4<<15)},
	} {
		if got := DoorbellOffset(tc.qid, tc.cq, tc.stride); got != tc.want {
			t.Errorf("DoorbellOffset(%d, %t, %d) = %#x, want %#x", tc.qid, tc.cq, tc.stride, got, tc.want)
		}
	}
}

func TestCheckRegister(t *testing.T) {
	if err := CheckRegister(RegCSTS, 1); err != nil {
		t.Errorf("CheckRegister(CSTS, 1) = %v", err)
	}
	err := CheckRegister(RegVS, 0xffffffff)
	if !errors.Is(err, ErrDeviceGone) || !strings.Contains(err.Error(), "register VS") {
		t.Errorf("CheckRegister(VS, all ones) = %v, want ErrDeviceGone naming VS", err)
	}
	if got := RegName(0x1008); got != "0x1008" {
		t.Errorf("RegName(0x1008) = %q", got)
	}
}

func ExampleNewCC() {
	cc, err := NewCC(4096)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%#08x\n", uint32(cc.WithEN(true)))
	fmt.Println(cc.WithEN(true).WithSHN(ShutdownNormal))
	// Output:
	// 0x00460001
	// CC(0x00464001: en true, css 0, page 4096, ams 0, shn normal, iosqes 6, iocqes 4)
}
