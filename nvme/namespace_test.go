package nvme

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
)

// openModel brings up a Controller on a fresh model and closes both at the
// end of the test, checking that the model saw no DMA to unmapped memory
// (which would mean lost data, as on QEMU).
func openModel(t testing.TB, cfg nvmetest.Config, opts *Options) (*Controller, *nvmetest.Controller) {
	t.Helper()
	m := nvmetest.NewController(t, cfg)
	c, err := Open(m, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if n := m.DMAFaults(); n != 0 {
			t.Errorf("model saw %d DMA accesses to unmapped IOVAs", n)
		}
	})
	return c, m
}

func TestIdentifyEndToEnd(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{
		SerialNumber: "SN-1234", ModelNumber: "QEMU NVMe Ctrl", MDTS: 5,
		Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}, {Blocks: 1000, LBAShift: 12}},
	}, nil)
	id := c.Identify()
	if id.SN != "SN-1234" || id.MN != "QEMU NVMe Ctrl" || id.NN != 2 || id.MDTS != 5 {
		t.Errorf("Identify Controller: SN %q MN %q NN %d MDTS %d; want SN-1234, QEMU NVMe Ctrl, 2, 5", id.SN, id.MN, id.NN, id.MDTS)
	}
	if c.MaxTransfer() != 128<<10 {
		t.Errorf("MaxTransfer = %d, want 128 KiB (MDTS 5 of 4 KiB pages)", c.MaxTransfer())
	}
	if c.Version().String() != "1.4.0" {
		t.Errorf("version %v, want 1.4.0", c.Version())
	}
	sq, cq := c.QueuesGranted()
	if sq != 16 || cq != 16 {
		t.Errorf("queues granted %d/%d, want 16/16", sq, cq)
	}
	ids, err := c.ActiveNamespaces(context.Background())
	if err != nil || len(ids) != 2 || ids[0] != 1 || ids[1] != 2 {
		t.Errorf("ActiveNamespaces = %v, %v; want [1 2]", ids, err)
	}
	ns1, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	if ns1.BlockSize() != 512 || ns1.Blocks() != 8192 || ns1.Size() != 8192*512 {
		t.Errorf("namespace 1: %d blocks of %d, want 8192 of 512", ns1.Blocks(), ns1.BlockSize())
	}
	ns2, err := c.Namespace(2)
	if err != nil {
		t.Fatal(err)
	}
	if ns2.BlockSize() != 4096 || ns2.Blocks() != 1000 {
		t.Errorf("namespace 2: %d blocks of %d, want 1000 of 4096", ns2.Blocks(), ns2.BlockSize())
	}
	for _, nsid := range []uint32{0, 3, 0xffffffff} {
		_, err := c.Namespace(nsid)
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), fmt.Sprintf("nsid %d", nsid)) || !strings.Contains(err.Error(), "NN 2") {
			t.Errorf("Namespace(%d): %v; want ErrInvalidArgument naming the nsid and NN 2", nsid, err)
		}
	}
	_ = m
}

func TestReadWriteSmall(t *testing.T) {
	c, _ := openModel(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}}}, nil)
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("nvmepoll"), 512) // 4 KiB
	if n, err := ns.WriteAt(want, 4096); err != nil || n != len(want) {
		t.Fatalf("WriteAt: %d, %v", n, err)
	}
	got := make([]byte, len(want))
	if n, err := ns.ReadAt(got, 4096); err != nil || n != len(got) {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read back differs from what was written")
	}
	// io.ReaderAt at the end: what is there, then io.EOF.
	size := ns.Size()
	if _, err := ns.WriteAt(want, size-4096); err != nil {
		t.Fatal(err)
	}
	n, err := ns.ReadAt(got, size-2048)
	if n != 2048 || err != io.EOF || !bytes.Equal(got[:2048], want[2048:]) {
		t.Errorf("ReadAt straddling the end: %d, %v; want 2048 bytes of data and io.EOF", n, err)
	}
	if n, err := ns.ReadAt(got, size); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at the end: %d, %v; want 0, io.EOF", n, err)
	}
	if _, err := ns.WriteAt(want, size-2048); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("WriteAt past the end: %v, want ErrInvalidArgument", err)
	}
}

