package nvme

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// SMARTLogSize is the size of the SMART / Health Information log page.
const SMARTLogSize = 512

// DataUnitBytes is the size of one SMART "data unit": the counters count
// thousands of 512-byte units, rounded up.
const DataUnitBytes = 512 * 1000

// CriticalWarning is the Critical Warning field of the SMART log: each set
// bit is a condition an operator must act on.
type CriticalWarning uint8

// Critical warning bits (NVMe 2.0 Figure 207, byte 0).
const (
	WarnSpareBelowThreshold  CriticalWarning = 1 << 0 // available spare below threshold
	WarnTemperature          CriticalWarning = 1 << 1 // a temperature is past a threshold
	WarnReliabilityDegraded  CriticalWarning = 1 << 2 // media or internal errors degrade reliability
	WarnReadOnly             CriticalWarning = 1 << 3 // media placed in read-only mode
	WarnVolatileBackupFailed CriticalWarning = 1 << 4 // volatile memory backup device failed
	WarnPMRReadOnly          CriticalWarning = 1 << 5 // Persistent Memory Region is read-only
)

var warningNames = []string{
	"spare below threshold", "temperature", "reliability degraded",
	"read-only", "volatile memory backup failed", "PMR read-only",
}

// String lists the set conditions ("temperature, read-only"), "none" if
// there are none.
func (w CriticalWarning) String() string {
	if w == 0 {
		return "none"
	}
	var s []string
	for i, n := range warningNames {
		if w&(1<<i) != 0 {
			s = append(s, n)
		}
	}
	if rest := w >> len(warningNames); rest != 0 {
		s = append(s, fmt.Sprintf("reserved bits 0x%02x", uint8(rest<<len(warningNames))))
	}
	return strings.Join(s, ", ")
}

// Kelvin is a temperature as the device reports it. 0 means "not
// reported" (a sensor that is not implemented).
type Kelvin uint16

// Celsius converts to degrees Celsius (rounded down to whole degrees as
// the device reports them).
func (k Kelvin) Celsius() int { return int(k) - 273 }

func (k Kelvin) String() string {
	if k == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%d°C", k.Celsius())
}

// SMARTLog is the SMART / Health Information log page (Log Identifier 02h;
// NVMe Base Specification 2.0, §5.16.1.3, Figure 207), decoded.
type SMARTLog struct {
	CriticalWarning         CriticalWarning // byte 0
	Temperature             Kelvin          // Composite Temperature (2:1)
	AvailableSpare          uint8           // percent (3)
	AvailableSpareThreshold uint8           // percent (4)
	PercentageUsed          uint8           // estimate of life used, may exceed 100 (5)
	EnduranceGroupWarning   uint8           // Endurance Group Critical Warning Summary (6)
	DataUnitsRead           Uint128         // thousands of 512-byte units (47:32)
	DataUnitsWritten        Uint128         // (63:48)
	HostReadCommands        Uint128         // (79:64)
	HostWriteCommands       Uint128         // (95:80)
	ControllerBusyTime      Uint128         // minutes (111:96)
	PowerCycles             Uint128         // (127:112)
	PowerOnHours            Uint128         // (143:128)
	UnsafeShutdowns         Uint128         // (159:144)
	MediaErrors             Uint128         // unrecovered data integrity errors (175:160)
	ErrorLogEntries         Uint128         // Error Information log entries over the life (191:176)
	WarningTempTime         uint32          // minutes above WCTEMP (195:192)
	CriticalTempTime        uint32          // minutes above CCTEMP (199:196)
	TemperatureSensors      [8]Kelvin       // sensors 1-8, 0 = not implemented (215:200)
	ThermalMgmtTransitions  [2]uint32       // TMT1/TMT2 transition counts (223:216)
	ThermalMgmtTime         [2]uint32       // seconds in TMT1/TMT2 (231:224)
}

// ParseSMARTLog decodes a SMART / Health Information log page; b must hold
// at least SMARTLogSize bytes. Every field is a plain counter or
// percentage, so no value is out of spec: callers print what they get.
func ParseSMARTLog(b []byte) (*SMARTLog, error) {
	if len(b) < SMARTLogSize {
		return nil, fmt.Errorf("SMART log: %d bytes, want %d: %w", len(b), SMARTLogSize, ErrInvalidArgument)
	}
	le := binary.LittleEndian
	s := &SMARTLog{
		CriticalWarning:         CriticalWarning(b[0]),
		Temperature:             Kelvin(le.Uint16(b[1:])),
		AvailableSpare:          b[3],
		AvailableSpareThreshold: b[4],
		PercentageUsed:          b[5],
		EnduranceGroupWarning:   b[6],
		DataUnitsRead:           le128(b[32:]),
		DataUnitsWritten:        le128(b[48:]),
		HostReadCommands:        le128(b[64:]),
		HostWriteCommands:       le128(b[80:]),
		ControllerBusyTime:      le128(b[96:]),
		PowerCycles:             le128(b[112:]),
		PowerOnHours:            le128(b[128:]),
		UnsafeShutdowns:         le128(b[144:]),
		MediaErrors:             le128(b[160:]),
		ErrorLogEntries:         le128(b[176:]),
		WarningTempTime:         le.Uint32(b[192:]),
		CriticalTempTime:        le.Uint32(b[196:]),
		ThermalMgmtTransitions:  [2]uint32{le.Uint32(b[216:]), le.Uint32(b[220:])},
		ThermalMgmtTime:         [2]uint32{le.Uint32(b[224:]), le.Uint32(b[228:])},
	}
	for i := range s.TemperatureSensors {
		s.TemperatureSensors[i] = Kelvin(le.Uint16(b[200+2*i:]))
	}
	return s, nil
}

