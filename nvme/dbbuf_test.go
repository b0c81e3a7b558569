package nvme

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
)

// TestShadowDoorbells runs QD32 I/O against the model with shadow doorbells
// offered, on and turned off: the data reads back, the counters agree with
// the MMIO writes the model saw, and with shadow doorbells on the driver
// writes MMIO less often than it publishes a value (the model, working on
// its own goroutine, reads the shadow slots while it is busy).
func TestShadowDoorbells(t *testing.T) {
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoShadowDoorbells=%t", off), func(t *testing.T) {
			c, m, ns, qp, pool := asyncSetup(t, nvmetest.Config{ShadowDoorbells: true}, &Options{NoShadowDoorbells: off}, 64)
			if on, why := c.ShadowDoorbells(); on == off || why != nil {
				t.Fatalf("ShadowDoorbells() = %t, %v; want %t, nil", on, why, !off)
			}
			before := m.Stats()
			adminBefore := c.admin.Stats()

			const qd, total, bs = 32, 4096, 512
			wbuf, _ := pool.Get()
			rbuf, _ := pool.Get()
			pattern := func(lba int) byte { return byte(lba*7 + 1) }
			for i := 0; i < 256; i++ { // 256 blocks per 128 KiB buffer
				for j := 0; j < bs; j++ {
					wbuf.Bytes[i*bs+j] = pattern(i)
				}
			}
			delivered := 0
			reqs := make([]Request, qd)
			free := make([]*Request, 0, qd)
			for i := range reqs {
				free = append(free, &reqs[i])
			}
			done := func(r *Request) {
				if r.Err != nil {
					t.Errorf("%v lba %d: %v", r.Opcode, r.LBA, r.Err)
				}
				delivered++
				free = append(free, r)
			}
			// Each block i of the namespace gets the pattern of i%256, so
			// the read-back knows what to expect.
			run := func(op NVMOpcode) {
				want := delivered + total
				for i := 0; i < total; i++ {
					for len(free) == 0 {
						if _, err := qp.Poll(1, qd); err != nil {
							t.Fatal(err)
						}
					}
					r := free[len(free)-1]
					free = free[:len(free)-1]
					*r = Request{Opcode: op, Namespace: ns, LBA: uint64(i), Blocks: 1, Done: done}
					if op == NVMWrite {
						r.Buf = wbuf.Slice(i%256*bs, bs)
					} else {
						r.Buf = rbuf.Slice(i%256*bs, bs)
						r.Tag = uint64(i)
						r.Done = func(r *Request) {
							if got, w := r.Buf.Bytes[0], pattern(int(r.Tag%256)); got != w || !bytes.Equal(r.Buf.Bytes, bytes.Repeat([]byte{w}, bs)) {
								t.Errorf("lba %d read back %#x..., want %#x", r.Tag, got, w)
							}
							done(r)
						}
					}
					if err := qp.Submit(r); err != nil {
						t.Fatal(err)
					}
				}
				waitAll(t, qp, &delivered, want)
			}
			run(NVMWrite)
			run(NVMRead)

			db := qp.Doorbells()
			after := m.Stats()
			admin := c.admin.Stats()
			modelMMIO := after.SQDoorbellWrites + after.CQDoorbellWrites - before.SQDoorbellWrites - before.CQDoorbellWrites
			adminMMIO := admin.SQDoorbells + admin.CQDoorbells - adminBefore.SQDoorbells - adminBefore.CQDoorbells
			t.Logf("%d I/Os: SQ %+v, CQ %+v; model saw %d MMIO doorbell writes (%d admin)", 2*total, db.SQ, db.CQ, modelMMIO, adminMMIO)
			if db.Shadow == off {
				t.Errorf("Doorbells().Shadow = %t with NoShadowDoorbells %t", db.Shadow, off)
			}
			if got := db.MMIOWrites() + adminMMIO; got != modelMMIO {
				t.Errorf("driver counted %d MMIO doorbell writes (%d admin), the model saw %d", got, adminMMIO, modelMMIO)
			}
			ps := qp.Stats()
			if db.SQ.Updates != ps.SQDoorbells || db.CQ.Updates != ps.CQDoorbells {
				t.Errorf("doorbell updates SQ %d CQ %d, queue pair stats say %d and %d", db.SQ.Updates, db.CQ.Updates, ps.SQDoorbells, ps.CQDoorbells)
			}
			if after.InvalidDoorbellWrites != before.InvalidDoorbellWrites {
				t.Errorf("%d invalid doorbell writes", after.InvalidDoorbellWrites-before.InvalidDoorbellWrites)
			}
			switch {
			case off && db.MMIOWrites() != db.Updates():
				t.Errorf("without shadow doorbells: %d MMIO writes for %d updates, want equal", db.MMIOWrites(), db.Updates())
			case !off && db.MMIOWrites() >= db.Updates():
				t.Errorf("with shadow doorbells: %d MMIO writes for %d updates, want fewer", db.MMIOWrites(), db.Updates())
			}
			if m.DMAFaults() != 0 {
				t.Errorf("%d DMA faults", m.DMAFaults())
			}
			if err := c.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		})
	}
}

// TestShadowDoorbellsNotOffered keeps MMIO doorbells on a controller that
// does not advertise Doorbell Buffer Config.
func TestShadowDoorbellsNotOffered(t *testing.T) {
	c, m, ns, qp, pool := asyncSetup(t, nvmetest.Config{Inline: true}, nil, 8)
	if on, why := c.ShadowDoorbells(); on || why != nil {
		t.Errorf("ShadowDoorbells() = %t, %v on a controller without OACS bit 8", on, why)
	}
	if n := m.Stats().AdminCommands[AdminDoorbellBufferConfig]; n != 0 {
		t.Errorf("sent %d Doorbell Buffer Config commands to a controller that does not offer it", n)
	}
	buf, _ := pool.Get()
	if err := qp.exec(context.Background(), &Request{Opcode: NVMRead, Namespace: ns, Blocks: 1, Buf: buf}); err != nil {
		t.Fatal(err)
	}
	// The CQ head is not written yet: the CQ's slack covers one reaped entry.
	if db := qp.Doorbells(); db.Shadow || db.SQ.MMIOWrites != 1 || db.CQ.MMIOWrites != 0 {
		t.Errorf("one read without shadow doorbells: %+v, want one SQ MMIO write and no CQ write", db)
	}
}
