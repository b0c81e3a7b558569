package hwtest

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nvmepoll/nvmepoll/nvme"
	"github.com/nvmepoll/nvmepoll/queue"
	"github.com/nvmepoll/nvmepoll/vfio"
	"github.com/nvmepoll/nvmepoll/vfio/dma"
	"github.com/nvmepoll/nvmepoll/vfio/mmio"
)

// Reliability tests against QEMU's controller: media errors from blkdebug,
// a function reset in the middle of I/O, a writer killed with SIGKILL, many
// Open/Close rounds, and a run as a non-root user.

// vfioNVMe is nvme.Device over a vfio.Device the test keeps, so it can
// reset the function behind the driver's back.
type vfioNVMe struct {
	vd  *vfio.Device
	bar mmio.Region
}

func (d *vfioNVMe) Read32(off int) uint32     { return d.bar.Read32(off) }
func (d *vfioNVMe) Write32(off int, v uint32) { d.bar.Write32(off, v) }
func (d *vfioNVMe) DMA() dma.Allocator        { return d.vd.DMA() }
func (d *vfioNVMe) Close() error              { return d.vd.Close() }
func (d *vfioNVMe) Doorbell(off int) (queue.Doorbell, error) {
	w, err := d.bar.Word(off)
	if err != nil {
		return nil, err
	}
	return queue.NewMMIODoorbell(w), nil
}

func openWithVFIO(t *testing.T, addr string, opts *nvme.Options) (*nvme.Controller, *vfio.Device) {
	t.Helper()
	vd, err := vfio.Open(addr)
	if err != nil {
		t.Fatal(err)
	}
	bar, err := vd.BAR(0)
	if err != nil {
		vd.Close()
		t.Fatal(err)
	}
	c, err := nvme.Open(&vfioNVMe{vd: vd, bar: bar}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, vd
}

// unitData is what the in-process verify loop writes to unit lba at
// sequence seq: every 8 bytes depend on both, so stale, misplaced or torn
// data never matches.
func unitData(b []byte, lba, seq uint64) {
	for i := 0; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], lba<<32^seq<<8^uint64(i))
	}
}

// A function-level reset (VFIO_DEVICE_RESET) while synchronous I/O is in
// flight on several queue pairs: the driver sees CSTS.RDY drop, resets and
// re-creates its queues, resubmits what was outstanding, and every block
// reads back as last written.
func TestReliabilityVFIOResetDuringIO(t *testing.T) {
	addr := testDevice(t)
	c, vd := openWithVFIO(t, addr, &nvme.Options{SyncQueues: 4, IOTimeout: 5 * time.Second, AbortTimeout: time.Second})
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	const workers, units, unit = 4, 64, 4096
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ios, mismatches int
	var firstErr error
	stop := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seq := make([]uint64, units)
			wbuf, rbuf, want := make([]byte, unit), make([]byte, unit), make([]byte, unit)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				u := uint64(i % units)
				lba := uint64(w*units)*unit/uint64(ns.BlockSize()) + u*unit/uint64(ns.BlockSize())
				seq[u]++
				unitData(wbuf, lba, seq[u])
				err := ns.WriteBlocks(context.Background(), lba, wbuf)
				if err == nil {
					err = ns.ReadBlocks(context.Background(), lba, rbuf)
				}
				mu.Lock()
				ios += 2
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("worker %d lba %d: %w", w, lba, err)
				}
				if err == nil {
					unitData(want, lba, seq[u])
					if string(rbuf) != string(want) {
						mismatches++
					}
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(time.Second)
	if err := vd.Reset(); err != nil {
		close(stop)
		wg.Wait()
		t.Fatalf("vfio Reset: %v", err)
	}
	t.Logf("function reset issued after 1 s of I/O")
	time.Sleep(4 * time.Second)
	close(stop)
	wg.Wait()
	k := c.Counters()
	t.Logf("%d I/Os, %d mismatches; counters %+v", ios, mismatches, k)
	if firstErr != nil {
		t.Errorf("I/O failed across the reset: %v", firstErr)
	}
	if mismatches != 0 {
		t.Errorf("%d reads did not return what was written", mismatches)
	}
	if k.Resets < 1 {
		t.Errorf("the driver did not reset the controller after the function reset: %+v", k)
	}
	// After the workload, the controller answers admin commands too.
	if _, err := c.IdentifyController(context.Background()); err != nil {
		t.Errorf("Identify after recovery: %v", err)
	}
}

// blkdebugDevice is the controller whose namespace sits on QEMU's blkdebug
// driver with EIO injected at fixed sectors (scripts/test.sh runs the guest
// with it; see blkdebugArgs in docs/RELIABILITY.md).
const (
	blkdebugSerial   = "blkdebug"
	blkdebugReadLBA  = 2048 // read_aio at sector 2048 fails
	blkdebugWriteLBA = 4096 // write_aio at sector 4096 fails
)