// Every synchronous call after Close fails with ErrClosed. Before, WriteAt
// and Deallocate copied into the bounce buffer the Close had unmapped and
// the process died with SIGSEGV.
func TestSyncAfterClose(t *testing.T) {
	c, _ := openModel(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}}}, nil)
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := ns.WriteAt(buf, 0); err != nil { // leaves an idle sync pair behind
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	calls := map[string]func() error{
		"WriteAt":      func() error { _, err := ns.WriteAt(buf, 0); return err },
		"ReadAt":       func() error { _, err := ns.ReadAt(buf, 0); return err },
		"Compare":      func() error { return ns.Compare(ctx, 0, buf) },
		"Deallocate":   func() error { return ns.Deallocate(ctx, BlockRange{LBA: 0, Blocks: 8}) },
		"WriteZeroes":  func() error { return ns.WriteZeroes(ctx, 0, 8) },
		"Flush":        func() error { return ns.Flush(ctx) },
		"NewQueuePair": func() error { _, err := c.NewQueuePair(4); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// A controller without a transfer limit still takes at most 65536 blocks a command: the
// synchronous path splits there, not only at MaxTransfer, so a 33 MiB write of 512-byte
// blocks goes through as two commands.
func TestSyncSplitsAt65536Blocks(t *testing.T) {
	const blocks = 1 << 17
	c, m := openModel(t, nvmetest.Config{MDTS: -1, Namespaces: []nvmetest.NamespaceConfig{{Blocks: blocks}}},
		&Options{MaxTransfer: 64 << 20})
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ns.MaxTransfer(), 65536*512; got != want {
		t.Fatalf("MaxTransfer = %d, want %d (65536 blocks, below the controller's %d)", got, want, c.MaxTransfer())
	}
	data := bytes.Repeat([]byte("65536bl"), (33<<20)/7+1)[:33<<20]
	before := m.Stats().IOCommands[nvmetest.OpWrite]
	if err := ns.WriteBlocks(context.Background(), 8, data); err != nil {
		t.Fatalf("33 MiB write: %v", err)
	}
	if n := m.Stats().IOCommands[nvmetest.OpWrite] - before; n != 2 {
		t.Errorf("33 MiB write took %d commands, want 2", n)
	}
	got := make([]byte, len(data))
	if err := ns.ReadBlocks(context.Background(), 8, got); err != nil || !bytes.Equal(got, data) {
		t.Errorf("read back: %v, equal %t", err, bytes.Equal(got, data))
	}
}

// TestReadWriteConcurrent writes random data at scattered LBAs, sizes from
// one block to 2 MiB (four times MDTS, so the synchronous path splits),
// from 8 goroutines over 4 queue pairs, and reads every write back.
func TestReadWriteConcurrent(t *testing.T) {
	const blocks = 1 << 16 // 32 MiB of 512-byte blocks
	c, m := openModel(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: blocks}}},
		&Options{SyncQueues: 4})
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int{512, 4096, 4096 + 512, 64 << 10, 512 << 10, 512<<10 + 4096, 2 << 20}
	// Each goroutine owns a disjoint region, so read-back is exact.
	const workers = 8
	region := uint64(blocks / workers)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range 12 {
				size := sizes[(i+w)%len(sizes)]
				nb := uint64(size / 512)
				lba := uint64(w)*region + rng.Uint64N(region-nb+1)
				data := make([]byte, size)
				for j := range data {
					data[j] = byte(rng.Uint32())
				}
				if err := ns.WriteBlocks(context.Background(), lba, data); err != nil {
					errs <- fmt.Errorf("worker %d: write %d bytes at lba %d: %w", w, size, lba, err)
					return
				}
				got := make([]byte, size)
				if err := ns.ReadBlocks(context.Background(), lba, got); err != nil {
					errs <- fmt.Errorf("worker %d: read %d bytes at lba %d: %w", w, size, lba, err)
					return
				}
				if !bytes.Equal(got, data) {
					errs <- fmt.Errorf("worker %d: %d bytes at lba %d read back differently", w, size, lba)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := m.Stats(); s.Errors != 0 {
		t.Errorf("model reported %d command errors", s.Errors)
	}
}

func TestBadInput(t *testing.T) {
	c, _ := openModel(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}}}, nil)
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	buf := make([]byte, 4096)
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"past the end", ns.ReadBlocks(ctx, 9000, buf), "lba 9000+8 is past the end of namespace 1 (8192 blocks)"},
		{"straddles the end", ns.WriteBlocks(ctx, 8190, buf), "lba 8190+8 is past the end"},
		{"zero length", ns.ReadBlocks(ctx, 0, nil), "zero-length"},
		{"not a block multiple", ns.ReadBlocks(ctx, 0, buf[:100]), "100 bytes is not a multiple of the block size 512"},
		{"write zeroes past end", ns.WriteZeroes(ctx, 8192, 1), "lba 8192+1 is past the end"},
		{"deallocate past end", ns.Deallocate(ctx, BlockRange{LBA: 8000, Blocks: 500}), "lba 8000+500"},
		{"deallocate nothing", ns.Deallocate(ctx), "no ranges"},
	}
	_, err = ns.ReadAt(buf, 100)
	cases = append(cases, struct {
		name string
		err  error
		want string
	}{"unaligned offset", err, "offset 100 and length 4096"})
	_, err = ns.WriteAt(buf[:1000], 0)
	cases = append(cases, struct {
		name string
		err  error
		want string
	}{"unaligned length", err, "length 1000"})
	_, err = c.NewQueuePair(1)
	cases = append(cases, struct {
		name string
		err  error
		want string
	}{"depth 1", err, "queue depth 1 is outside 2..2048"})
	_, err = c.NewQueuePair(4096)
	cases = append(cases, struct {
		name string
		err  error
		want string
	}{"depth above MQES+1", err, "queue depth 4096 is outside 2..2048"})
	for _, tc := range cases {
		if !errors.Is(tc.err, ErrInvalidArgument) || !strings.Contains(tc.err.Error(), tc.want) {
			t.Errorf("%s: %v; want ErrInvalidArgument saying %q", tc.name, tc.err, tc.want)
		}
	}
}

