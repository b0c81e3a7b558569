package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nvmepoll/nvmepoll/iopoll"
	"github.com/nvmepoll/nvmepoll/nvme"
)

// perf --verify: a data integrity workload. Every block written carries a
// header (a magic number, its own LBA, a sequence number, the writer) and a
// CRC-32C of the whole block; every block read is checked against it and
// against the sequence number of the last write acknowledged for that
// block. Each queue pair (-j) works on its own stripe of the region and
// never has two commands on the same LBAs in flight, so the expected
// content of each block is always known. A wrong LBA (data landed in the
// wrong place), a stale sequence number (a lost or reordered write), a bad
// checksum (torn or corrupted data) or a block that was never written back
// is a mismatch; any mismatch makes the run fail.
//
// After the timed phase every unit that was written is read back once more,
// so every acknowledged write is checked at least once.

const verifyMagic = 0x5650564e // "NVPV" little endian

// Block header layout, at the start of each block.
const (
	vhMagic  = 0  // uint32
	vhCRC    = 4  // uint32: CRC-32C of the block with this field zero
	vhLBA    = 8  // uint64
	vhSeq    = 16 // uint64: per-writer sequence number, from 1
	vhWriter = 24 // uint32: queue index
	vhSize   = 28
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fillBlock writes block lba, sequence seq, into b (one block).
func fillBlock(b []byte, lba, seq uint64, writer uint32) {
	le := binary.LittleEndian
	// The body: a cheap pattern that differs per block and per write.
	x := lba*0x9e3779b97f4a7c15 ^ seq
	for i := vhSize; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		le.PutUint64(b[i:], x)
	}
	le.PutUint32(b[vhMagic:], verifyMagic)
	le.PutUint32(b[vhCRC:], 0)
	le.PutUint64(b[vhLBA:], lba)
	le.PutUint64(b[vhSeq:], seq)
	le.PutUint32(b[vhWriter:], writer)
	le.PutUint32(b[vhCRC:], crc32.Checksum(b, castagnoli))
}

// checkBlock checks block b read from lba, whose last acknowledged write
// had sequence number seq. It returns nil or what is wrong.
func checkBlock(b []byte, lba, seq uint64) error {
	le := binary.LittleEndian
	if m := le.Uint32(b[vhMagic:]); m != verifyMagic {
		return fmt.Errorf("lba %d: no verify header (magic %#08x): the block was never written, or the write was lost", lba, m)
	}
	crc := le.Uint32(b[vhCRC:])
	le.PutUint32(b[vhCRC:], 0)
	got := crc32.Checksum(b, castagnoli)
	le.PutUint32(b[vhCRC:], crc)
	if got != crc {
		return fmt.Errorf("lba %d: checksum %#08x, the block holds %#08x: corrupted or torn data", lba, got, crc)
	}
	if l := le.Uint64(b[vhLBA:]); l != lba {
		return fmt.Errorf("lba %d holds the block written for lba %d: data landed in the wrong place", lba, l)
	}
	if s := le.Uint64(b[vhSeq:]); s != seq {
		return fmt.Errorf("lba %d holds write #%d, the last acknowledged write was #%d: a lost or reordered write", lba, s, seq)
	}
	return nil
}

// verifyWorker is one queue pair's share of the verify workload.
type verifyWorker struct {
	*perfWorker
	ns       *nvme.Namespace
	bs       int
	lo, n    uint64   // first LBA and number of units of this worker's stripe
	acked    []uint64 // per unit: sequence number of the last acknowledged write, 0 none
	busy     []bool   // per unit: a command is in flight on it
	pending  []uint64 // per request (Tag): sequence number of the write in flight
	seq      uint64
	readPct  int
	rng      *rand.Rand
	final    bool   // in the read-back pass
	sweep    uint64 // next unit of the read-back pass
	verified uint64 // blocks checked
	bad      uint64 // mismatches
	firstBad error
	ackLog   *ackLog
}

// ackLog records acknowledged writes, one "lba seq" line each, so a test
// that kills the process can check them after a fresh open.
type ackLog struct {
	mu sync.Mutex
	f  *os.File
}

