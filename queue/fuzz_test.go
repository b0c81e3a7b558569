package queue

import (
	"encoding/binary"
	"errors"
	"testing"
)

// cqeBytes builds a raw CQE for the seed corpus. Phase is left 0: the fuzz
// body sets it unless told not to.
func cqeBytes(cid, sqid, sqhd uint16, status uint16) []byte {
	b := make([]byte, CQESize)
	binary.LittleEndian.PutUint32(b[8:], uint32(sqhd)|uint32(sqid)<<16)
	binary.LittleEndian.PutUint32(b[12:], uint32(cid)|uint32(status)<<17)
	return b
}

// FuzzCompletion feeds arbitrary 16-byte CQEs, as a broken or hostile
// controller could write them, into the CQ of a pair with commands in
// flight. Next must never panic or index out of range; a CQE must complete
// a request exactly when an independent model of the slots and their
// generations says it is valid, and then complete exactly that slot; a bad
// one must be counted under the right kind and change no slot.
//
// The first byte of each 17-byte record is control: bit 0 set keeps the
// fuzzer's phase bit instead of forcing the current one (so stale entries
// are tried too), bit 1 rings the CQ doorbell afterwards.
func FuzzCompletion(f *testing.F) {
	const id, depth = 1, 8
	seed := func(recs ...[]byte) []byte {
		var b []byte
		for _, r := range recs {
			b = append(b, 0)
			b = append(b, r...)
		}
		return b
	}
	f.Add(seed(cqeBytes(0, id, 1, 0)))                                 // valid
	f.Add(seed(cqeBytes(0, id, 1, 0), cqeBytes(0, id, 2, 0)))          // duplicate after the slot is reused
	f.Add(seed(cqeBytes(0, id, 1, 0), cqeBytes(8, id, 2, 0)))          // the reused slot's own completion
	f.Add(seed(cqeBytes(6, id, 3, 0x4281)))                            // valid, error status
	f.Add(seed(cqeBytes(7, id, 1, 0), cqeBytes(0xffff, id, 1, 0)))     // unknown cids
	f.Add(seed(cqeBytes(3, id, depth, 0), cqeBytes(3, id, 0xffff, 0))) // SQ head out of range
	f.Add(seed(cqeBytes(2, id+1, 1, 0), cqeBytes(2, 0, 1, 0)))         // wrong SQ
	f.Add(append([]byte{1}, cqeBytes(0, id, 1, 0)...))                 // stale phase
	f.Add(seed(cqeBytes(1, id, 1, 0), cqeBytes(2, id, 2, 0), cqeBytes(3, id, 3, 0), cqeBytes(4, id, 4, 0),
		cqeBytes(5, id, 5, 0), cqeBytes(6, id, 6, 0), cqeBytes(0, id, 7, 0), cqeBytes(1|8, id, 0, 0))) // a lap and a wrap

	// Map the rings once: each input gets a new Pair (which clears the CQ)
	// over the same memory, so an exec costs microseconds, not three
	// mmap/mlock/munmap round trips.
	sq := mapDMA(f, depth*SQESize, fakeIOVA)
	cq := mapDMA(f, depth*CQESize, fakeIOVA+0x1000)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := Config{ID: id, Depth: depth, SQ: sq, CQ: cq}
		fc := newFakeController(t, cfg)
		cfg.SQTail, cfg.CQHead = DoorbellFunc(fc.ringSQ), DoorbellFunc(fc.ringCQ)
		p, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		// Fill every slot with a posted command; the model tracks which
		// command id each slot's command went out with: the slot in the
		// low 3 bits (7 slots), how often the slot was reused above them.
		var posted [depth - 1]bool
		var reused, wire [depth - 1]int
		post := func() {
			cid, err := p.Acquire()
			if err != nil {
				t.Fatal(err)
			}
			cmd := readCmd(cid, 0)
			p.Post(&cmd)
			posted[cid] = true
			wire[cid] = (int(cid) + 8*reused[cid]) % 65536
			last := int(p.tail+depth-1) % depth * SQESize
			if got := ParseCommand(sq.Bytes[last:]).CID; int(got) != wire[cid] {
				t.Fatalf("slot %d (reused %d times) went out as cid %d, want %d", cid, reused[cid], got, wire[cid])
			}
		}
		for range depth - 1 {
			post()
		}
		p.UpdateTail()
		var bad [numKinds]uint64
		completed := 0

		// A few laps are enough to reach every state; longer inputs only
		// slow the fuzzer's minimisation down.
		const maxRecords = 4 * depth
		for i := 0; i < maxRecords && len(data) >= 1+CQESize; i++ {
			var raw [CQESize]byte
			ctl := data[0]
			copy(raw[:], data[1:1+CQESize])
			data = data[1+CQESize:]
			if ctl&1 == 0 {
				raw[14] = raw[14]&^1 | b2u8(fc.phase) // bit 16 of DW3
			}
			c, _ := ParseCompletion(raw[:])
			fresh := raw[14]&1 == b2u8(fc.phase)
			fc.cqHead = p.head // the host frees entries as it reads them
			fc.postRaw(raw[:])

			got, ok, err := p.Next()
			if !fresh {
				if ok || err != nil {
					t.Fatalf("stale-phase CQE %+v was consumed: %v %v", c, ok, err)
				}
				// The host did not consume it; undo so the ring stays in step.
				fc.cqTail = (fc.cqTail + depth - 1) % depth
				if fc.cqTail == depth-1 {
					fc.phase = !fc.phase
				}
				continue
			}
			want := expectKind(c, id, depth, posted[:], wire[:])
			switch {
			case want < 0:
				slot := c.CID & 7
				if exp := (Completion{DW0: c.DW0, DW1: c.DW1, SQHead: c.SQHead, SQID: c.SQID, CID: slot, Status: c.Status}); !ok || err != nil || got != exp {
					t.Fatalf("valid CQE %+v: Next = %+v, %v, %v; want %+v", c, got, ok, err, exp)
				}
				completed++
				posted[slot] = false
				// Recycle the slot so the next record has work to complete.
				p.Release(slot)
				reused[slot]++
				post()
			default:
				var ce *CQEError
				if ok || !errors.As(err, &ce) || ce.Kind != CQEErrorKind(want) || ce.CQE != c {
					t.Fatalf("CQE %+v (want kind %v): Next = %+v, %v, %v", c, CQEErrorKind(want), got, ok, err)
				}
				bad[want]++
			}
			if ctl&2 != 0 {
				p.UpdateHead()
			}
			n := 0
			for _, v := range posted {
				if v {
					n++
				}
			}
			if p.Outstanding() != n || p.Free() != 0 {
				t.Fatalf("pair has %d outstanding, %d free; model has %d posted, 0 free", p.Outstanding(), p.Free(), n)
			}
		}
		if s := p.Stats(); s.BadCQEs != bad || s.Completed != uint64(completed) {
			t.Fatalf("stats %+v, want bad %v completed %d", s, bad, completed)
		}
	})
}

// expectKind is the validation rule written out independently of Next:
// -1 for a valid CQE, else the CQEErrorKind. The slot is the cid's low 3
// bits (depth 8 has 7 slots); the rest must match the posted command's.
func expectKind(c Completion, id uint16, depth int, posted []bool, wire []int) int {
	slot := int(c.CID & 7)
	switch {
	case c.SQID != id:
		return int(WrongSQID)
	case slot >= depth-1:
		return int(UnknownCID)
	case !posted[slot] || int(c.CID) != wire[slot]:
		return int(IdleCID)
	case int(c.SQHead) >= depth:
		return int(BadSQHead)
	}
	return -1
}

func b2u8(b bool) byte {
	if b {
		return 1
	}
	return 0
}
