package nvme

import (
	"errors"
	"fmt"
	"strings"
)

// Status code types (SCT), NVMe Base Specification 2.0 §4.6.1.2.1.
const (
	SCTGeneric         = 0 // Generic Command Status
	SCTCommandSpecific = 1 // Command Specific Status
	SCTMediaError      = 2 // Media and Data Integrity Errors
	SCTPath            = 3 // Path Related Status
	SCTVendor          = 7 // Vendor Specific
)

// Status is the 15-bit status field of a completion queue entry (CQE DW3
// bits 31:17, without the phase tag), as queue.Completion.Status and the
// Error Information log give it (§4.6.1, Figure 93).
type Status uint16

// SC is the Status Code (bits 7:0).
func (s Status) SC() uint8 { return uint8(s) }

// SCT is the Status Code Type (bits 10:8).
func (s Status) SCT() uint8 { return uint8(s >> 8 & 7) }

// CRD is the Command Retry Delay (bits 12:11): 0 retry at once, 1-3 an
// index into Identify Controller CRDT1-CRDT3.
func (s Status) CRD() uint8 { return uint8(s >> 11 & 3) }

// More reports that the Error Information log has more on this command.
func (s Status) More() bool { return s>>13&1 == 1 }

// DNR (Do Not Retry) reports that the same command would fail again.
func (s Status) DNR() bool { return s>>14&1 == 1 }

// Success reports whether the command completed successfully (SCT 0, SC 0).
// CRD, More and DNR do not count: a successful completion carries none.
func (s Status) Success() bool { return s&0x7ff == 0 }

// MakeStatus returns the status field for sct and sc, for building
// completions in tests and in the nvmetest model:
// MakeStatus(SCTMediaError, 0x81) is an Unrecovered Read Error.
func MakeStatus(sct, sc uint8) Status { return Status(uint16(sct&7)<<8 | uint16(sc)) }

// WithDNR returns s with Do Not Retry set.
func (s Status) WithDNR() Status { return s | 1<<14 }

// Status sentinels. A *StatusError matches (errors.Is) the sentinel for its
// SCT/SC; see the table statusSentinels for the exact codes. A command
// specific code (SCT 1) matches only for the kind of command (admin or
// NVM I/O) it is defined for.
var (
	ErrInvalidOpcode          = errors.New("invalid command opcode")
	ErrInvalidField           = errors.New("invalid field in command")
	ErrDataTransferError      = errors.New("data transfer error")
	ErrInternal               = errors.New("internal device error")
	ErrAbortRequested         = errors.New("command abort requested")
	ErrAbortedSQDeletion      = errors.New("command aborted due to SQ deletion")
	ErrInvalidNamespace       = errors.New("invalid namespace or format")
	ErrCommandSequence        = errors.New("command sequence error")
	ErrNamespaceWriteProtect  = errors.New("namespace is write protected")
	ErrLBAOutOfRange          = errors.New("LBA out of range")
	ErrCapacityExceeded       = errors.New("capacity exceeded")
	ErrNamespaceNotReady      = errors.New("namespace not ready")
	ErrReservationConflict    = errors.New("reservation conflict")
	ErrFormatInProgress       = errors.New("format in progress")
	ErrInvalidQueueIdentifier = errors.New("invalid queue identifier")
	ErrCompletionQueueInvalid = errors.New("completion queue invalid")
	ErrInvalidQueueSize       = errors.New("invalid queue size")
	ErrInvalidLogPage         = errors.New("invalid log page")
	ErrInvalidFormat          = errors.New("invalid format")
	ErrFeatureNotSaveable     = errors.New("feature identifier not saveable")
	ErrFeatureNotChangeable   = errors.New("feature not changeable")
	ErrReadOnlyRange          = errors.New("attempted write to read only range")
	ErrWriteFault             = errors.New("write fault")
	ErrUnrecoveredRead        = errors.New("unrecovered read error")
	ErrEndToEnd               = errors.New("end-to-end protection check error")
	ErrCompareFailure         = errors.New("compare failure")
	ErrAccessDenied           = errors.New("access denied")
	ErrDeallocatedOrUnwritten = errors.New("deallocated or unwritten logical block")
)

// Which commands a status code applies to.
const (
	forAny = iota
	forAdmin
	forNVM
)

type statusKey struct {
	sct, sc uint8
}

type statusSentinel struct {
	err error
	to  int // forAny, forAdmin, forNVM
}