// ErrorLogEntrySize is the size of one Error Information log entry.
const ErrorLogEntrySize = 64

// ErrorLogEntry is one entry of the Error Information log (Log Identifier
// 01h; NVMe Base Specification 2.0, §5.16.1.2, Figure 205).
type ErrorLogEntry struct {
	ErrorCount uint64 // unique, increasing; 0 = entry not valid (7:0)
	SQID       uint16 // submission queue of the failed command (9:8)
	CID        uint16 // its command identifier (11:10)
	// Status is the command's status field (bits 15:1 of bytes 13:12;
	// the phase tag in bit 0 is dropped).
	Status Status
	// ParamErrorLocation is the byte (bits 7:0) and bit (10:8) of the
	// command that was in error; 0xffff if not applicable (15:14).
	ParamErrorLocation uint16
	LBA                uint64 // first LBA of the error, if applicable (23:16)
	NSID               uint32 // (27:24)
	VSInfoAvailable    uint8  // log page of vendor specific information (28)
	TransportType      uint8  // TRTYPE (29)
	CSI                uint8  // Command Set Indicator (30)
	Opcode             uint8  // opcode of the command in error (31)
	CommandSpecific    uint64 // Command Specific Information (39:32)
	TransportSpecific  uint16 // Transport Type Specific Information (41:40)
	LogPageVersion     uint8  // (63)
}

// Valid reports whether the entry holds an error (ErrorCount is not 0).
func (e ErrorLogEntry) Valid() bool { return e.ErrorCount != 0 }

// ParamError locates the field in error within the command: its byte
// offset and bit; ok is false when the controller did not say (0xffff).
func (e ErrorLogEntry) ParamError() (byteOff int, bit int, ok bool) {
	if e.ParamErrorLocation == 0xffff {
		return 0, 0, false
	}
	return int(e.ParamErrorLocation & 0xff), int(e.ParamErrorLocation >> 8 & 7), true
}

// String is a one-line summary for an operator.
func (e ErrorLogEntry) String() string {
	// The log does not say whether the command was an admin one: SQ 0 is
	// the admin queue.
	admin := e.SQID == 0
	return fmt.Sprintf("error %d: sq %d cid %d %s (0x%02x) nsid %d lba %d: %s (sct 0x%x sc 0x%02x)",
		e.ErrorCount, e.SQID, e.CID, OpcodeName(e.Opcode, admin), e.Opcode, e.NSID, e.LBA,
		StatusName(e.Status.SCT(), e.Status.SC(), admin), e.Status.SCT(), e.Status.SC())
}

// ParseErrorLog decodes an Error Information log: len(b)/64 entries, whole
// entries only (a trailing partial entry is an error, since it means the
// transfer length was wrong). Entries with ErrorCount 0 are unused slots
// and are dropped; the rest are returned in log order (newest first, as
// controllers fill it).
func ParseErrorLog(b []byte) ([]ErrorLogEntry, error) {
	if len(b)%ErrorLogEntrySize != 0 {
		return nil, fmt.Errorf("error log: %d bytes is not a multiple of the %d-byte entry: %w",
			len(b), ErrorLogEntrySize, ErrInvalidArgument)
	}
	le := binary.LittleEndian
	var out []ErrorLogEntry
	for off := 0; off < len(b); off += ErrorLogEntrySize {
		d := b[off : off+ErrorLogEntrySize]
		e := ErrorLogEntry{
			ErrorCount:         le.Uint64(d[0:]),
			SQID:               le.Uint16(d[8:]),
			CID:                le.Uint16(d[10:]),
			Status:             Status(le.Uint16(d[12:]) >> 1),
			ParamErrorLocation: le.Uint16(d[14:]),
			LBA:                le.Uint64(d[16:]),
			NSID:               le.Uint32(d[24:]),
			VSInfoAvailable:    d[28],
			TransportType:      d[29],
			CSI:                d[30],
			Opcode:             d[31],
			CommandSpecific:    le.Uint64(d[32:]),
			TransportSpecific:  le.Uint16(d[40:]),
			LogPageVersion:     d[63],
		}
		if e.Valid() {
			out = append(out, e)
		}
	}
	return out, nil
}

// FirmwareSlotLogSize is the size of the Firmware Slot Information log.
const FirmwareSlotLogSize = 512

// FirmwareSlotLog is the Firmware Slot Information log page (Log
// Identifier 03h; NVMe 2.0 §5.16.1.4, Figure 208).
type FirmwareSlotLog struct {
	// ActiveSlot is the slot the running firmware came from (AFI bits
	// 2:0, 1-7); NextSlot the one activated at the next reset (AFI bits
	// 6:4), 0 if none.
	ActiveSlot, NextSlot int
	// Revisions holds FRS1-FRS7, "" for an empty slot.
	Revisions [7]string
}

// ParseFirmwareSlotLog decodes a Firmware Slot Information log; b must
// hold at least FirmwareSlotLogSize bytes.
func ParseFirmwareSlotLog(b []byte) (*FirmwareSlotLog, error) {
	if len(b) < FirmwareSlotLogSize {
		return nil, fmt.Errorf("firmware slot log: %d bytes, want %d: %w", len(b), FirmwareSlotLogSize, ErrInvalidArgument)
	}
	l := &FirmwareSlotLog{ActiveSlot: int(b[0] & 7), NextSlot: int(b[0] >> 4 & 7)}
	for i := range l.Revisions {
		l.Revisions[i] = asciiField(b[8+8*i : 16+8*i])
	}
	return l, nil
}
