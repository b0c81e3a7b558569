package hwtest

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/nvmepoll/nvmepoll/nvme"
	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// openNVMe brings up the controller at addr through VFIO and shuts it down
// when the test ends. A named device that cannot be brought up fails the
// test.
func openNVMe(t *testing.T, addr string) *nvme.Controller {
	t.Helper()
	c, err := nvme.OpenPCI(addr, nil)
	if err != nil {
		t.Fatalf("nvme.OpenPCI(%s): %v", addr, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// TestNVMeBringUp opens the controller, checks Identify Controller against
// what QEMU was started with, shuts it down cleanly, and opens it again:
// the second bring-up proves the shutdown left the controller usable.
func TestNVMeBringUp(t *testing.T) {
	addr := testDevice(t)
	for round := 1; round <= 2; round++ {
		c, err := nvme.OpenPCI(addr, nil)
		if err != nil {
			t.Fatalf("round %d: nvme.OpenPCI(%s): %v", round, addr, err)
		}
		id := c.Identify()
		t.Logf("round %d: %v, VS %v, %q %q fw %q, MDTS %d, NN %d, max transfer %d", round,
			c.CAP(), c.Version(), id.MN, id.SN, id.FR, id.MDTS, id.NN, c.MaxTransfer())
		if id.NN < 1 {
			t.Errorf("NN = %d, want at least 1 namespace", id.NN)
		}
		if serial := expectedSerial(t, addr); serial != "" && id.SN != serial {
			t.Errorf("serial %q, want %q", id.SN, serial)
		}
		if inQEMU() {
			if id.MN != "QEMU NVMe Ctrl" {
				t.Errorf("model %q, want \"QEMU NVMe Ctrl\"", id.MN)
			}
			if id.MDTS != 7 {
				t.Errorf("MDTS %d, want QEMU's default 7", id.MDTS)
			}
			if c.MaxTransfer() != 512<<10 {
				t.Errorf("MaxTransfer %d, want 512 KiB (MDTS 7)", c.MaxTransfer())
			}
		}
		if sq, cq := c.QueuesGranted(); sq < 1 || cq < 1 {
			t.Errorf("queues granted %d/%d, want at least one of each", sq, cq)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("round %d: Close (shutdown): %v", round, err)
		}
		if err := c.Close(); err != nil {
			t.Errorf("round %d: second Close: %v", round, err)
		}
	}
}

// expectedSerial is the serial the controller at addr was started with:
// NVMEPOLL_TEST_SERIAL if set, else its entry in NVMEPOLL_TEST_DEVICES
// (the guest's "serial=address" list), else "" (not known).
func expectedSerial(t *testing.T, addr string) string {
	if s := os.Getenv("NVMEPOLL_TEST_SERIAL"); s != "" {
		return s
	}
	devs, err := parseDeviceList(os.Getenv("NVMEPOLL_TEST_DEVICES"))
	if err != nil {
		t.Fatalf("NVMEPOLL_TEST_DEVICES: %v", err)
	}
	for serial, a := range devs {
		if a == addr {
			return serial
		}
	}
	return ""
}

// readBack writes random data at a few sizes and LBAs of ns and reads each
// write back through a separate buffer. On QEMU a DMA to an unmapped IOVA
// completes with status 0 and loses the data, so only this check catches it.
func readBack(t *testing.T, ns *nvme.Namespace, sizes []int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	bs := ns.BlockSize()
	for _, size := range sizes {
		size = (size + bs - 1) / bs * bs
		nb := uint64(size / bs)
		if nb > ns.Blocks() {
			continue
		}
		for _, lba := range []uint64{0, rng.Uint64N(ns.Blocks() - nb + 1), ns.Blocks() - nb} {
			want := make([]byte, size)
			for i := range want {
				want[i] = byte(rng.Uint32())
			}
			if err := ns.WriteBlocks(ctx, lba, want); err != nil {
				t.Fatalf("write %d bytes at lba %d: %v", size, lba, err)
			}
			got := make([]byte, size)
			if err := ns.ReadBlocks(ctx, lba, got); err != nil {
				t.Fatalf("read %d bytes at lba %d: %v", size, lba, err)
			}
			if !bytes.Equal(got, want) {
				i := 0
				for i < size && got[i] == want[i] {
					i++
				}
				t.Fatalf("%d bytes at lba %d: read back differs from byte %d on (lost DMA?)", size, lba, i)
			}
		}
	}
}

func TestNVMeReadWrite(t *testing.T) {
	c := openNVMe(t, testDevice(t))
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("namespace 1: %d blocks of %d bytes", ns.Blocks(), ns.BlockSize())
	// One block to past MDTS, so the synchronous path splits.
	readBack(t, ns, []int{512, 4096, 12288, 128 << 10, 512 << 10, 1<<20 + 4096})

	// Bad input names the numbers and never reaches the device.
	err = ns.ReadBlocks(context.Background(), ns.Blocks(), make([]byte, ns.BlockSize()))
	if !errors.Is(err, nvme.ErrInvalidArgument) {
		t.Errorf("read past the end: %v, want ErrInvalidArgument", err)
	}
	if _, err := c.Namespace(0); !errors.Is(err, nvme.ErrInvalidArgument) {
		t.Errorf("Namespace(0): %v, want ErrInvalidArgument", err)
	}
}

// TestNVMeAsync submits reads and writes on a queue pair of its own with
// pool buffers and reaps them by polling.
func TestNVMeAsync(t *testing.T) {
	c := openNVMe(t, testDevice(t))
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	qp, err := c.NewQueuePair(32)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := qp.Close(); err != nil {
			t.Errorf("queue pair Close: %v", err)
		}
	}()
	const n = 16
	pool, err := c.NewPool(2*n, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	delivered := 0
	done := func(r *nvme.Request) {
		delivered++
		if r.Err != nil {
			t.Errorf("%v at lba %d: %v", r.Opcode, r.LBA, r.Err)
		}
	}
	var w, r [n]nvme.Request
	run := func(reqs []nvme.Request) {
		delivered = 0
		for i := range reqs {
			if err := qp.Submit(&reqs[i]); err != nil {
				t.Fatalf("submit %d: %v", i, err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for delivered < len(reqs) {
			if _, err := qp.PollContext(ctx, 1, n); err != nil {
				t.Fatalf("poll with %d of %d delivered: %v", delivered, len(reqs), err)
			}
		}
	}
	bpp := uint64(4096 / ns.BlockSize())
	for i := range n {
		wb, _ := pool.Get()
		rb, _ := pool.Get()
		for j := range wb.Bytes {
			wb.Bytes[j] = byte(i ^ j*31)
		}
		lba := uint64(i*3) * bpp
		w[i] = nvme.Request{Opcode: nvme.NVMWrite, Namespace: ns, LBA: lba, Buf: wb, Done: done}
		r[i] = nvme.Request{Opcode: nvme.NVMRead, Namespace: ns, LBA: lba, Buf: rb, Done: done}
	}
	run(w[:])
	run(r[:])
	for i := range n {
		if !bytes.Equal(w[i].Buf.Bytes, r[i].Buf.Bytes) {
			t.Errorf("request %d (lba %d): read back differs", i, r[i].LBA)
		}
	}
}

// TestNVMeSmallMDTS runs the read-back on QEMU's mdts=2 controller, where
// every transfer above 16 KiB is split.
func TestNVMeSmallMDTS(t *testing.T) {
	c := openNVMe(t, testDeviceBySerial(t, "mdts2"))
	if c.MaxTransfer() != 16<<10 {
		t.Errorf("MaxTransfer %d, want 16 KiB (MDTS 2)", c.MaxTransfer())
	}
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	readBack(t, ns, []int{4096, 16 << 10, 16<<10 + 512, 200 << 10})
}

// TestNVMeOneQueue runs on QEMU's max_ioqpairs=1 controller: the
// synchronous API must live with the single I/O queue it is granted.
func TestNVMeOneQueue(t *testing.T) {
	c := openNVMe(t, testDeviceBySerial(t, "oneq"))
	if sq, cq := c.QueuesGranted(); sq != 1 || cq != 1 {
		t.Errorf("queues granted %d/%d, want 1/1", sq, cq)
	}
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	// The caller may take the only queue; synchronous I/O then waits
	// for it to come back... so give it back before reading.
	qp, err := c.NewQueuePair(8)
	if err != nil {
		t.Fatalf("the one queue pair: %v", err)
	}
	if _, err := c.NewQueuePair(8); !errors.Is(err, nvme.ErrQueueFull) {
		t.Errorf("a second queue pair on a one-queue controller: %v, want ErrQueueFull", err)
	}
	if err := qp.Close(); err != nil {
		t.Fatal(err)
	}
	readBack(t, ns, []int{4096, 64 << 10})
}

// TestNVMeBlockSizes reads and writes both namespaces of the lbaf
// controller: 512-byte and 4 KiB blocks.
func TestNVMeBlockSizes(t *testing.T) {
	c := openNVMe(t, testDeviceBySerial(t, "lbaf"))
	for nsid, bs := range map[uint32]int{1: 512, 2: 4096} {
		ns, err := c.Namespace(nsid)
		if err != nil {
			t.Fatal(err)
		}
		if ns.BlockSize() != bs {
			t.Errorf("namespace %d: block size %d, want %d", nsid, ns.BlockSize(), bs)
		}
		readBack(t, ns, []int{bs, 3 * bs, 256 << 10})
	}
}

// TestNVMeLazyCQHead runs 1000 write-then-read rounds one command at a time
// on a 2-entry SQ, whose CQ (256 entries by default) the controller laps
// about eight times, and checks every read and that the CQ head doorbell
// was written only when the slack ran out: once per 255 completions
// instead of once per completion. QEMU stops posting to a CQ it believes
// full, so a head written too late would show as a timeout here.
func TestNVMeLazyCQHead(t *testing.T) {
	c := openNVMe(t, testDevice(t))
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	qp, err := c.NewQueuePairWith(nvme.QueueOptions{Depth: 2, Mode: nvme.ModePoll})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := qp.Close(); err != nil {
			t.Errorf("queue pair Close: %v", err)
		}
	}()
	wb, rb := pageBuffers(t, c)
	bpp := uint64(4096 / ns.BlockSize())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	before := qp.Doorbells()
	const rounds = 1000
	for i := range rounds {
		for j := range wb.Bytes {
			wb.Bytes[j] = byte(i + j*7)
		}
		lba := uint64(i%64) * bpp
		if err := execOne(ctx, qp, &nvme.Request{Opcode: nvme.NVMWrite, Namespace: ns, LBA: lba, Buf: wb}); err != nil {
			t.Fatalf("round %d: write at lba %d: %v", i, lba, err)
		}
		if err := execOne(ctx, qp, &nvme.Request{Opcode: nvme.NVMRead, Namespace: ns, LBA: lba, Buf: rb}); err != nil {
			t.Fatalf("round %d: read at lba %d: %v", i, lba, err)
		}
		if !bytes.Equal(wb.Bytes, rb.Bytes) {
			t.Fatalf("round %d: lba %d read back differs", i, lba)
		}
	}
	db := qp.Doorbells()
	heads := db.CQ.Updates - before.CQ.Updates
	if lo, hi := uint64(2*rounds/255-1), uint64(2*rounds/255+1); heads < lo || heads > hi {
		t.Errorf("%d completions on a 2-entry SQ with a 256-entry CQ: %d CQ head updates, want %d..%d", 2*rounds, heads, lo, hi)
	}
	if s := qp.Stats(); s.Bad() != 0 {
		t.Errorf("%d bad CQEs", s.Bad())
	}
	t.Logf("%d commands: CQ head updates %d (MMIO %d), SQ MMIO %d", 2*rounds, heads, db.CQ.MMIOWrites-before.CQ.MMIOWrites, db.SQ.MMIOWrites-before.SQ.MMIOWrites)
}

// execOne submits r on qp and polls until it completes.
func execOne(ctx context.Context, qp *nvme.QueuePair, r *nvme.Request) error {
	done := false
	r.Done = func(*nvme.Request) { done = true }
	if err := qp.Submit(r); err != nil {
		return err
	}
	for !done {
		if _, err := qp.PollContext(ctx, 1, 1); err != nil {
			return err
		}
	}
	return r.Err
}

// pageBuffers returns two 4 KiB DMA buffers, one to write from and one to
// read back into, from a pool closed when the test ends.
func pageBuffers(t *testing.T, c *nvme.Controller) (wb, rb dma.Buffer) {
	t.Helper()
	pool, err := c.NewPool(2, 4096)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	wb, _ = pool.Get()
	rb, _ = pool.Get()
	return wb, rb
}
