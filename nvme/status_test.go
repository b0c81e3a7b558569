package nvme

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestStatusFields(t *testing.T) {
	// DNR, More, CRD 2, SCT 2, SC 0x81.
	s := Status(1<<14 | 1<<13 | 2<<11 | 2<<8 | 0x81)
	if s.SC() != 0x81 || s.SCT() != 2 || s.CRD() != 2 || !s.More() || !s.DNR() || s.Success() {
		t.Errorf("Status %#x: sc %#x sct %d crd %d more %t dnr %t success %t", uint16(s), s.SC(), s.SCT(), s.CRD(), s.More(), s.DNR(), s.Success())
	}
	if MakeStatus(SCTMediaError, 0x81).WithDNR() != 0x4281 {
		t.Errorf("MakeStatus(2, 0x81).WithDNR() = %#x", uint16(MakeStatus(2, 0x81).WithDNR()))
	}
	se := &StatusError{SCT: 3, SC: 0x03, More: true, CRD: 3}
	if se.Status() != 0x3b03 || se.Status().CRD() != 3 || !se.Status().More() {
		t.Errorf("Status() = %#x, want 0x3b03 (More, CRD 3, SCT 3, SC 3)", uint16(se.Status()))
	}
	if !Status(0).Success() {
		t.Error("status 0 is not success")
	}
}

func TestStatusFromCompletion(t *testing.T) {
	if err := StatusFromCompletion(0, 3, uint8(NVMRead), false); err != nil {
		t.Errorf("status 0 = %v, want nil", err)
	}
	err := StatusFromCompletion(uint16(MakeStatus(SCTMediaError, 0x81).WithDNR()), 7, uint8(NVMRead), false)
	var se *StatusError
	if !errors.As(err, &se) {
		t.Fatalf("StatusFromCompletion = %T, want *StatusError", err)
	}
	want := &StatusError{SCT: 2, SC: 0x81, DNR: true, CID: 7, Opcode: 0x02}
	if diff := cmp.Diff(want, se); diff != "" {
		t.Errorf("StatusError (-want +got):\n%s", diff)
	}
	if se.Status() != 0x4281 {
		t.Errorf("Status() = %#x, want 0x4281 (round trip)", uint16(se.Status()))
	}
	se.NSID, se.LBA, se.HasLBA = 1, 1234, true
	const msg = "nvme: Read (0x02) cid 7 nsid 1: Unrecovered Read Error (sct 0x2 sc 0x81, dnr) at lba 1234"
	if se.Error() != msg {
		t.Errorf("Error() =\n %q, want\n %q", se.Error(), msg)
	}
	if !errors.Is(fmt.Errorf("reading: %w", err), ErrUnrecoveredRead) {
		t.Error("wrapped error does not match ErrUnrecoveredRead")
	}
	if errors.Is(err, ErrWriteFault) {
		t.Error("Unrecovered Read Error matches ErrWriteFault")
	}
	if Retryable(err) || se.Temporary() {
		t.Error("DNR error reported retryable")
	}
}

func TestStatusErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		err  *StatusError
		want string
	}{
		{&StatusError{SCT: 0, SC: 0x02, CID: 3, Opcode: 0x06, Admin: true},
			"nvme: Identify (0x06) cid 3: Invalid Field in Command (sct 0x0 sc 0x02)"},
		{&StatusError{SCT: 1, SC: 0x02, CID: 1, Opcode: 0x01, Admin: true, DNR: true},
			"nvme: Create I/O Submission Queue (0x01) cid 1: Invalid Queue Size (sct 0x1 sc 0x02, dnr)"},
		{&StatusError{SCT: 3, SC: 0x02, More: true, CRD: 1, CID: 9, Opcode: 0x01, NSID: 2},
			"nvme: Write (0x01) cid 9 nsid 2: Asymmetric Access Inaccessible (sct 0x3 sc 0x02, more, crd 1)"},
		{&StatusError{SCT: 7, SC: 0xc3, Opcode: 0x99},
			"nvme: I/O opcode 0x99 (0x99) cid 0: Vendor Specific Status 0xc3 (sct 0x7 sc 0xc3)"},
		{&StatusError{SCT: 5, SC: 0x01, Opcode: 0xc1, Admin: true},
			"nvme: admin opcode 0xc1 (0xc1) cid 0: Reserved Status Code Type 0x01 (sct 0x5 sc 0x01)"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() =\n %q, want\n %q", got, tc.want)
		}
	}
}

