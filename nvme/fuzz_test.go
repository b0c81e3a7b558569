package nvme

import (
	"errors"
	"testing"
)

// The fuzz targets hold the parsers to the rule that device data is
// untrusted input: whatever the page holds, a parser returns an error that
// wraps a sentinel or a value whose documented guarantees hold, and never
// panics. The seeds run in every `go test`.

// fuzzPage places data at the start of a zeroed 4 KiB page, so that short
// fuzz inputs still reach the field checks rather than the length check.
func fuzzPage(data []byte) []byte {
	p := make([]byte, IdentifySize)
	copy(p, data)
	return p
}

func FuzzParseIdentifyController(f *testing.F) {
	f.Add([]byte(qemuControllerPage()))
	bad := qemuControllerPage()
	bad.u8(512, 0x77)
	f.Add([]byte(bad))
	f.Add(make([]byte, 600))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := ParseIdentifyController(data); len(data) < IdentifySize && !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("%d-byte page: err = %v, want ErrInvalidArgument", len(data), err)
		}
		c, err := ParseIdentifyController(fuzzPage(data))
		if err != nil {
			if c != nil || !errors.Is(err, ErrOutOfSpec) {
				t.Fatalf("error %v with result %v, want nil and ErrOutOfSpec", err, c)
			}
			return
		}
		if !c.SQES.Allows(6) || !c.CQES.Allows(4) || c.NN == 0xffffffff {
			t.Fatalf("accepted SQES %#x CQES %#x NN %#x", uint8(c.SQES), uint8(c.CQES), c.NN)
		}
		if n := len(c.PowerStates); n < 1 || n > MaxPowerStates {
			t.Fatalf("%d power states", n)
		}
		for _, page := range []int{0, 4096, 1 << 16, 1 << 27} {
			if mt := c.MaxTransfer(page); mt < 4096 || mt > DefaultMaxTransfer {
				t.Fatalf("MDTS %d page %d: MaxTransfer %d outside 4096..%d", c.MDTS, page, mt, DefaultMaxTransfer)
			}
		}
		for _, s := range []string{c.SN, c.MN, c.FR, c.SUBNQN} {
			for _, r := range s {
				if r < 0x20 || r > 0x7e {
					t.Fatalf("string %q holds %U", s, r)
				}
			}
		}
	})
}

func FuzzParseIdentifyNamespace(f *testing.F) {
	f.Add([]byte(namespacePage()))
	big := namespacePage()
	big.u8(25, 20)
	big.u8(26, 1|1<<5)
	big.u32(128+4*17, 12<<16)
	f.Add([]byte(big))
	f.Add(make([]byte, IdentifySize))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := ParseIdentifyNamespace(data); len(data) < IdentifySize && !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("%d-byte page: err = %v, want ErrInvalidArgument", len(data), err)
		}
		n, err := ParseIdentifyNamespace(fuzzPage(data))
		if err != nil {
			if n != nil || !(errors.Is(err, ErrOutOfSpec) || errors.Is(err, ErrNamespaceInactive)) {
				t.Fatalf("error %v with result %v", err, n)
			}
			return
		}
		if len(n.LBAF) != int(n.NLBAF)+1 || n.FormatIndex() >= len(n.LBAF) {
			t.Fatalf("format %d of %d (NLBAF %d)", n.FormatIndex(), len(n.LBAF), n.NLBAF)
		}
		if bs := n.BlockSize(); bs < 512 || bs > 1<<30 || bs&(bs-1) != 0 {
			t.Fatalf("block size %d", bs)
		}
		if n.Blocks() == 0 || n.NCAP > n.NSZE || n.NUSE > n.NCAP {
			t.Fatalf("NSZE %d NCAP %d NUSE %d", n.NSZE, n.NCAP, n.NUSE)
		}
		if n.Size()/uint64(n.BlockSize()) != n.Blocks() {
			t.Fatalf("Size %d overflowed: %d blocks of %d", n.Size(), n.Blocks(), n.BlockSize())
		}
	})
}

func FuzzParseActiveNamespaces(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 2, 0, 0, 0, 9, 0, 0, 0})
	f.Add([]byte{2, 0, 0, 0, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		ids, err := ParseActiveNamespaces(fuzzPage(data))
		if err != nil {
			if !errors.Is(err, ErrOutOfSpec) {
				t.Fatal(err)
			}
			return
		}
		if len(ids) > MaxActiveNamespaces {
			t.Fatalf("%d ids", len(ids))
		}
		for i, id := range ids {
			if id == 0 || id == 0xffffffff || (i > 0 && id <= ids[i-1]) {
				t.Fatalf("ids[%d] = %d after %v", i, id, ids[:i])
			}
		}
	})
}

func FuzzParseLogs(f *testing.F) {
	f.Add(smartPage())
	f.Add(errorEntry(1, 1, 1, 0x4281, true, 1, 1, 2))
	f.Fuzz(func(t *testing.T, data []byte) {
		if s, err := ParseSMARTLog(data); (err == nil) != (len(data) >= SMARTLogSize) || (err == nil) == (s == nil) {
			t.Fatalf("%d bytes: %v, %v", len(data), s, err)
		}
		entries, err := ParseErrorLog(data)
		if (err == nil) != (len(data)%ErrorLogEntrySize == 0) {
			t.Fatalf("%d bytes: err %v", len(data), err)
		}
		for _, e := range entries {
			if !e.Valid() {
				t.Fatal("returned an unused entry")
			}
			_ = e.String()
		}
	})
}

func FuzzStatusFromCompletion(f *testing.F) {
	f.Add(uint16(0x4281), uint16(7), uint8(2), false)
	f.Add(uint16(0), uint16(0), uint8(6), true)
	f.Fuzz(func(t *testing.T, status, cid uint16, opcode uint8, admin bool) {
		status &= 0x7fff // the queue package drops the phase tag
		err := StatusFromCompletion(status, cid, opcode, admin)
		if Status(status).Success() != (err == nil) {
			t.Fatalf("status %#x: err %v", status, err)
		}
		var se *StatusError
		if err != nil && (!errors.As(err, &se) || se.Status() != Status(status) || se.Error() == "") {
			t.Fatalf("status %#x did not round trip: %v", status, err)
		}
	})
}

func FuzzParseNamespaceDescriptors(f *testing.F) {
	f.Add([]byte{1, 8, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 4, 1, 0, 0, 0})
	f.Add([]byte{3, 8, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		ds, err := ParseNamespaceDescriptors(fuzzPage(data))
		if err != nil {
			if !errors.Is(err, ErrOutOfSpec) {
				t.Fatal(err)
			}
			return
		}
		total := 0
		for _, d := range ds {
			if want, ok := nidLengths[d.Type]; (ok && len(d.ID) != want) || d.Type == 0 {
				t.Fatalf("descriptor type %d with %d bytes", d.Type, len(d.ID))
			}
			total += 4 + len(d.ID)
		}
		if total > IdentifySize {
			t.Fatalf("descriptors cover %d bytes of a %d-byte page", total, IdentifySize)
		}
	})
}
