package queue

import "testing"

// inRange is the definition NeedEvent implements: walking from old up to
// new (wrapping at depth), do we step on eventIdx before reaching new?
func inRange(eventIdx, new, old, depth uint32) bool {
	for v := old; v != new; v = (v + 1) % depth {
		if v == eventIdx {
			return true
		}
	}
	return false
}

func TestNeedEventTable(t *testing.T) {
	cases := []struct {
		ev, new, old uint32
		want         bool
	}{
		{0, 1, 0, true},         // the controller saw 0 and asked to hear of anything after
		{1, 2, 1, true},         // idle controller: EventIdx == old
		{0, 2, 1, false},        // it has not caught up with 1 yet: still working
		{2, 3, 1, true},         // batch 1..3 passes 2
		{3, 3, 1, false},        // EventIdx == new: already told
		{65535, 1, 65534, true}, // across the 16-bit wrap
		{65535, 0, 65535, true},
		{0, 1, 65535, true},
		{1, 1, 65535, false},
		{65534, 0, 65535, false},
		{62, 2, 62, true}, // depth 64: 62 -> 2 wraps at the ring, not at 2^16
		{63, 2, 62, true},
		{0, 2, 62, true},
		{1, 2, 62, true},
		{2, 2, 62, false},
		{30, 2, 62, false},
	}
	for _, c := range cases {
		if got := NeedEvent(c.ev, c.new, c.old); got != c.want {
			t.Errorf("NeedEvent(eventIdx %d, new %d, old %d) = %t, want %t", c.ev, c.new, c.old, got, c.want)
		}
	}
}

// TestNeedEventRingWrap checks NeedEvent against the walk for every triple
// on small rings and a sample of the largest (depth 65536, where indexes wrap
// exactly at 2^16).
func TestNeedEventRingWrap(t *testing.T) {
	for _, depth := range []uint32{2, 3, 7, 64} {
		for old := uint32(0); old < depth; old++ {
			for new := uint32(0); new < depth; new++ {
				if new == old {
					continue // the doorbell is not rung without a change
				}
				for ev := uint32(0); ev < depth; ev++ {
					if got, want := NeedEvent(ev, new, old), inRange(ev, new, old, depth); got != want {
						t.Fatalf("depth %d: NeedEvent(eventIdx %d, new %d, old %d) = %t, want %t", depth, ev, new, old, got, want)
					}
				}
			}
		}
	}
	const depth = 65536
	for _, old := range []uint32{0, 1, 100, 65500, 65534, 65535} {
		for _, step := range []uint32{1, 2, 31, 40, 65535} {
			new := (old + step) % depth
			for _, ev := range []uint32{0, 1, old, (old + 1) % depth, new, (new + depth - 1) % depth, 65535, 32768} {
				if got, want := NeedEvent(ev, new, old), inRange(ev, new, old, depth); got != want {
					t.Fatalf("depth %d: NeedEvent(eventIdx %d, new %d, old %d) = %t, want %t", depth, ev, new, old, got, want)
				}
			}
		}
	}
}

func TestShadowDoorbellRing(t *testing.T) {
	shadow, event := uint32(77), uint32(99) // left by an earlier queue
	var mmio []uint32
	d := NewShadowDoorbell(&shadow, &event, DoorbellFunc(func(v uint32) { mmio = append(mmio, v) }))
	if shadow != 0 || event != 0 {
		t.Fatalf("NewShadowDoorbell left shadow %d, EventIdx %d; want both zeroed", shadow, event)
	}
	d.Ring(1) // EventIdx 0 is in [0, 1): the controller is idle, wake it
	if shadow != 1 || len(mmio) != 1 || mmio[0] != 1 {
		t.Fatalf("first ring: shadow %d, MMIO writes %v; want shadow 1 and one MMIO write of 1", shadow, mmio)
	}
	// The controller is working: it has not published an EventIdx past 0
	// since the last MMIO write, so it will read the shadow again.
	d.Ring(2)
	d.Ring(5)
	if shadow != 5 || len(mmio) != 1 {
		t.Fatalf("while the controller works: shadow %d, MMIO writes %v; want shadow 5 and no new MMIO write", shadow, mmio)
	}
	// It caught up with 5 and went idle: the next value must be rung.
	event = 5
	d.Ring(6)
	if len(mmio) != 2 || mmio[1] != 6 {
		t.Fatalf("after the controller caught up: MMIO writes %v, want a write of 6", mmio)
	}
	if s := d.Stats(); s.Updates != 4 || s.MMIOWrites != 2 {
		t.Errorf("Stats = %+v, want 4 updates, 2 MMIO writes", s)
	}
}

// TestShadowDoorbellPair runs a queue pair on shadow doorbells against the
// fake controller: the data path is unchanged and the pair still publishes
// one tail per batch and one head per reap.
func TestShadowDoorbellPair(t *testing.T) {
	p, f, _ := testPair(t, 1, 8)
	var shadow, event [4]uint32
	sq := NewShadowDoorbell(&shadow[0], &event[0], p.sqTail)
	cq := NewShadowDoorbell(&shadow[1], &event[1], p.cqHead)
	p.sqTail, p.cqHead = sq, cq
	f.auto = true
	for batch := 0; batch < 5; batch++ {
		for i := 0; i < 4; i++ {
			cid, err := p.Acquire()
			if err != nil {
				t.Fatal(err)
			}
			cmd := readCmd(cid, uint64(i))
			p.Post(&cmd)
		}
		p.UpdateTail()
		if n := reapAll(t, p); n != 4 {
			t.Fatalf("batch %d: %d completions, want 4", batch, n)
		}
		p.UpdateHead()
		event[0], event[1] = shadow[0], shadow[1] // the controller caught up
	}
	if s := sq.Stats(); s.Updates != 5 || s.MMIOWrites != 5 {
		t.Errorf("SQ doorbell %+v, want one update and one MMIO write per batch of 4 (5)", s)
	}
	if s := cq.Stats(); s.Updates != 5 {
		t.Errorf("CQ doorbell %+v, want one update per reap (5)", s)
	}
}
