package nvme

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
)

// wantAnomalies fails unless the controller's Identify counters are want
// (kinds not in it zero).
func wantAnomalies(t *testing.T, c *Controller, want map[IdentifyAnomaly]uint64) {
	t.Helper()
	k := c.Counters()
	var total uint64
	for i, got := range k.BadIdentify {
		if got != want[IdentifyAnomaly(i)] {
			t.Errorf("BadIdentify[%v] = %d, want %d (all: %v)", IdentifyAnomaly(i), got, want[IdentifyAnomaly(i)], k.BadIdentify)
		}
		total += want[IdentifyAnomaly(i)]
	}
	if k.IdentifyAnomalies() != total {
		t.Errorf("IdentifyAnomalies() = %d, want %d", k.IdentifyAnomalies(), total)
	}
}

// Each bad field the model serves after Open is counted once under its
// kind, where the check fires, whether it rejects the data (the error
// names the field) or clamps it; the good data read next counts nothing.
func TestIdentifyAnomalyCounters(t *testing.T) {
	le := binary.LittleEndian
	putIDs := func(ids ...uint32) func([]byte) {
		return func(b []byte) {
			clear(b)
			for i, id := range ids {
				le.PutUint32(b[4*i:], id)
			}
		}
	}
	var fullPage []uint32 // 1..1024: a full page, so the driver asks for the next
	for i := range uint32(MaxActiveNamespaces) {
		fullPage = append(fullPage, i+1)
	}
	identifyCtrl := func(c *Controller) error { _, err := c.IdentifyController(context.Background()); return err }
	namespace1 := func(c *Controller) error { _, err := c.Namespace(1); return err }
	active := func(c *Controller) error { _, err := c.ActiveNamespaces(context.Background()); return err }
	for _, tc := range []struct {
		name   string
		cns    uint8
		count  int // fault hits; 1 unless the read takes more Identify commands
		edit   func([]byte)
		read   func(*Controller) error
		kind   IdentifyAnomaly
		reject string // in the error; "" if the data is clamped, not rejected
	}{
		{"SQES without 64-byte entries", 1, 1, func(b []byte) { b[512] = 0x77 }, identifyCtrl, BadSQES, "SQES 0x77"},
		{"CQES without 16-byte entries", 1, 1, func(b []byte) { b[513] = 0x55 }, identifyCtrl, BadCQES, "CQES 0x55"},
		{"NN is the broadcast NSID", 1, 1, func(b []byte) { le.PutUint32(b[516:], 0xffffffff) }, identifyCtrl, BadNN, "NN 0xffffffff"},
		{"NPSS 40 clamped to 32 states", 1, 1, func(b []byte) { b[263] = 40 }, identifyCtrl, BadNPSS, ""},
		{"NLBAF 64", 0, 1, func(b []byte) { b[25] = 64 }, namespace1, BadNLBAF, "NLBAF 64"},
		{"FLBAS selects format 5 of 2", 0, 1, func(b []byte) { b[26] = 5 }, namespace1, BadFLBAS, "FLBAS 0x05"},
		{"LBADS 8: 256-byte blocks", 0, 1, func(b []byte) { b[130] = 8 }, namespace1, BadLBADS, "LBADS 8"},
		// LBADS 17 passes the parser (9..30); Namespace allows 64 KiB.
		{"LBADS 17: 128 KiB blocks", 0, 1, func(b []byte) { b[130] = 17 }, namespace1, BadLBADS, "block size 131072"},
		{"NCAP above NSZE", 0, 1, func(b []byte) { le.PutUint64(b[8:], le.Uint64(b[0:])+1) }, namespace1, BadCapacity, "NCAP"},
		{"NUSE above NCAP", 0, 1, func(b []byte) { le.PutUint64(b[16:], le.Uint64(b[8:])+1) }, namespace1, BadCapacity, "NUSE"},
		{"NSZE of 2^56 512-byte blocks: 2^65 bytes", 0, 1, func(b []byte) {
			le.PutUint64(b[0:], 1<<56)
			le.PutUint64(b[8:], 1<<56)
			le.PutUint64(b[16:], 1<<56)
		}, namespace1, BadNSZE, "overflows 64 bits"},
		// Fits 64 bits, which the parser checks; not 63, which Size needs.
		{"NSZE of 2^54+1 512-byte blocks: over 2^63 bytes", 0, 1, func(b []byte) { le.PutUint64(b[0:], 1<<54+1) }, namespace1, BadNSZE, "above 2^63 bytes"},
		{"active namespace list out of order", 2, 1, putIDs(2, 1), active, BadNSList, "nsid 1"},
		{"active namespace list with the broadcast NSID", 2, 1, putIDs(1, 0xffffffff), active, BadNSList, "broadcast"},
		{"second list page not after the first", 2, 2, putIDs(fullPage...), active, BadNSList, "after nsid 1024 starts at nsid 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, m := openModel(t, nvmetest.Config{}, nil)
			f := m.Inject(&nvmetest.Fault{Match: nvmetest.MatchIdentify(tc.cns), Count: tc.count, Identify: tc.edit})
			err := tc.read(c)
			if f.Hits() != tc.count {
				t.Fatalf("the bad data was sent %d times, want %d: the test checks nothing", f.Hits(), tc.count)
			}
			switch {
			case tc.reject == "" && err != nil:
				t.Errorf("read: %v, want the field clamped, not an error", err)
			case tc.reject != "" && (!errors.Is(err, ErrOutOfSpec) || !strings.Contains(err.Error(), tc.reject)):
				t.Errorf("read: %v, want ErrOutOfSpec naming %q", err, tc.reject)
			}
			wantAnomalies(t, c, map[IdentifyAnomaly]uint64{tc.kind: 1})
			// The model's own data again: nothing more is counted.
			if err := tc.read(c); err != nil {
				t.Errorf("read of good data: %v", err)
			}
			wantAnomalies(t, c, map[IdentifyAnomaly]uint64{tc.kind: 1})
		})
	}
}

