package nvmetest

import (
	"testing"
)

func TestStatus(t *testing.T) {
	s := MakeStatus(2, 0x81) | StatusDNR | StatusMore
	if s.SCT() != 2 || s.SC() != 0x81 || !s.DNR() || s.Code() != StatusUnrecoveredRead {
		t.Errorf("%#x: SCT %d SC %#x DNR %v Code %#x", uint16(s), s.SCT(), s.SC(), s.DNR(), uint16(s.Code()))
	}
	if got := s.String(); got != "sct 2 sc 0x81 dnr" {
		t.Errorf("String() = %q", got)
	}
}

func TestNamespaceAccessors(t *testing.T) {
	c := NewController(t, Config{Namespaces: []NamespaceConfig{{Blocks: 8}}})
	ns := c.Namespace(1)
	if ns.ID() != 1 || ns.Blocks() != 8 || ns.BlockSize() != 512 {
		t.Errorf("namespace %d: %d blocks of %d bytes, want 1: 8 of 512", ns.ID(), ns.Blocks(), ns.BlockSize())
	}
	if c.Namespace(2) != nil || c.Namespace(0) != nil {
		t.Error("Namespace(0) or Namespace(2) of a one-namespace controller is not nil")
	}
	if _, err := ns.WriteAt(make([]byte, 512), 8*512-1); err == nil {
		t.Error("WriteAt past the end: no error")
	}
	if _, err := ns.ReadAt(make([]byte, 1), -1); err == nil {
		t.Error("ReadAt at -1: no error")
	}
	if c.Config().MQES != DefaultMQES || c.Config().SerialNumber != DefaultSerialNumber {
		t.Errorf("Config() = %+v, want defaults filled in", c.Config())
	}
	if c.DMA().PageSize() != 4096 {
		t.Errorf("PageSize() = %d", c.DMA().PageSize())
	}
}

func TestGetFeatureSelect(t *testing.T) {
	h := newHost(t, Config{Inline: true, MaxQueuePairs: 4})
	h.admin.ok(Command{Opcode: OpSetFeatures, CDW10: fidNumQueues, CDW11: 1<<16 | 1})
	for _, tc := range []struct {
		sel  uint32
		fid  uint32
		want uint32
	}{
		{0, fidNumQueues, 1<<16 | 1}, // current: what was granted
		{1, fidNumQueues, 3<<16 | 3}, // default: the maximum
		{3, fidNumQueues, 1 << 2},    // capabilities: changeable
		{1, fidTempThreshold, 0x157},
		{2, fidArbitration, 0},
		{3, fidWriteCache, 1 << 2},
	} {
		c := h.admin.ok(Command{Opcode: OpGetFeatures, CDW10: tc.sel<<8 | tc.fid})
		if c.DW0 != tc.want {
			t.Errorf("Get Features fid %#x sel %d = %#x, want %#x", tc.fid, tc.sel, c.DW0, tc.want)
		}
	}
	h.admin.status(Command{Opcode: OpGetFeatures, CDW10: 4<<8 | fidArbitration}, StatusInvalidField)
}

// TestCQHeadWraps checks the head doorbell rules across a wrap: the host
// may consume only what was posted.
func TestCQHeadWraps(t *testing.T) {
	q := &compQueue{size: 4, head: 3, tail: 1} // entries at 3 and 0
	for v, want := range map[uint32]bool{3: true, 0: true, 1: true, 2: false, 4: false} {
		if q.headOK(v) != want {
			t.Errorf("head %d -> %d with tail 1: ok = %v, want %v", q.head, v, !want, want)
		}
	}
	if q.free() != 1 {
		t.Errorf("free() = %d with 2 of 3 usable slots used, want 1", q.free())
	}
}