func TestFlushWriteZeroesDeallocateCompare(t *testing.T) {
	c, _ := openModel(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 1 << 18}}}, nil)
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data := bytes.Repeat([]byte{0xa5}, 8192)
	if err := ns.WriteBlocksFUA(ctx, 100, data); err != nil {
		t.Fatal(err)
	}
	if err := ns.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if err := ns.Compare(ctx, 100, data); err != nil {
		t.Errorf("Compare of the data just written: %v", err)
	}
	other := bytes.Repeat([]byte{0x5a}, 8192)
	if err := ns.Compare(ctx, 100, other); !errors.Is(err, ErrCompareFailure) {
		t.Errorf("Compare of different data: %v, want ErrCompareFailure", err)
	}
	// Write Zeroes over more than 65536 blocks: split into commands.
	big := bytes.Repeat([]byte{1}, 4096)
	for _, lba := range []uint64{1000, 70000, 140000} {
		if err := ns.WriteBlocks(ctx, lba, big); err != nil {
			t.Fatal(err)
		}
	}
	if err := ns.WriteZeroes(ctx, 1000, 140008-1000); err != nil {
		t.Fatalf("WriteZeroes: %v", err)
	}
	got := make([]byte, 4096)
	for _, lba := range []uint64{1000, 70000, 140000} {
		if err := ns.ReadBlocks(ctx, lba, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, make([]byte, 4096)) {
			t.Errorf("lba %d not zero after WriteZeroes", lba)
		}
	}
	if err := ns.WriteBlocks(ctx, 5000, big); err != nil {
		t.Fatal(err)
	}
	ranges := make([]BlockRange, 300) // more than one command's 256
	for i := range ranges {
		ranges[i] = BlockRange{LBA: uint64(5000 + i*8), Blocks: 8}
	}
	if err := ns.Deallocate(ctx, ranges...); err != nil {
		t.Fatalf("Deallocate: %v", err)
	}
	if err := ns.ReadBlocks(ctx, 5000, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, make([]byte, 4096)) {
		t.Errorf("deallocated blocks do not read as zero")
	}
}

func TestSyncTimeoutCancel(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{}, nil)
	ns, _ := c.Namespace(1)
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Hold: true, Count: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := ns.ReadBlocks(ctx, 0, make([]byte, 512))
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read held by the controller: %v; want ErrTimeout", err)
	}
	// The next read works: the abandoned command's slot and buffer did
	// not leak into it.
	if err := ns.ReadBlocks(context.Background(), 0, make([]byte, 512)); err != nil {
		t.Fatal(err)
	}
}

// A caller waiting for the only synchronous queue pair is not stranded when
// the pair's holder times out and the pair is retired: the waiter gets a
// fresh pair and its read completes.
func TestSyncWaiterSurvivesRetiredPair(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{}, &Options{SyncQueues: 1})
	ns, _ := c.Namespace(1)
	// A dropped completion: Abort cannot end it, so the pair is retired.
	m.Inject(&nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Drop: true, Count: 1})
	held := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		held <- ns.ReadBlocks(ctx, 0, make([]byte, 512))
	}()
	time.Sleep(50 * time.Millisecond) // the held read owns the one pair
	waiter := make(chan error, 1)
	go func() { waiter <- ns.ReadBlocks(context.Background(), 8, make([]byte, 512)) }()
	if err := <-held; !errors.Is(err, ErrTimeout) {
		t.Fatalf("read held by the controller: %v; want ErrTimeout", err)
	}
	select {
	case err := <-waiter:
		if err != nil {
			t.Errorf("waiting read after the pair was retired: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiting read still stranded 10 s after the pair it waited for was retired")
	}
}