var statusSentinels = map[statusKey]statusSentinel{
	{SCTGeneric, 0x01}: {ErrInvalidOpcode, forAny},
	{SCTGeneric, 0x02}: {ErrInvalidField, forAny},
	{SCTGeneric, 0x04}: {ErrDataTransferError, forAny},
	{SCTGeneric, 0x06}: {ErrInternal, forAny},
	{SCTGeneric, 0x07}: {ErrAbortRequested, forAny},
	{SCTGeneric, 0x08}: {ErrAbortedSQDeletion, forAny},
	{SCTGeneric, 0x0b}: {ErrInvalidNamespace, forAny},
	{SCTGeneric, 0x0c}: {ErrCommandSequence, forAny},
	{SCTGeneric, 0x20}: {ErrNamespaceWriteProtect, forAny},
	{SCTGeneric, 0x80}: {ErrLBAOutOfRange, forAny},
	{SCTGeneric, 0x81}: {ErrCapacityExceeded, forAny},
	{SCTGeneric, 0x82}: {ErrNamespaceNotReady, forAny},
	{SCTGeneric, 0x83}: {ErrReservationConflict, forAny},
	{SCTGeneric, 0x84}: {ErrFormatInProgress, forAny},

	{SCTCommandSpecific, 0x00}: {ErrCompletionQueueInvalid, forAdmin},
	{SCTCommandSpecific, 0x01}: {ErrInvalidQueueIdentifier, forAdmin},
	{SCTCommandSpecific, 0x02}: {ErrInvalidQueueSize, forAdmin},
	{SCTCommandSpecific, 0x09}: {ErrInvalidLogPage, forAdmin},
	{SCTCommandSpecific, 0x0a}: {ErrInvalidFormat, forAdmin},
	{SCTCommandSpecific, 0x0d}: {ErrFeatureNotSaveable, forAdmin},
	{SCTCommandSpecific, 0x0e}: {ErrFeatureNotChangeable, forAdmin},
	{SCTCommandSpecific, 0x82}: {ErrReadOnlyRange, forNVM},

	{SCTMediaError, 0x80}: {ErrWriteFault, forAny},
	{SCTMediaError, 0x81}: {ErrUnrecoveredRead, forAny},
	{SCTMediaError, 0x82}: {ErrEndToEnd, forAny},
	{SCTMediaError, 0x83}: {ErrEndToEnd, forAny},
	{SCTMediaError, 0x84}: {ErrEndToEnd, forAny},
	{SCTMediaError, 0x85}: {ErrCompareFailure, forAny},
	{SCTMediaError, 0x86}: {ErrAccessDenied, forAny},
	{SCTMediaError, 0x87}: {ErrDeallocatedOrUnwritten, forAny},
	{SCTMediaError, 0x88}: {ErrEndToEnd, forAny},
}

// Status names from NVMe Base Specification 2.0 (Figures 94-101) and the
// NVM Command Set Specification 1.0 (Figures 19 and 20).
var genericStatusNames = map[uint8]string{
	0x00: "Successful Completion",
	0x01: "Invalid Command Opcode",
	0x02: "Invalid Field in Command",
	0x03: "Command ID Conflict",
	0x04: "Data Transfer Error",
	0x05: "Commands Aborted due to Power Loss Notification",
	0x06: "Internal Error",
	0x07: "Command Abort Requested",
	0x08: "Command Aborted due to SQ Deletion",
	0x09: "Command Aborted due to Failed Fused Command",
	0x0a: "Command Aborted due to Missing Fused Command",
	0x0b: "Invalid Namespace or Format",
	0x0c: "Command Sequence Error",
	0x0d: "Invalid SGL Segment Descriptor",
	0x0e: "Invalid Number of SGL Descriptors",
	0x0f: "Data SGL Length Invalid",
	0x10: "Metadata SGL Length Invalid",
	0x11: "SGL Descriptor Type Invalid",
	0x12: "Invalid Use of Controller Memory Buffer",
	0x13: "PRP Offset Invalid",
	0x14: "Atomic Write Unit Exceeded",
	0x15: "Operation Denied",
	0x16: "SGL Offset Invalid",
	0x18: "Host Identifier Inconsistent Format",
	0x19: "Keep Alive Timer Expired",
	0x1a: "Keep Alive Timeout Invalid",
	0x1b: "Command Aborted due to Preempt and Abort",
	0x1c: "Sanitize Failed",
	0x1d: "Sanitize In Progress",
	0x1e: "SGL Data Block Granularity Invalid",
	0x1f: "Command Not Supported for Queue in CMB",
	0x20: "Namespace is Write Protected",
	0x21: "Command Interrupted",
	0x22: "Transient Transport Error",
	0x23: "Command Prohibited by Command and Feature Lockdown",
	0x24: "Admin Command Media Not Ready",
	// 0x80-0xbf: I/O command set specific; these are the NVM command
	// set's, which apply to any command that names an NVM namespace.
	0x80: "LBA Out of Range",
	0x81: "Capacity Exceeded",
	0x82: "Namespace Not Ready",
	0x83: "Reservation Conflict",
	0x84: "Format In Progress",
}