// Media errors surface with their LBA: QEMU turns the backend's EIO into
// Unrecovered Read Error and Write Fault, and the driver names the block.
func TestReliabilityMediaErrors(t *testing.T) {
	addr := testDeviceBySerial(t, blkdebugSerial)
	c, err := nvme.OpenPCI(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	bs := ns.BlockSize()
	ctx := context.Background()
	check := func(op string, err error, lba uint64, want error) {
		t.Helper()
		var se *nvme.StatusError
		if !errors.As(err, &se) || !errors.Is(err, want) {
			t.Errorf("%s at lba %d: %v, want a status error matching %v", op, lba, err, want)
			return
		}
		if !se.HasLBA || se.LBA != lba || !strings.Contains(err.Error(), fmt.Sprintf("lba %d", lba)) {
			t.Errorf("%s error %q (LBA %d, has %v): want lba %d named", op, err, se.LBA, se.HasLBA, lba)
		}
		t.Logf("%s: %v", op, err)
	}
	check("read", ns.ReadBlocks(ctx, blkdebugReadLBA*512/uint64(bs), make([]byte, bs)), blkdebugReadLBA*512/uint64(bs), nvme.ErrUnrecoveredRead)
	check("write", ns.WriteBlocks(ctx, blkdebugWriteLBA*512/uint64(bs), make([]byte, bs)), blkdebugWriteLBA*512/uint64(bs), nvme.ErrWriteFault)
	// Blocks beside them work.
	if err := ns.ReadBlocks(ctx, 0, make([]byte, bs)); err != nil {
		t.Errorf("read of lba 0: %v", err)
	}
	if err := ns.WriteBlocks(ctx, 1, make([]byte, bs)); err != nil {
		t.Errorf("write of lba 1: %v", err)
	}
}

// verify's block header (cmd/nvmectl/verify.go): magic, CRC-32C with the
// CRC field zero, LBA, sequence number, writer.
func checkVerifyBlock(b []byte, lba, minSeq uint64) error {
	le := binary.LittleEndian
	if m := le.Uint32(b[0:]); m != 0x5650564e {
		return fmt.Errorf("lba %d: no verify header (magic %#x): an acknowledged write was lost", lba, m)
	}
	crc := le.Uint32(b[4:])
	le.PutUint32(b[4:], 0)
	if got := crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)); got != crc {
		return fmt.Errorf("lba %d: checksum mismatch: torn or corrupted", lba)
	}
	if l := le.Uint64(b[8:]); l != lba {
		return fmt.Errorf("lba %d holds the block of lba %d", lba, l)
	}
	if s := le.Uint64(b[16:]); s < minSeq {
		return fmt.Errorf("lba %d holds write #%d, older than the acknowledged #%d", lba, s, minSeq)
	}
	return nil
}

// A writer killed with SIGKILL in the middle of its writes, then a fresh
// open: the controller comes up, and every write acknowledged before the
// kill reads back intact (a newer write that was in flight may have landed
// instead: its sequence number is higher).
func TestReliabilitySIGKILLMidWrite(t *testing.T) {
	addr := testDevice(t)
	bin := nvmectlBin(t)
	log := filepath.Join(t.TempDir(), "acks")
	cmd := exec.Command(bin, "perf", addr, "--verify", "--force", "-q", "16", "-o", "4k", "-j", "2", "-t", "120",
		"--size", "8M", "--mix", "20", "--ack-log", log)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill once a few hundred writes are acknowledged.
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(log)
		if n := strings.Count(string(b), "\n"); n >= 500 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("nvmectl acknowledged under 500 writes in 60 s; stderr: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	err := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("nvmectl did not die of SIGKILL: %v", err)
	}
	acked := map[uint64]uint64{}
	f, err := os.Open(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := 0
	for sc := bufio.NewScanner(f); sc.Scan(); lines++ {
		var lba, blocks, seq uint64
		if _, err := fmt.Sscanf(sc.Text(), "%d %d %d", &lba, &blocks, &seq); err != nil {
			continue // the last line may be cut by the kill
		}
		for i := range blocks {
			acked[lba+i] = max(acked[lba+i], seq)
		}
	}
	f.Close()

	c, err := nvme.OpenPCI(addr, nil)
	if err != nil {
		t.Fatalf("open after the kill: %v", err)
	}
	defer c.Close()
	ns, err := c.Namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, ns.BlockSize())
	bad := 0
	for lba, seq := range acked {
		if err := ns.ReadBlocks(context.Background(), lba, b); err != nil {
			t.Fatalf("read lba %d: %v", lba, err)
		}
		if err := checkVerifyBlock(b, lba, seq); err != nil {
			if bad++; bad <= 5 {
				t.Error(err)
			}
		}
	}
	t.Logf("killed after %d acknowledged writes; %d blocks checked, %d bad", lines, len(acked), bad)
}

