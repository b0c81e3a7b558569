package nvmetest

import "fmt"

// Status is the status field of a completion queue entry: CQE DW3 bits 31:17,
// without the phase bit, encoded as in queue.Completion.Status:
//
//	SC  = bits 7:0    status code
//	SCT = bits 10:8   status code type (0 generic, 1 command specific, 2 media)
//	CRD = bits 12:11  command retry delay
//	M   = bit 13      more information in the Error Information log
//	DNR = bit 14      do not retry
type Status uint16

// MakeStatus builds a Status from a status code type and code.
func MakeStatus(sct, sc uint8) Status { return Status(sct&7)<<8 | Status(sc) }

// SC is the status code.
func (s Status) SC() uint8 { return uint8(s) }

// SCT is the status code type.
func (s Status) SCT() uint8 { return uint8(s>>8) & 7 }

// DNR reports the Do Not Retry bit.
func (s Status) DNR() bool { return s&StatusDNR != 0 }

// Code is the status without CRD, More and DNR: what tests usually compare.
func (s Status) Code() Status { return s & 0x7ff }

func (s Status) String() string {
	d := ""
	if s.DNR() {
		d = " dnr"
	}
	return fmt.Sprintf("sct %d sc %#02x%s", s.SCT(), s.SC(), d)
}

// Status values from the NVMe base specification 2.0 (Figures 100-103) and
// the NVM command set specification. Errors the model detects itself carry
// StatusDNR as well, except the two abort statuses, which are retryable.
const (
	StatusSuccess Status = 0

	// Generic command status (SCT 0).
	StatusInvalidOpcode        Status = 0x01 // Invalid Command Opcode
	StatusInvalidField         Status = 0x02 // Invalid Field in Command
	StatusDataTransferError    Status = 0x04
	StatusInternalError        Status = 0x06
	StatusAbortRequested       Status = 0x07 // Command Abort Requested
	StatusAbortSQDeleted       Status = 0x08 // Command Aborted due to SQ Deletion
	StatusInvalidNamespace     Status = 0x0b // Invalid Namespace or Format
	StatusCommandSequenceError Status = 0x0c
	StatusInvalidSGLSegment    Status = 0x0d // Invalid SGL Segment Descriptor
	StatusInvalidSGLCount      Status = 0x0e // Invalid Number of SGL Descriptors
	StatusDataSGLLengthInvalid Status = 0x0f
	StatusSGLTypeInvalid       Status = 0x11 // SGL Descriptor Type Invalid
	StatusPRPOffsetInvalid     Status = 0x13
	StatusLBAOutOfRange        Status = 0x80

	// Command specific status (SCT 1).
	StatusInvalidCQ              Status = 0x100 // Completion Queue Invalid
	StatusInvalidQueueID         Status = 0x101 // Invalid Queue Identifier
	StatusInvalidQueueSize       Status = 0x102 // Invalid Queue Size
	StatusAERLimitExceeded       Status = 0x105 // Asynchronous Event Request Limit Exceeded
	StatusInvalidInterruptVector Status = 0x108
	StatusInvalidLogPage         Status = 0x109
	StatusInvalidFormat          Status = 0x10a
	StatusInvalidQueueDeletion   Status = 0x10c
	StatusFeatureNotSaveable     Status = 0x10d

	// Media and data integrity errors (SCT 2).
	StatusWriteFault      Status = 0x280
	StatusUnrecoveredRead Status = 0x281 // Unrecovered Read Error
	StatusCompareFailure  Status = 0x285
	StatusDeallocated     Status = 0x287 // Deallocated or Unwritten Logical Block

	// StatusDNR is the Do Not Retry bit; OR it into a Status.
	StatusDNR Status = 1 << 14
	// StatusMore says the Error Information log has more.
	StatusMore Status = 1 << 13
)