// Command specific status (SCT 1) of admin commands, codes 0x00-0x7f.
var adminCommandStatusNames = map[uint8]string{
	0x00: "Completion Queue Invalid",
	0x01: "Invalid Queue Identifier",
	0x02: "Invalid Queue Size",
	0x03: "Abort Command Limit Exceeded",
	0x05: "Asynchronous Event Request Limit Exceeded",
	0x06: "Invalid Firmware Slot",
	0x07: "Invalid Firmware Image",
	0x08: "Invalid Interrupt Vector",
	0x09: "Invalid Log Page",
	0x0a: "Invalid Format",
	0x0b: "Firmware Activation Requires Conventional Reset",
	0x0c: "Invalid Queue Deletion",
	0x0d: "Feature Identifier Not Saveable",
	0x0e: "Feature Not Changeable",
	0x0f: "Feature Not Namespace Specific",
	0x10: "Firmware Activation Requires NVM Subsystem Reset",
	0x11: "Firmware Activation Requires Controller Level Reset",
	0x12: "Firmware Activation Requires Maximum Time Violation",
	0x13: "Firmware Activation Prohibited",
	0x14: "Overlapping Range",
	0x15: "Namespace Insufficient Capacity",
	0x16: "Namespace Identifier Unavailable",
	0x18: "Namespace Already Attached",
	0x19: "Namespace Is Private",
	0x1a: "Namespace Not Attached",
	0x1b: "Thin Provisioning Not Supported",
	0x1c: "Controller List Invalid",
	0x1d: "Device Self-test In Progress",
	0x1e: "Boot Partition Write Prohibited",
	0x1f: "Invalid Controller Identifier",
	0x20: "Invalid Secondary Controller State",
	0x21: "Invalid Number of Controller Resources",
	0x22: "Invalid Resource Identifier",
	0x23: "Sanitize Prohibited While Persistent Memory Region is Enabled",
	0x24: "ANA Group Identifier Invalid",
	0x25: "ANA Attach Failed",
	0x26: "Insufficient Capacity",
	0x27: "Namespace Attachment Limit Exceeded",
	0x28: "Prohibition of Command Execution Not Supported",
	0x29: "I/O Command Set Not Supported",
	0x2a: "I/O Command Set Not Enabled",
	0x2b: "I/O Command Set Combination Rejected",
	0x2c: "Invalid I/O Command Set",
	0x2d: "Identifier Unavailable",
}

// Command specific status (SCT 1) of NVM I/O commands (NVM Command Set
// Specification 1.0, Figure 20, and the Zoned Namespace codes).
var nvmCommandStatusNames = map[uint8]string{
	0x80: "Conflicting Attributes",
	0x81: "Invalid Protection Information",
	0x82: "Attempted Write to Read Only Range",
	0x83: "Command Size Limit Exceeded",
	0xb8: "Zoned Boundary Error",
	0xb9: "Zone Is Full",
	0xba: "Zone Is Read Only",
	0xbb: "Zone Is Offline",
	0xbc: "Zone Invalid Write",
	0xbd: "Too Many Active Zones",
	0xbe: "Too Many Open Zones",
	0xbf: "Invalid Zone State Transition",
}

var mediaStatusNames = map[uint8]string{
	0x80: "Write Fault",
	0x81: "Unrecovered Read Error",
	0x82: "End-to-end Guard Check Error",
	0x83: "End-to-end Application Tag Check Error",
	0x84: "End-to-end Reference Tag Check Error",
	0x85: "Compare Failure",
	0x86: "Access Denied",
	0x87: "Deallocated or Unwritten Logical Block",
	0x88: "End-to-end Storage Tag Check Error",
}

var pathStatusNames = map[uint8]string{
	0x00: "Internal Path Error",
	0x01: "Asymmetric Access Persistent Loss",
	0x02: "Asymmetric Access Inaccessible",
	0x03: "Asymmetric Access Transition",
	0x60: "Controller Pathing Error",
	0x70: "Host Pathing Error",
	0x71: "Command Aborted By Host",
}