// When the caller held every queue id, the synchronous API shared the pairs
// it had; once ids come back it makes more again, up to SyncQueues, so two
// synchronous reads run at once.
func TestSyncQueuesComeBackWithQueueIDs(t *testing.T) {
	c, m := openModel(t, nvmetest.Config{MaxQueuePairs: 2}, &Options{SyncQueues: 2})
	ns, _ := c.Namespace(1)
	ctx := context.Background()
	mine, err := c.NewQueuePair(8)
	if err != nil {
		t.Fatal(err)
	}
	read := func() error { return ns.ReadBlocks(ctx, 0, make([]byte, 512)) }
	// Two reads at once with one id left: the second shares the first's pair.
	slow := &nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Delay: 50 * time.Millisecond, Count: 1}
	m.Inject(slow)
	errs := make(chan error, 2)
	go func() { errs <- read() }()
	time.Sleep(10 * time.Millisecond)
	go func() { errs <- read() }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := mine.Close(); err != nil {
		t.Fatal(err)
	}
	held := &nvmetest.Fault{Match: nvmetest.MatchOpcode(false, nvmetest.OpRead), Hold: true, Count: 2}
	m.Inject(held)
	go func() { errs <- read() }()
	go func() { errs <- read() }()
	for deadline := time.Now().Add(5 * time.Second); held.Hits() < 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if n := held.Hits(); n != 2 {
		t.Errorf("%d of 2 synchronous reads reached the controller at once after the queue id came back, want 2 (SyncQueues 2)", n)
	}
	// Release them (the second one too, if it only now gets a pair).
	for done := 0; done < 2; {
		m.ReleaseHeld()
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
			done++
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestOneQueueController: on a controller that grants a single I/O queue
// (QEMU's max_ioqpairs=1), a caller may take it for asynchronous I/O; the
// synchronous API then says why it cannot run, and works once it is back.
func TestOneQueueController(t *testing.T) {
	c, _ := openModel(t, nvmetest.Config{MaxQueuePairs: 1}, nil)
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	qp, err := c.NewQueuePair(8)
	if err != nil {
		t.Fatalf("the one queue pair: %v", err)
	}
	if _, err := c.NewQueuePair(8); !errors.Is(err, ErrQueueFull) || !strings.Contains(err.Error(), "all 1 I/O queue pairs") {
		t.Errorf("second queue pair: %v, want ErrQueueFull naming the 1 granted", err)
	}
	if err := ns.ReadBlocks(context.Background(), 0, make([]byte, 512)); !errors.Is(err, ErrQueueFull) {
		t.Errorf("synchronous read with no queue left: %v, want ErrQueueFull", err)
	}
	if err := qp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ns.ReadBlocks(context.Background(), 0, make([]byte, 512)); err != nil {
		t.Errorf("synchronous read once the queue is back: %v", err)
	}
}

// TestSyncPathAllocs keeps the synchronous API's steady state free of
// allocations, like the asynchronous hot path: a ReadAt server calls it
// per request, and garbage there is latency later.
func TestSyncPathAllocs(t *testing.T) {
	c, _ := openModel(t, nvmetest.Config{Inline: true}, nil)
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p := make([]byte, 4096)
	for _, tc := range []struct {
		name string
		f    func() error
	}{
		{"ReadAt", func() error { _, err := ns.ReadAt(p, 8192); return err }},
		{"WriteAt", func() error { _, err := ns.WriteAt(p, 8192); return err }},
		{"ReadBlocks", func() error { return ns.ReadBlocks(ctx, 16, p) }},
		{"WriteBlocks", func() error { return ns.WriteBlocks(ctx, 16, p) }},
		{"Flush", func() error { return ns.Flush(ctx) }},
		{"WriteZeroes", func() error { return ns.WriteZeroes(ctx, 16, 8) }},
	} {
		if err := tc.f(); err != nil { // the first call makes the queue pair
			t.Fatalf("%s: %v", tc.name, err)
		}
		var ferr error
		n := testing.AllocsPerRun(200, func() {
			if err := tc.f(); err != nil && ferr == nil {
				ferr = err
			}
		})
		if ferr != nil {
			t.Fatalf("%s: %v", tc.name, ferr)
		}
		if n != 0 {
			t.Errorf("%s of 4 KiB: %v allocations per call, want 0", tc.name, n)
		}
	}
}
