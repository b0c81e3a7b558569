package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
)

// Each kind of corruption a device can commit is reported as a mismatch
// that says what happened.
func TestCheckBlock(t *testing.T) {
	good := make([]byte, 512)
	fillBlock(good, 77, 5, 1)
	if err := checkBlock(append([]byte(nil), good...), 77, 5); err != nil {
		t.Fatalf("intact block: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(b []byte)
		lba  uint64
		seq  uint64
		want string
	}{
		{"never written", func(b []byte) { clear(b) }, 77, 5, "never written"},
		{"flipped bit", func(b []byte) { b[300] ^= 4 }, 77, 5, "checksum"},
		{"wrong place", func(b []byte) {}, 78, 5, "written for lba 77"},
		{"stale write", func(b []byte) {}, 77, 6, "write #5, the last acknowledged write was #6"},
	} {
		b := append([]byte(nil), good...)
		tc.mod(b)
		err := checkBlock(b, tc.lba, tc.seq)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// perf --verify on every queue pair of a healthy controller: no mismatch,
// every acknowledged write logged, and the log agrees with the disk.
func TestPerfVerify(t *testing.T) {
	m := sharedSim(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}}})
	log := filepath.Join(t.TempDir(), "acks")
	out := mustRun(t, nil, "perf", "sim", "--verify", "-q", "8", "-o", "2k", "-j", "4", "-t", "0.3", "--ack-log", log)
	if !strings.Contains(out, " 0 mismatches, 0 I/O errors") {
		t.Fatalf("verify output:\n%s", out)
	}
	var writes, checked int
	fmt.Sscanf(out[strings.Index(out, "verify: "):], "verify: %d writes, %d reads, %d blocks", &writes, new(int), &checked)
	if writes == 0 || checked == 0 {
		t.Fatalf("verify did %d writes, checked %d blocks:\n%s", writes, checked, out)
	}
	// The log holds one line per acknowledged write, and the newest
	// sequence number of each LBA is what the disk holds.
	f, err := os.Open(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	last := map[uint64]uint64{}
	lines := 0
	for sc := bufio.NewScanner(f); sc.Scan(); lines++ {
		var lba, blocks, seq uint64
		if _, err := fmt.Sscanf(sc.Text(), "%d %d %d", &lba, &blocks, &seq); err != nil {
			t.Fatalf("ack log line %q: %v", sc.Text(), err)
		}
		for i := range blocks {
			last[lba+i] = max(last[lba+i], seq)
		}
	}
	if lines != writes {
		t.Errorf("ack log has %d lines, verify acknowledged %d writes", lines, writes)
	}
	blk := make([]byte, 512)
	for lba, seq := range last {
		m.Namespace(1).ReadAt(blk, int64(lba)*512)
		if err := checkBlock(blk, lba, seq); err != nil {
			t.Errorf("after the run: %v", err)
			break
		}
	}
}

// A device that loses data: blocks zeroed behind the driver's back are
// mismatches, and perf exits non-zero naming the first.
func TestPerfVerifyCatchesCorruption(t *testing.T) {
	m := sharedSim(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}}})
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		zero := make([]byte, 16<<10)
		for !stop.Load() {
			m.Namespace(1).WriteAt(zero, 0)
			time.Sleep(time.Millisecond)
		}
	}()
	out, errs, code := nvmectl(t, nil, "perf", "sim", "--verify", "-q", "4", "-o", "4k", "--size", "16K", "-t", "0.3")
	stop.Store(true)
	wg.Wait()
	if code != exitFailure || !strings.Contains(errs, "mismatches, the first: queue 1: lba") {
		t.Fatalf("exit %d, stderr %q, stdout:\n%s\nwant exit %d naming the first mismatch", code, errs, out, exitFailure)
	}
	if strings.Contains(out, " 0 mismatches") {
		t.Errorf("output claims no mismatch:\n%s", out)
	}
}

// The region must hold every I/O in flight, or verify could not keep two
// commands off the same blocks.
func TestPerfVerifyRegionTooSmall(t *testing.T) {
	_, errs, code := nvmectl(t, nil, "perf", "sim", "--verify", "-q", "8", "-o", "4k", "--size", "16K", "-t", "0.1")
	if code != exitUsage || !strings.Contains(errs, "fewer than -j 1 x -q 8") {
		t.Errorf("exit %d, stderr %q: want a usage error naming -j and -q", code, errs)
	}
}