// StatusName returns the spec name of status code sc of type sct, for an
// admin command (admin true) or an NVM I/O command: command specific codes
// mean different things for the two. An unknown code gives a description
// with its numbers ("Command Specific Status 0x42").
func StatusName(sct, sc uint8, admin bool) string {
	var names map[uint8]string
	kind := "Reserved Status Code Type"
	switch sct {
	case SCTGeneric:
		names, kind = genericStatusNames, "Generic Command Status"
	case SCTCommandSpecific:
		names, kind = nvmCommandStatusNames, "Command Specific Status"
		if admin {
			names = adminCommandStatusNames
		}
	case SCTMediaError:
		names, kind = mediaStatusNames, "Media and Data Integrity Error"
	case SCTPath:
		names, kind = pathStatusNames, "Path Related Status"
	case SCTVendor:
		kind = "Vendor Specific Status"
	}
	if n, ok := names[sc]; ok {
		return n
	}
	return fmt.Sprintf("%s 0x%02x", kind, sc)
}

// StatusError is a command the controller completed with an error status.
// It keeps what the controller said (SCT, SC, DNR, ...) and which command
// it was, and matches the status sentinels with errors.Is:
//
//	if errors.Is(err, nvme.ErrLBAOutOfRange) { ... }
//	var se *nvme.StatusError
//	if errors.As(err, &se) && !se.DNR { /* retry */ }
type StatusError struct {
	SCT, SC uint8  // Status Code Type and Status Code
	DNR     bool   // Do Not Retry: the same command will fail again
	More    bool   // the Error Information log has more
	CRD     uint8  // Command Retry Delay index (0: none; 1-3: Identify CRDT1-3)
	CID     uint16 // command identifier
	Opcode  uint8  // the command's opcode
	Admin   bool   // admin command (else NVM I/O command)
	NSID    uint32 // namespace, 0 if none or not known
	LBA     uint64 // starting LBA, when HasLBA
	HasLBA  bool   // LBA is set (the command addresses blocks)
}

// StatusFromCompletion turns the 15-bit status field of a completion
// (queue.Completion.Status) into an error: nil for success, else a
// *StatusError for the command with identifier cid and opcode.
func StatusFromCompletion(status uint16, cid uint16, opcode uint8, admin bool) error {
	s := Status(status)
	if s.Success() {
		return nil
	}
	return &StatusError{
		SCT: s.SCT(), SC: s.SC(), DNR: s.DNR(), More: s.More(), CRD: s.CRD(),
		CID: cid, Opcode: opcode, Admin: admin,
	}
}

// Status returns the status field the error was built from (without CID
// and command).
func (e *StatusError) Status() Status {
	s := MakeStatus(e.SCT, e.SC) | Status(e.CRD&3)<<11
	if e.More {
		s |= 1 << 13
	}
	if e.DNR {
		s |= 1 << 14
	}
	return s
}

// Name is the spec name of the status ("Unrecovered Read Error").
func (e *StatusError) Name() string { return StatusName(e.SCT, e.SC, e.Admin) }

// Error formats as
//
//	nvme: Read (0x02) cid 7 nsid 1: Unrecovered Read Error (sct 0x2 sc 0x81, dnr) at lba 1234
func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nvme: %s (0x%02x) cid %d", OpcodeName(e.Opcode, e.Admin), e.Opcode, e.CID)
	if e.NSID != 0 {
		fmt.Fprintf(&b, " nsid %d", e.NSID)
	}
	fmt.Fprintf(&b, ": %s (sct 0x%x sc 0x%02x", e.Name(), e.SCT, e.SC)
	if e.DNR {
		b.WriteString(", dnr")
	}
	if e.More {
		b.WriteString(", more")
	}
	if e.CRD != 0 {
		fmt.Fprintf(&b, ", crd %d", e.CRD)
	}
	b.WriteString(")")
	if e.HasLBA {
		fmt.Fprintf(&b, " at lba %d", e.LBA)
	}
	return b.String()
}

// Is reports whether target is the sentinel for e's status code, so that
// errors.Is(err, ErrUnrecoveredRead) works through any wrapping.
func (e *StatusError) Is(target error) bool {
	s, ok := statusSentinels[statusKey{e.SCT, e.SC}]
	if !ok || s.err != target {
		return false
	}
	switch s.to {
	case forAdmin:
		return e.Admin
	case forNVM:
		return !e.Admin
	}
	return true
}

// Temporary reports whether retrying the command may succeed (DNR clear).
func (e *StatusError) Temporary() bool { return !e.DNR }

// Retryable reports whether err is worth retrying unchanged: ErrQueueFull
// (reap, then submit again) or a *StatusError without DNR. Path errors and
// aborts say so through DNR like every other status.
func Retryable(err error) bool {
	if errors.Is(err, ErrQueueFull) {
		return true
	}
	var se *StatusError
	return errors.As(err, &se) && !se.DNR
}
