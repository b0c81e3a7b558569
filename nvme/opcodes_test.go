package nvme

import (
	"errors"
	"testing"
)

func TestOpcodeNames(t *testing.T) {
	for _, tc := range []struct {
		op    uint8
		admin bool
		want  string
	}{
		{0x06, true, "Identify"},
		{0x02, true, "Get Log Page"},
		{0x7c, true, "Doorbell Buffer Config"},
		{0x80, true, "Format NVM"},
		{0xc0, true, "admin opcode 0xc0"},
		{0x02, false, "Read"},
		{0x01, false, "Write"},
		{0x19, false, "Copy"},
		{0x03, false, "I/O opcode 0x03"},
	} {
		if got := OpcodeName(tc.op, tc.admin); got != tc.want {
			t.Errorf("OpcodeName(%#x, %t) = %q, want %q", tc.op, tc.admin, got, tc.want)
		}
	}
	if CNSController.String() != "Identify Controller" || CNS(0xff).String() != "CNS 0xff" {
		t.Error("CNS names")
	}
	if FeatureNumberOfQueues.String() != "Number of Queues" || FeatureID(0x15).String() != "feature 0x15" {
		t.Error("feature names")
	}
	if LogSMART.String() != "SMART / Health Information" || LogPageID(0x0e).String() != "log page 0x0e" {
		t.Error("log page names")
	}
}

func TestNumberOfQueues(t *testing.T) {
	cdw11, err := NumberOfQueues(4, 2)
	if err != nil || cdw11 != 0x00010003 {
		t.Errorf("NumberOfQueues(4, 2) = %#x, %v, want 0x10003 (0-based)", cdw11, err)
	}
	if sq, cq := ParseNumberOfQueues(0x003f0007); sq != 8 || cq != 64 {
		t.Errorf("ParseNumberOfQueues(0x3f0007) = %d, %d, want 8, 64", sq, cq)
	}
	// 0xffff per half would be 65536 queues; the allocation reply may say so.
	if sq, cq := ParseNumberOfQueues(0xffffffff); sq != 65536 || cq != 65536 {
		t.Errorf("ParseNumberOfQueues(all ones) = %d, %d", sq, cq)
	}
	for _, bad := range [][2]int{{0, 1}, {1, 0}, {65536, 1}} {
		if _, err := NumberOfQueues(bad[0], bad[1]); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("NumberOfQueues(%d, %d) = %v, want ErrInvalidArgument", bad[0], bad[1], err)
		}
	}
}