func (l *ackLog) record(lba, blocks, seq uint64) {
	if l == nil {
		return
	}
	l.mu.Lock()
	// One write(2) per acknowledged I/O: it is in the kernel (and survives
	// SIGKILL) when record returns.
	fmt.Fprintf(l.f, "%d %d %d\n", lba, blocks, seq)
	l.mu.Unlock()
}

// runVerify is perf --verify: workers as perf's, with verify's choices.
func runVerify(e *env, d *device, ns *nvme.Namespace, c *perfConfig) error {
	var log *ackLog
	if c.ackLog != "" {
		f, err := os.OpenFile(c.ackLog, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		log = &ackLog{f: f}
	}
	clock := iopoll.CalibrateTicks(20 * time.Millisecond)
	units := c.span / (uint64(c.ioSize) / uint64(ns.BlockSize()))
	if units < uint64(c.queues*c.depth) {
		return usagef("--verify: the region holds %d I/Os of %d bytes, fewer than -j %d x -q %d in flight at once", units, c.ioSize, c.queues, c.depth)
	}
	workers := make([]*verifyWorker, c.queues)
	defer func() {
		for _, w := range workers {
			if w != nil {
				w.close()
			}
		}
	}()
	per := units / uint64(c.queues)
	for i := range workers {
		pw, err := newPerfWorker(d, ns, c, i, clock)
		if err != nil {
			return err
		}
		w := &verifyWorker{perfWorker: pw, ns: ns, bs: ns.BlockSize(), n: per, readPct: c.mix, ackLog: log,
			rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))}
		w.lo = c.first + uint64(i)*per*w.blocks
		w.acked, w.busy, w.pending = make([]uint64, per), make([]bool, per), make([]uint64, c.depth)
		w.done = w.completeVerify
		for j := range w.reqs {
			w.reqs[j].Done = w.done
		}
		workers[i] = w
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	begin := time.Now()
	for _, w := range workers {
		wg.Add(1)
		go func() { defer wg.Done(); w.runVerify(&stop) }()
	}
	time.Sleep(time.Duration(c.seconds * float64(time.Second)))
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(begin)

	var reads, writes, verified, bad, errs uint64
	var first error
	for _, w := range workers {
		reads, writes, verified, bad, errs = reads+w.reads, writes+w.writesN, verified+w.verified, bad+w.bad, errs+w.errs
		if first == nil {
			first = w.firstBad
		}
		if first == nil {
			first = w.firstErr
		}
	}
	fmt.Fprintf(e.stdout, "%s namespace %d: verify, %d-byte I/Os, queue depth %d, %d queue pair(s), %.2f s\n",
		d.name, ns.ID(), c.ioSize, c.depth, c.queues, elapsed.Seconds())
	fmt.Fprintf(e.stdout, "verify: %d writes, %d reads, %d blocks checked, %d mismatches, %d I/O errors\n", writes, reads, verified, bad, errs)
	k := d.ctrl.Counters()
	fmt.Fprintf(e.stdout, "controller: %d timeouts, %d aborts, %d resets (%d failed), %d resubmitted, %d failed by a reset, %d bad CQEs, %s\n",
		k.Timeouts, k.Aborts, k.Resets, k.ResetFailures, k.Resubmitted, k.FailedByReset, k.BadCQEs[0]+k.BadCQEs[1]+k.BadCQEs[2]+k.BadCQEs[3],
		identifyAnomalies(k))
	switch {
	case bad > 0:
		return fmt.Errorf("%s: verify found %d mismatches, the first: %v", d.name, bad, first)
	case errs > 0:
		return fmt.Errorf("%s: verify saw %d I/O errors, the first: %w", d.name, errs, first)
	case verified == 0:
		return fmt.Errorf("%s: verify checked no block in %.1f s", d.name, elapsed.Seconds())
	}
	return nil
}

// identifyAnomalies says how many implausible Identify fields the
// controller sent and, if any, which: "0 Identify anomalies" or
// "2 Identify anomalies (MDTS 1, NPSS 1)".
func identifyAnomalies(k nvme.Counters) string {
	s := fmt.Sprintf("%d Identify anomalies", k.IdentifyAnomalies())
	var kinds []string
	for i, n := range k.BadIdentify {
		if n != 0 {
			kinds = append(kinds, fmt.Sprintf("%v %d", nvme.IdentifyAnomaly(i), n))
		}
	}
	if len(kinds) > 0 {
		s += " (" + strings.Join(kinds, ", ") + ")"
	}
	return s
}

