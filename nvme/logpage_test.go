package nvme

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func smartPage() []byte {
	b := make([]byte, SMARTLogSize)
	le := binary.LittleEndian
	b[0] = byte(WarnTemperature | WarnReadOnly)
	le.PutUint16(b[1:], 323) // 50 °C
	b[3], b[4], b[5], b[6] = 100, 10, 3, 1
	put128 := func(off int, lo, hi uint64) {
		le.PutUint64(b[off:], lo)
		le.PutUint64(b[off+8:], hi)
	}
	put128(32, 1000, 0)
	put128(48, 2000, 0)
	put128(64, 0xffffffffffffffff, 1) // past 64 bits
	put128(80, 4000, 0)
	put128(96, 5, 0)
	put128(112, 6, 0)
	put128(128, 7, 0)
	put128(144, 8, 0)
	put128(160, 9, 0)
	put128(176, 10, 0)
	le.PutUint32(b[192:], 11)
	le.PutUint32(b[196:], 12)
	le.PutUint16(b[200:], 300)
	le.PutUint16(b[214:], 310)
	le.PutUint32(b[216:], 13)
	le.PutUint32(b[220:], 14)
	le.PutUint32(b[224:], 15)
	le.PutUint32(b[228:], 16)
	return b
}

func TestParseSMARTLog(t *testing.T) {
	got, err := ParseSMARTLog(smartPage())
	if err != nil {
		t.Fatal(err)
	}
	want := &SMARTLog{
		CriticalWarning: WarnTemperature | WarnReadOnly, Temperature: 323,
		AvailableSpare: 100, AvailableSpareThreshold: 10, PercentageUsed: 3, EnduranceGroupWarning: 1,
		DataUnitsRead: Uint128{Lo: 1000}, DataUnitsWritten: Uint128{Lo: 2000},
		HostReadCommands: Uint128{Lo: ^uint64(0), Hi: 1}, HostWriteCommands: Uint128{Lo: 4000},
		ControllerBusyTime: Uint128{Lo: 5}, PowerCycles: Uint128{Lo: 6}, PowerOnHours: Uint128{Lo: 7},
		UnsafeShutdowns: Uint128{Lo: 8}, MediaErrors: Uint128{Lo: 9}, ErrorLogEntries: Uint128{Lo: 10},
		WarningTempTime: 11, CriticalTempTime: 12,
		TemperatureSensors:     [8]Kelvin{300, 0, 0, 0, 0, 0, 0, 310},
		ThermalMgmtTransitions: [2]uint32{13, 14}, ThermalMgmtTime: [2]uint32{15, 16},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseSMARTLog (-want +got):\n%s", diff)
	}
	if got.Temperature.Celsius() != 50 || got.Temperature.String() != "50°C" || got.TemperatureSensors[1].String() != "n/a" {
		t.Errorf("temperature %v (%d °C), sensor 2 %v", got.Temperature, got.Temperature.Celsius(), got.TemperatureSensors[1])
	}
	if Kelvin(200).Celsius() != -73 {
		t.Error("sub-zero temperatures must go negative, not wrap")
	}
	if got.HostReadCommands.String() != "36893488147419103231" {
		t.Errorf("128-bit counter = %s", got.HostReadCommands)
	}
	if _, err := ParseSMARTLog(make([]byte, 511)); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "511 bytes") {
		t.Errorf("short SMART log: %v", err)
	}
}

func TestCriticalWarningString(t *testing.T) {
	for w, want := range map[CriticalWarning]string{
		0:                              "none",
		WarnSpareBelowThreshold:        "spare below threshold",
		WarnTemperature | WarnReadOnly: "temperature, read-only",
		WarnPMRReadOnly | 0x80:         "PMR read-only, reserved bits 0x80",
	} {
		if got := w.String(); got != want {
			t.Errorf("CriticalWarning(%#x) = %q, want %q", uint8(w), got, want)
		}
	}
}