// Open and Close the whole controller many times: file descriptors,
// mappings and locked memory return to where they started, and no
// goroutine is left. CI does 100 rounds: one takes ~0.35 s under TCG
// (docs/RELIABILITY.md); NVMEPOLL_OPENCLOSE_ROUNDS=1000 is the full check.
func TestReliabilityOpenCloseRounds(t *testing.T) {
	addr := testDevice(t)
	rounds := 100
	if s := os.Getenv("NVMEPOLL_OPENCLOSE_ROUNDS"); s != "" {
		rounds, _ = strconv.Atoi(s)
	}
	round := func(i int) {
		c, err := nvme.OpenPCI(addr, nil)
		if err != nil {
			t.Fatalf("round %d: Open: %v", i, err)
		}
		defer c.Close() // on a failure too: later tests need the group
		ns, err := c.Namespace(1)
		if err == nil {
			err = ns.ReadBlocks(context.Background(), uint64(i+1)%64, make([]byte, ns.BlockSize()))
		}
		if err != nil {
			t.Fatalf("round %d: read: %v", i, err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", i, err)
		}
	}
	round(-1)
	runtime.GC()
	fds, maps, locked, gor := countFDs(t), readMappings(t), vmLck(t), runtime.NumGoroutine()
	start := time.Now()
	for i := range rounds {
		round(i)
	}
	took := time.Since(start)
	runtime.GC()
	t.Logf("%d Open/read/Close rounds in %v (%v each)", rounds, took.Round(time.Millisecond), (took / time.Duration(max(rounds, 1))).Round(time.Microsecond))
	if got := countFDs(t); got != fds {
		t.Errorf("open fds: %d before, %d after %d rounds", fds, got, rounds)
	}
	after := readMappings(t)
	if after.locked != maps.locked || after.io != maps.io || len(after.vfio) != 0 {
		t.Errorf("mappings: %d locked, %d device before; %d locked, %d device, %d vfio after %d rounds",
			maps.locked, maps.io, after.locked, after.io, len(after.vfio), rounds)
	}
	if got := vmLck(t); got != locked {
		t.Errorf("VmLck: %s before, %s after %d rounds", locked, got, rounds)
	}
	if g := runtime.NumGoroutine(); g > gor {
		t.Errorf("goroutines: %d before, %d after %d rounds", gor, g, rounds)
	}
}

// nonRootUID is the user the non-root test runs nvmectl as (the guest has
// no user database: a number is enough).
const nonRootUID = 1000

// Running as a non-root user, as the README's trust model says: it fails
// with a message naming the fix until the group file belongs to the user
// and the memlock limit is raised, then works.
func TestReliabilityNonRoot(t *testing.T) {
	addr := testDevice(t)
	bin := nvmectlBin(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to change users")
	}
	link, err := os.Readlink(filepath.Join(sysPCI, addr, "iommu_group"))
	if err != nil {
		t.Fatal(err)
	}
	node := "/dev/vfio/" + filepath.Base(link)
	st, err := os.Stat(node)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	t.Cleanup(func() { os.Chown(node, int(sys.Uid), int(sys.Gid)) })
	// The binary must be reachable by the user: /payload is.
	run := func(memlock uint64) (string, error) {
		// The child inherits the limit; raise the hard limit as root.
		var old unix.Rlimit
		unix.Getrlimit(unix.RLIMIT_MEMLOCK, &old)
		defer unix.Setrlimit(unix.RLIMIT_MEMLOCK, &old)
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: memlock, Max: memlock}); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "id-ctrl", addr)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nonRootUID, Gid: nonRootUID}}
		cmd.Dir = "/"
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if err := os.Chown(node, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(node, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(64 << 20)
	t.Logf("uid %d, %s owned by root: %v\n%s", nonRootUID, node, err, out)
	if err == nil || !strings.Contains(out, "permission denied") || !strings.Contains(out, "chown") {
		t.Errorf("before chown: want a failure naming permission and chown, got %v:\n%s", err, out)
	}
	if err := os.Chown(node, nonRootUID, nonRootUID); err != nil {
		t.Fatal(err)
	}
	out, err = run(64 << 10)
	t.Logf("uid %d owns %s, memlock 64 KiB: %v\n%s", nonRootUID, node, err, out)
	if err == nil || !strings.Contains(out, "RLIMIT_MEMLOCK") || !strings.Contains(out, "ulimit -l") {
		t.Errorf("low memlock: want a failure naming RLIMIT_MEMLOCK and the fix, got %v:\n%s", err, out)
	}
	out, err = run(256 << 20)
	t.Logf("uid %d owns %s, memlock 256 MiB: %v\n%s", nonRootUID, node, err, out)
	if err != nil || !strings.Contains(out, "QEMU") {
		t.Errorf("after chown and ulimit -l: want Identify output, got %v:\n%s", err, out)
	}
}

// nvmectl perf --verify on four queue pairs at once: every block read
// carries the LBA and the sequence number of its last acknowledged write.
func TestReliabilityVerify(t *testing.T) {
	addr := testDevice(t)
	out := mustNvmectl(t, nil, "perf", addr, "--verify", "--force", "-q", "16", "-o", "4k", "-j", "4", "-t", "5", "--size", "32M")
	t.Logf("%s", out)
	if !strings.Contains(out, " 0 mismatches, 0 I/O errors") || strings.Contains(out, " 0 blocks checked") {
		t.Errorf("verify did not run clean:\n%s", out)
	}
}