// The same SCT 1 code means different things to admin and NVM commands.
func TestStatusNameAdminVersusNVM(t *testing.T) {
	for _, tc := range []struct {
		sct, sc uint8
		admin   bool
		want    string
	}{
		{0, 0x80, false, "LBA Out of Range"},
		{0, 0x00, true, "Successful Completion"},
		{1, 0x02, true, "Invalid Queue Size"},
		{1, 0x02, false, "Command Specific Status 0x02"},
		{1, 0x80, false, "Conflicting Attributes"},
		{1, 0x80, true, "Command Specific Status 0x80"},
		{1, 0x0a, true, "Invalid Format"},
		{2, 0x85, false, "Compare Failure"},
		{2, 0x87, false, "Deallocated or Unwritten Logical Block"},
		{2, 0x10, false, "Media and Data Integrity Error 0x10"},
		{3, 0x71, false, "Command Aborted By Host"},
		{0, 0x7f, false, "Generic Command Status 0x7f"},
	} {
		if got := StatusName(tc.sct, tc.sc, tc.admin); got != tc.want {
			t.Errorf("StatusName(%d, %#x, admin %t) = %q, want %q", tc.sct, tc.sc, tc.admin, got, tc.want)
		}
	}
}

func TestStatusSentinels(t *testing.T) {
	for _, tc := range []struct {
		sct, sc uint8
		admin   bool
		want    error
		match   bool
	}{
		{0, 0x01, true, ErrInvalidOpcode, true},
		{0, 0x02, false, ErrInvalidField, true},
		{0, 0x04, false, ErrDataTransferError, true},
		{0, 0x06, true, ErrInternal, true},
		{0, 0x07, false, ErrAbortRequested, true},
		{0, 0x0b, false, ErrInvalidNamespace, true},
		{0, 0x80, false, ErrLBAOutOfRange, true},
		{0, 0x81, false, ErrCapacityExceeded, true},
		{0, 0x82, false, ErrNamespaceNotReady, true},
		{1, 0x00, true, ErrCompletionQueueInvalid, true},
		{1, 0x01, true, ErrInvalidQueueIdentifier, true},
		{1, 0x02, true, ErrInvalidQueueSize, true},
		{1, 0x0a, true, ErrInvalidFormat, true},
		{1, 0x0d, true, ErrFeatureNotSaveable, true},
		{1, 0x82, false, ErrReadOnlyRange, true},
		{1, 0x82, true, ErrReadOnlyRange, false},
		// Command specific admin codes must not match an I/O command.
		{1, 0x01, false, ErrInvalidQueueIdentifier, false},
		{1, 0x0a, false, ErrInvalidFormat, false},
		{2, 0x80, false, ErrWriteFault, true},
		{2, 0x81, false, ErrUnrecoveredRead, true},
		{2, 0x82, false, ErrEndToEnd, true},
		{2, 0x84, false, ErrEndToEnd, true},
		{2, 0x85, false, ErrCompareFailure, true},
		{2, 0x86, false, ErrAccessDenied, true},
		{2, 0x87, false, ErrDeallocatedOrUnwritten, true},
		// A different SCT with the same SC is a different error.
		{0, 0x81, false, ErrUnrecoveredRead, false},
		{2, 0x02, false, ErrInvalidField, false},
	} {
		err := StatusFromCompletion(uint16(MakeStatus(tc.sct, tc.sc)), 1, 0, tc.admin)
		if got := errors.Is(err, tc.want); got != tc.match {
			t.Errorf("errors.Is(sct %d sc %#x admin %t, %v) = %t, want %t", tc.sct, tc.sc, tc.admin, tc.want, got, tc.match)
		}
	}
}

func TestRetryable(t *testing.T) {
	if !Retryable(fmt.Errorf("submit: %w", ErrQueueFull)) {
		t.Error("ErrQueueFull not retryable")
	}
	if !Retryable(StatusFromCompletion(uint16(MakeStatus(SCTPath, 0x03)), 1, 2, false)) {
		t.Error("path error without DNR not retryable")
	}
	if Retryable(ErrTimeout) || Retryable(nil) {
		t.Error("timeout or nil reported retryable")
	}
}

func TestStatusErrorNotNilInterface(t *testing.T) {
	// A success must be a true nil, not a typed nil in an error interface.
	if err := StatusFromCompletion(1<<14|1<<13, 1, 2, false); err != nil {
		t.Errorf("success with DNR/More bits = %v, want nil", err)
	}
	if !strings.HasPrefix(StatusFromCompletion(1, 1, 2, false).Error(), "nvme: Read") {
		t.Error("message does not start with nvme: and the opcode")
	}
}

func ExampleStatusFromCompletion() {
	// The status field of a completion whose Read hit a bad block.
	err := StatusFromCompletion(0x4281, 7, uint8(NVMRead), false)
	fmt.Println(err)
	fmt.Println(errors.Is(err, ErrUnrecoveredRead), Retryable(err))
	// Output:
	// nvme: Read (0x02) cid 7: Unrecovered Read Error (sct 0x2 sc 0x81, dnr)
	// true false
}