// prepareVerify picks the next I/O: a unit not in flight, a write if it
// was never written (or by --mix), else a read. ok is false when there is
// nothing to do (read-back pass finished).
func (w *verifyWorker) prepareVerify(r *nvme.Request) bool {
	var u uint64
	if w.final {
		for w.sweep < w.n && (w.acked[w.sweep] == 0 || w.busy[w.sweep]) {
			w.sweep++
		}
		if w.sweep == w.n {
			return false
		}
		u = w.sweep
		w.sweep++
		r.Opcode = nvme.NVMRead
	} else {
		for u = w.rng.Uint64N(w.n); w.busy[u]; u = w.rng.Uint64N(w.n) {
		}
		r.Opcode = nvme.NVMRead
		if w.acked[u] == 0 || w.rng.IntN(100) >= w.readPct {
			r.Opcode = nvme.NVMWrite
		}
	}
	w.busy[u] = true
	r.LBA = w.lo + u*w.blocks
	if r.Opcode == nvme.NVMWrite {
		w.seq++
		w.pending[r.Tag] = w.seq
		for i := uint64(0); i < w.blocks; i++ {
			fillBlock(r.Buf.Bytes[int(i)*w.bs:int(i+1)*w.bs], r.LBA+i, w.seq, uint32(w.id))
		}
	} else {
		clear(r.Buf.Bytes)
	}
	return true
}

func (w *verifyWorker) completeVerify(r *nvme.Request) {
	u := (r.LBA - w.lo) / w.blocks
	w.busy[u] = false
	w.ios.Add(1)
	if r.Err != nil {
		w.errs++
		if w.firstErr == nil {
			w.firstErr = r.Err
		}
		// A failed write leaves the unit's content unknown: stop checking it.
		if r.Opcode == nvme.NVMWrite {
			w.acked[u] = 0
		}
		w.free = append(w.free, r)
		return
	}
	if r.Opcode == nvme.NVMWrite {
		w.writesN++
		w.acked[u] = w.pending[r.Tag]
		w.ackLog.record(r.LBA, w.blocks, w.acked[u])
	} else {
		w.reads++
		for i := uint64(0); i < w.blocks; i++ {
			w.verified++
			if err := checkBlock(r.Buf.Bytes[int(i)*w.bs:int(i+1)*w.bs], r.LBA+i, w.acked[u]); err != nil {
				w.bad++
				if w.firstBad == nil {
					w.firstBad = fmt.Errorf("queue %d: %w", w.qp.ID(), err)
				}
			}
		}
	}
	w.free = append(w.free, r)
}

// runVerify keeps the queue full until stop, then reads back every unit
// written and drains.
func (w *verifyWorker) runVerify(stop *atomic.Bool) {
	for i := range w.reqs {
		w.free = append(w.free, &w.reqs[i])
	}
	for {
		if stop.Load() && !w.final {
			w.final = true
		}
		k := 0
		for _, r := range w.free {
			if !w.prepareVerify(r) {
				break
			}
			k++
		}
		if k == 0 && w.qp.Inflight() == 0 {
			return
		}
		n, err := w.qp.SubmitBatch(w.free[:k])
		if err != nil && !errors.Is(err, nvme.ErrQueueFull) {
			w.errs++
			w.firstErr = fmt.Errorf("submitting: %w", err)
			break
		}
		// Those prepared but not posted give their unit back.
		for _, r := range w.free[n:k] {
			w.busy[(r.LBA-w.lo)/w.blocks] = false
			if w.final {
				w.sweep = min(w.sweep, (r.LBA-w.lo)/w.blocks)
			}
		}
		w.free = w.free[:copy(w.free, w.free[n:])]
		if _, err := w.qp.Poll(1, len(w.reqs)); err != nil {
			w.errs++
			w.firstErr = fmt.Errorf("polling: %w", err)
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for w.qp.Inflight() > 0 {
		if _, err := w.qp.PollContext(ctx, w.qp.Inflight(), len(w.reqs)); err != nil {
			return
		}
	}
}