// What Open clamps or ignores is counted on the controller it returns:
// MDTS 32 and above is no limit (Options.MaxTransfer applies), NPSS above
// 31 keeps 32 states. MDTS 31 is the largest taken as a limit.
func TestIdentifyAnomaliesAtOpen(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func([]byte)
		want map[IdentifyAnomaly]uint64
	}{
		{"MDTS 200", func(b []byte) { b[77] = 200 }, map[IdentifyAnomaly]uint64{BadMDTS: 1}},
		{"MDTS 32", func(b []byte) { b[77] = 32 }, map[IdentifyAnomaly]uint64{BadMDTS: 1}},
		{"MDTS 31", func(b []byte) { b[77] = 31 }, nil},
		{"MDTS 40 and NPSS 255", func(b []byte) { b[77], b[263] = 40, 255 }, map[IdentifyAnomaly]uint64{BadMDTS: 1, BadNPSS: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := nvmetest.NewController(t, nvmetest.Config{})
			f := m.Inject(&nvmetest.Fault{Match: nvmetest.MatchIdentify(1), Count: 1, Identify: tc.edit})
			c, err := Open(m, &Options{MaxTransfer: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if f.Hits() != 1 {
				t.Fatalf("Open's Identify Controller was not edited (%d hits)", f.Hits())
			}
			if c.MaxTransfer() != 1<<20 {
				t.Errorf("MaxTransfer = %d, want Options.MaxTransfer 1 MiB", c.MaxTransfer())
			}
			wantAnomalies(t, c, tc.want)
		})
	}
}

// A well-behaved controller counts nothing, through every Identify read.
func TestIdentifyAnomaliesGoodData(t *testing.T) {
	c, _ := openModel(t, nvmetest.Config{
		ShadowDoorbells: true, MDTS: 5,
		Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}, {Blocks: 1000, LBAShift: 12}},
	}, nil)
	ctx := context.Background()
	if _, err := c.IdentifyController(ctx); err != nil {
		t.Fatal(err)
	}
	for nsid := uint32(1); nsid <= 2; nsid++ {
		if _, err := c.Namespace(nsid); err != nil {
			t.Fatal(err)
		}
	}
	if ids, err := c.ActiveNamespaces(ctx); err != nil || len(ids) != 2 {
		t.Fatalf("ActiveNamespaces = %v, %v", ids, err)
	}
	wantAnomalies(t, c, nil)
}

func TestIdentifyAnomalyString(t *testing.T) {
	seen := map[string]bool{}
	for k := range NumIdentifyAnomalies {
		s := k.String()
		if s == "" || strings.HasPrefix(s, "IdentifyAnomaly(") || seen[s] {
			t.Errorf("IdentifyAnomaly %d: name %q missing or repeated", k, s)
		}
		seen[s] = true
	}
	if s := NumIdentifyAnomalies.String(); s != "IdentifyAnomaly(11)" {
		t.Errorf("String of an unknown kind = %q", s)
	}
}