func errorEntry(count uint64, sqid, cid uint16, status Status, phase bool, lba uint64, nsid uint32, opcode uint8) []byte {
	d := make([]byte, ErrorLogEntrySize)
	le := binary.LittleEndian
	le.PutUint64(d[0:], count)
	le.PutUint16(d[8:], sqid)
	le.PutUint16(d[10:], cid)
	sf := uint16(status) << 1
	if phase {
		sf |= 1
	}
	le.PutUint16(d[12:], sf)
	le.PutUint16(d[14:], 0x0304) // byte 4, bit 3
	le.PutUint64(d[16:], lba)
	le.PutUint32(d[24:], nsid)
	d[28], d[29], d[30], d[31] = 0xc0, 1, 0, opcode
	le.PutUint64(d[32:], 0xabcdef)
	le.PutUint16(d[40:], 0x55)
	d[63] = 1
	return d
}

func TestParseErrorLog(t *testing.T) {
	var b []byte
	b = append(b, errorEntry(5, 1, 7, MakeStatus(SCTMediaError, 0x81).WithDNR(), true, 1234, 1, 0x02)...)
	b = append(b, make([]byte, ErrorLogEntrySize)...) // unused slot
	b = append(b, errorEntry(4, 0, 3, MakeStatus(SCTCommandSpecific, 0x02), false, 0, 0, 0x01)...)
	got, err := ParseErrorLog(b)
	if err != nil {
		t.Fatal(err)
	}
	want := []ErrorLogEntry{
		{ErrorCount: 5, SQID: 1, CID: 7, Status: 0x4281, ParamErrorLocation: 0x0304, LBA: 1234, NSID: 1,
			VSInfoAvailable: 0xc0, TransportType: 1, Opcode: 2, CommandSpecific: 0xabcdef, TransportSpecific: 0x55, LogPageVersion: 1},
		{ErrorCount: 4, SQID: 0, CID: 3, Status: 0x0102, ParamErrorLocation: 0x0304,
			VSInfoAvailable: 0xc0, TransportType: 1, Opcode: 1, CommandSpecific: 0xabcdef, TransportSpecific: 0x55, LogPageVersion: 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseErrorLog (-want +got):\n%s", diff)
	}
	// The phase tag must not leak into the status: entry 0 had it set.
	if !got[0].Status.DNR() || got[0].Status.SC() != 0x81 {
		t.Errorf("status %#x lost DNR or SC", uint16(got[0].Status))
	}
	if by, bit, ok := got[0].ParamError(); !ok || by != 4 || bit != 3 {
		t.Errorf("ParamError = %d, %d, %t, want 4, 3, true", by, bit, ok)
	}
	if _, _, ok := (ErrorLogEntry{ParamErrorLocation: 0xffff}).ParamError(); ok {
		t.Error("0xffff parameter location reported as known")
	}
	// SQ 0 is the admin queue: SCT 1 SC 2 is Invalid Queue Size there, and
	// opcode 0x01 is Create I/O SQ, not Write.
	if s := got[1].String(); s != "error 4: sq 0 cid 3 Create I/O Submission Queue (0x01) nsid 0 lba 0: Invalid Queue Size (sct 0x1 sc 0x02)" {
		t.Errorf("String = %q", s)
	}
	if s := got[0].String(); !strings.Contains(s, "Read (0x02)") || !strings.Contains(s, "Unrecovered Read Error") {
		t.Errorf("String = %q", s)
	}
	if _, err := ParseErrorLog(make([]byte, 100)); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "100 bytes") {
		t.Errorf("partial entry: %v", err)
	}
	if got, err := ParseErrorLog(nil); err != nil || len(got) != 0 {
		t.Errorf("empty log: %v, %v", got, err)
	}
}

func TestParseFirmwareSlotLog(t *testing.T) {
	b := make([]byte, FirmwareSlotLogSize)
	b[0] = 2<<4 | 1
	copy(b[8:], "1.0     ")
	copy(b[16:], "2.1b")
	got, err := ParseFirmwareSlotLog(b)
	if err != nil {
		t.Fatal(err)
	}
	want := &FirmwareSlotLog{ActiveSlot: 1, NextSlot: 2, Revisions: [7]string{"1.0", "2.1b"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseFirmwareSlotLog (-want +got):\n%s", diff)
	}
	if _, err := ParseFirmwareSlotLog(b[:64]); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("short log: %v", err)
	}
}
