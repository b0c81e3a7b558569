package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nvmepoll/nvmepoll/iopoll"
	"github.com/nvmepoll/nvmepoll/nvme"
)

// demoSerialPrefix marks the controllers the demo may write to without --force: the guest's
// demo controller is started with a serial beginning with it (scripts/demo-guest.sh).
const demoSerialPrefix = "nvmepoll-demo"

// offsetTable is how many random LBAs each queue pre-generates: the I/O loop cycles through
// them, so no random number is drawn on the hot path.
const offsetTable = 1 << 16

type perfConfig struct {
	nsid     uint32
	depth    int
	ioSize   int64
	workload string
	mix      int // percentage of reads for randrw
	seconds  float64
	queues   int
	batch    int           // --batch-complete: completions reaped per poll at most (0: the queue depth)
	linger   time.Duration // --linger: keep reaping until the CQ is quiet this long (0: off)
	json     bool
	hist     bool
	force    bool
	noShadow bool // Options.NoShadowDoorbells

	verify bool   // --verify: the data integrity workload (verify.go)
	ackLog string // --ack-log: verify records acknowledged writes here
	mode   nvme.CompletionMode
	rate   float64       // I/Os per second over all queues; 0: unpaced
	cpu    time.Duration // measured: process user+system CPU time over the run (pace.go)
	window time.Duration // --window-max: adaptive poll window cap (0: the library's)

	cpuSpec string // --cpus as given: a CPU list, "any", or "" for the default
	cpus    []int  // the CPUs the run was confined to; nil: anywhere (cpus.go)

	offset, size int64  // the byte range I/O goes to (fio's offset= and size=); size 0: to the end
	first, span  uint64 // the same in blocks, resolved against the namespace
}

// Limits on perf's float flags: a run time or pacing interval past them would overflow
// time.Duration (and NaN passes every comparison but these).
const (
	maxPerfSeconds = 1_000_000 // 11.5 days
	minPerfRate    = 0.001     // one I/O per 1000 s
	maxPerfRate    = 1e9
)

func cmdPerf(e *env, args []string) error {
	fs := newFlags("perf")
	var c perfConfig
	nsid := nsidFlag(fs)
	fs.IntVar(&c.depth, "q", 0, "queue `DEPTH`: I/Os in flight per queue pair (1 to the controller's limit)")
	size := fs.String("o", "4K", "I/O `SIZE` in bytes (suffixes K, M, KiB...), a multiple of the block size")
	fs.StringVar(&c.workload, "w", "", "`WORKLOAD`: randread, randwrite, read, write or randrw")
	fs.IntVar(&c.mix, "mix", 50, "`PCT` of I/Os that are reads in randrw (fio's rwmixread, spdk_nvme_perf -M)")
	fs.Float64Var(&c.seconds, "t", 0, "run time in `SECONDS` (fractions allowed)")
	fs.IntVar(&c.queues, "j", 1, "number of queue pairs (`QUEUES`), each driven by its own goroutine")
	fs.IntVar(&c.batch, "batch-complete", 0, "reap at most `N` completions per poll before submitting again (fio's iodepth_batch_complete_max; default: the queue depth)")
	fs.DurationVar(&c.linger, "linger", 0, "after a poll finds completions, keep reaping until none has come for `DURATION` (e.g. 3us), then submit them all with one doorbell; 0 submits at once")
	asJSON := jsonFlags(fs)
	fs.Lookup("json").Usage = "print the results as JSON"
	fs.BoolVar(&c.hist, "histogram", false, "print the latency histogram")
	fs.Func("offset", "first `BYTE` of the region I/O goes to (default 0; suffixes K, M, G...)", func(s string) (err error) {
		c.offset, err = parseSize(s)
		return err
	})
	fs.Func("size", "`BYTES` in the region I/O goes to (default: to the end of the namespace)", func(s string) (err error) {
		c.size, err = parseSize(s)
		return err
	})
	fs.StringVar(&c.cpuSpec, "cpus", "", "run on these `CPUS` (a list: 0,2-3), or \"any\" to leave it to the OS; default: one CPU per queue pair, the first the process may use (SPDK perf's -c, fio's cpus_allowed); with sim, any")
	fs.BoolVar(&c.noShadow, "no-shadow", false, "write every doorbell to MMIO even if the controller offers shadow doorbells")
	fs.BoolVar(&c.verify, "verify", false, "write blocks carrying their LBA, a sequence number and a checksum and check every read (--mix: reads %); fails on any mismatch")
	fs.StringVar(&c.ackLog, "ack-log", "", "with --verify, append each acknowledged write (\"lba blocks seq\") to `FILE`")
	paceFlags(fs, &c)
	fs.BoolVar(&c.force, "force", false, "allow a write workload on a controller that is not sim or the demo's")
	pos, err := parse(e, "perf", fs, args)
	if err != nil {
		return err
	}
	c.json = *asJSON
	spec, err := oneDevice(pos)
	if err != nil {
		return err
	}
	c.nsid = *nsid
	if c.nsid == 0 {
		c.nsid = 1
	}
	if c.ioSize, err = parseSize(*size); err != nil {
		return usagef("-o: %v", err)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	switch {
	case c.verify && c.workload != "":
		return usagef("--verify chooses reads and writes itself (--mix sets the reads %%); drop -w %s", c.workload)
	case c.verify:
		c.workload = "randrw"
	case c.ackLog != "":
		return usagef("--ack-log %s records --verify's writes; add --verify", c.ackLog)
	case given["mix"] && c.workload != "randrw":
		return usagef("--mix %d applies to -w randrw and --verify, not -w %s", c.mix, c.workload)
	}
	if given["window-max"] && c.mode != nvme.ModeAdaptive {
		return usagef("--window-max %v caps the adaptive poll window; add --mode adaptive", c.window)
	}
	switch c.workload {
	case "randread", "randwrite", "read", "write", "randrw":
	case "":
		return usagef("give the workload with -w: randread, randwrite, read, write or randrw")
	default:
		return usagef("unknown workload %q: want randread, randwrite, read, write or randrw", c.workload)
	}
	switch {
	case c.depth <= 0:
		return usagef("queue depth -q %d: give at least 1", c.depth)
	case c.batch < 0 || c.batch > c.depth:
		return usagef("--batch-complete %d: give 1 to the queue depth, %d", c.batch, c.depth)
	case c.linger < 0 || c.linger > time.Second:
		return usagef("--linger %v: give a duration from 0 (off) to 1s", c.linger)
	case !(c.seconds > 0 && c.seconds <= maxPerfSeconds): // also false for NaN
		return usagef("run time -t %g: give a number of seconds above 0, at most %d", c.seconds, maxPerfSeconds)
	case c.queues <= 0 || c.queues > 65535:
		return usagef("-j %d: give 1 to 65535 queue pairs (NVMe's limit)", c.queues)
	case c.mix < 0 || c.mix > 100:
		return usagef("--mix %d: a percentage of reads, 0-100", c.mix)
	case c.ioSize <= 0:
		return usagef("-o %s: the I/O size must be positive", *size)
	case !(c.rate == 0 || c.rate >= minPerfRate && c.rate <= maxPerfRate): // also false for NaN
		return usagef("--rate %g: give I/Os per second from %g to %g, or 0 for unpaced", c.rate, minPerfRate, maxPerfRate)
	case c.window < 0:
		return usagef("--window-max %v: give a positive duration", c.window)
	}
	// perf uses only its own queue pairs (the synchronous API makes its pair on first use, and
	// perf never uses it), so a one-queue controller can still run -j 1.
	opts := &nvme.Options{IOQueues: c.queues, SyncQueues: 1, NoShadowDoorbells: c.noShadow}
	return withDevice(spec, opts, func(d *device) error {
		return runPerf(e, d, &c)
	})
}

func (c *perfConfig) writes() bool { return c.workload != "randread" && c.workload != "read" }

// perfWorker drives one queue pair from one goroutine.
type perfWorker struct {
	id    int
	qp    *nvme.QueuePair
	pool  *nvme.Pool
	reqs  []nvme.Request
	free  []*nvme.Request // completed, to resubmit; preallocated
	start []int64         // submit time of request i (its Tag), in ticks
	clock iopoll.TickClock

	lbas    []uint64 // random LBAs, cycled; nil for sequential
	seqNext uint64   // next LBA of a sequential workload
	seqLo   uint64   // this worker's sequential region
	seqHi   uint64
	writes  []bool // randrw: whether the i-th I/O is a write
	next    int
	batch   int   // completions reaped per poll at most
	linger  int64 // --linger in ticks; 0: off
	opcode  nvme.NVMOpcode
	blocks  uint64 // blocks per I/O

	hist           histogram
	ios            atomic.Uint64 // completed I/Os, read by the progress line
	reads, writesN uint64
	errs           uint64
	firstErr       error
	done           func(*nvme.Request)
}

func runPerf(e *env, d *device, c *perfConfig) error {
	ns, err := d.namespace(c.nsid)
	if err != nil {
		return err
	}
	bs := int64(ns.BlockSize())
	maxDepth := d.ctrl.CAP().MaxQueueEntries() - 1
	switch {
	case c.ioSize%bs != 0:
		return usagef("-o %d is not a multiple of the %d-byte block size of namespace %d", c.ioSize, bs, ns.ID())
	case c.ioSize > int64(ns.MaxTransfer()):
		return usagef("-o %d is above the largest transfer on namespace %d, %d bytes (MDTS, or 65536 blocks)", c.ioSize, ns.ID(), ns.MaxTransfer())
	case c.depth > maxDepth:
		return usagef("queue depth -q %d is above the controller's limit of %d (CAP.MQES allows %d entries, one stays empty)", c.depth, maxDepth, maxDepth+1)
	}
	nsBytes := int64(ns.Blocks()) * bs
	if c.size == 0 && c.offset < nsBytes {
		c.size = nsBytes - c.offset
	}
	switch {
	case c.offset%bs != 0 || c.size%bs != 0:
		return usagef("--offset %d / --size %d must be multiples of the %d-byte block size", c.offset, c.size, bs)
	case c.offset >= nsBytes || c.size > nsBytes-c.offset:
		return usagef("--offset %d --size %d is past the end of namespace %d (%d bytes)", c.offset, c.size, ns.ID(), nsBytes)
	case c.size < c.ioSize:
		return usagef("--size %d is smaller than one I/O (-o %d)", c.size, c.ioSize)
	}
	c.first, c.span = uint64(c.offset/bs), uint64(c.size/bs)
	if sq, cq := d.ctrl.QueuesGranted(); c.queues > min(sq, cq) {
		return usagef("-j %d: the controller granted %d I/O queue pairs; use -j %d at most", c.queues, min(sq, cq), min(sq, cq))
	}
	if c.verify && !c.force && !d.sim && !strings.HasPrefix(d.ctrl.Identify().SN, demoSerialPrefix) {
		return usagef("--verify writes every block it checks on %s (serial %q); add --force if that is what you want", d.name, d.ctrl.Identify().SN)
	}
	if c.writes() && !c.force && !d.sim && !strings.HasPrefix(d.ctrl.Identify().SN, demoSerialPrefix) {
		return usagef("-w %s overwrites data on %s (serial %q); add --force if that is what you want", c.workload, d.name, d.ctrl.Identify().SN)
	}
	if c.verify {
		return runVerify(e, d, ns, c)
	}

	// The sim's controller runs in this process: confining it with the
	// pollers would starve it, so it gets a placement only when asked.
	if d.sim && c.cpuSpec == "" {
		c.cpuSpec = "any"
	}
	if c.cpus, err = chooseCPUs(c.cpuSpec, c.queues); err != nil {
		return usagef("%v", err)
	}
	if c.cpus != nil {
		restore, err := confine(c.cpus)
		if err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		defer restore()
	}

	workers := make([]*perfWorker, c.queues)
	defer func() {
		for _, w := range workers {
			if w != nil {
				w.close()
			}
		}
	}()
	// I/Os are timed in ticks, not with time.Now (see iopoll.TickClock).
	clock := iopoll.CalibrateTicks(20 * time.Millisecond)
	for i := range workers {
		w, err := newPerfWorker(d, ns, c, i, clock)
		if err != nil {
			return err
		}
		workers[i] = w
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	begin, cpu0 := time.Now(), cpuTime()
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c.rate > 0 {
				w.runPaced(&stop, time.Duration(float64(c.queues)/c.rate*float64(time.Second)), c.mode)
				return
			}
			w.run(&stop)
		}()
	}
	// A progress line only for a person watching: a terminal that is not a dumb one (the guest's
	// serial console is a tty, but its log is read later).
	progress := isTerminal(e.stdout) && !c.json && os.Getenv("TERM") != "" && os.Getenv("TERM") != "dumb"
	deadline := time.After(time.Duration(c.seconds * float64(time.Second)))
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	if !progress {
		tick.Stop() // no wake-up a second: it shows in an idle run's CPU figure
	}
	var last uint64
	for waiting := true; waiting; {
		select {
		case <-deadline:
			waiting = false
		case <-tick.C:
			if progress {
				var n uint64
				for _, w := range workers {
					n += w.ios.Load()
				}
				fmt.Fprintf(e.stdout, "\r[%4.0fs] %10.0f IOPS %9.2f MiB/s", time.Since(begin).Seconds(), float64(n-last),
					float64(n-last)*float64(c.ioSize)/(1<<20))
				last = n
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(begin)
	c.cpu = cpuTime() - cpu0
	if progress {
		fmt.Fprint(e.stdout, "\r\033[K")
	}
	rep := perfReport(d, ns, c, workers, elapsed)
	if c.json {
		if err := writeJSON(e.stdout, rep); err != nil {
			return err
		}
	} else {
		printPerf(e.stdout, d, ns, c, workers, elapsed)
	}
	for _, w := range workers {
		if w.firstErr != nil {
			return fmt.Errorf("%s: %d I/O errors on queue %d, the first: %w", d.name, w.errs, w.qp.ID(), w.firstErr)
		}
	}
	return nil
}

func newPerfWorker(d *device, ns *nvme.Namespace, c *perfConfig, id int, clock iopoll.TickClock) (*perfWorker, error) {
	qp, err := d.ctrl.NewQueuePairWith(nvme.QueueOptions{Depth: c.depth + 1, Mode: c.mode, WindowMax: c.window})
	if err != nil {
		return nil, fmt.Errorf("%s: creating queue pair %d of depth %d: %w", d.name, id+1, c.depth+1, err)
	}
	w := &perfWorker{id: id, qp: qp, clock: clock, blocks: uint64(c.ioSize) / uint64(ns.BlockSize()), batch: c.depth}
	if c.batch > 0 {
		w.batch = c.batch
	}
	w.linger = clock.Ticks(c.linger)
	w.pool, err = d.ctrl.NewPool(c.depth, int(c.ioSize))
	if err != nil {
		w.close()
		return nil, fmt.Errorf("%s: allocating %d buffers of %d bytes: %w", d.name, c.depth, c.ioSize, err)
	}
	w.reqs = make([]nvme.Request, c.depth)
	w.free = make([]*nvme.Request, 0, c.depth)
	w.start = make([]int64, c.depth)
	w.done = func(r *nvme.Request) { w.complete(r) }
	w.opcode = nvme.NVMRead
	if c.workload == "randwrite" || c.workload == "write" {
		w.opcode = nvme.NVMWrite
	}
	for i := range w.reqs {
		buf, err := w.pool.Get()
		if err != nil {
			w.close()
			return nil, err
		}
		buf = buf.Slice(0, int(c.ioSize))
		for j := range buf.Bytes {
			buf.Bytes[j] = byte(i + j) // a pattern, not zeros: a write workload writes something
		}
		w.reqs[i] = nvme.Request{Namespace: ns, Blocks: int(w.blocks), Buf: buf, Done: w.done, Tag: uint64(i)}
	}
	// Offsets: aligned to the I/O size, within the region.
	slots := c.span / w.blocks
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(id)))
	if strings.HasPrefix(c.workload, "rand") {
		w.lbas = make([]uint64, offsetTable)
		for i := range w.lbas {
			w.lbas[i] = c.first + rng.Uint64N(slots)*w.blocks
		}
	} else {
		// Each queue reads or writes its own stretch, in order, wrapping at its end.
		per := max(slots/uint64(c.queues), 1)
		w.seqLo = c.first + uint64(id)*per%slots*w.blocks
		w.seqHi = min(w.seqLo+per*w.blocks, c.first+slots*w.blocks)
		w.seqNext = w.seqLo
	}
	if c.workload == "randrw" {
		w.writes = make([]bool, offsetTable)
		for i := range w.writes {
			w.writes[i] = rng.IntN(100) >= c.mix
		}
	}
	return w, nil
}

// prepare sets the request's command for the next I/O of the workload.
func (w *perfWorker) prepare(r *nvme.Request) {
	if w.lbas != nil {
		r.LBA = w.lbas[w.next]
	} else {
		r.LBA = w.seqNext
		w.seqNext += w.blocks
		if w.seqNext+w.blocks > w.seqHi {
			w.seqNext = w.seqLo
		}
	}
	r.Opcode = w.opcode
	if w.writes != nil && w.writes[w.next] {
		r.Opcode = nvme.NVMWrite
	}
	w.next++
	if w.next == offsetTable {
		w.next = 0
	}
	w.start[r.Tag] = iopoll.Ticks()
}

func (w *perfWorker) complete(r *nvme.Request) {
	w.hist.record(uint64(w.clock.Duration(iopoll.Ticks() - w.start[r.Tag])))
	if r.Opcode == nvme.NVMWrite {
		w.writesN++
	} else {
		w.reads++
	}
	if r.Err != nil {
		w.errs++
		if w.firstErr == nil {
			w.firstErr = r.Err
		}
	}
	w.ios.Add(1)
	w.free = append(w.free, r) // cap is the depth: never grows
}

// run keeps the queue full until stop, then drains it.
func (w *perfWorker) run(stop *atomic.Bool) {
	for i := range w.reqs {
		w.free = append(w.free, &w.reqs[i])
	}
	for !stop.Load() && w.firstErr == nil {
		for _, r := range w.free {
			w.prepare(r)
		}
		n, err := w.qp.SubmitBatch(w.free)
		if err != nil && !errors.Is(err, nvme.ErrQueueFull) {
			w.errs++
			w.firstErr = fmt.Errorf("submitting: %w", err)
			break
		}
		// Those not posted stay in free for the next round.
		w.free = w.free[:copy(w.free, w.free[n:])]
		got, err := w.qp.Poll(1, w.batch)
		if err == nil && w.linger > 0 {
			err = w.lingerPoll(got)
		}
		if err != nil {
			w.errs++
			w.firstErr = fmt.Errorf("polling: %w", err)
			break
		}
	}
	w.drain()
}

// lingerPoll goes on reaping after a poll that delivered got, until no
// completion has come for the linger time, batch are in hand or nothing is
// in flight. A controller that posts a burst of completions one by one
// (QEMU's, under its big lock) then gets one SQ doorbell for the burst
// instead of one per poll that caught part of it, and that doorbell does
// not wait for the lock while the burst is still being posted.
func (w *perfWorker) lingerPoll(got int) error {
	last := iopoll.Ticks()
	for got < w.batch && w.qp.Inflight() > 0 && iopoll.Ticks()-last < w.linger {
		k, err := w.qp.Poll(0, w.batch-got)
		if err != nil {
			return err
		}
		if k > 0 {
			got += k
			last = iopoll.Ticks()
		}
	}
	return nil
}

// drain polls until every request the worker issued has completed, so its
// requests and buffers can be reused or freed; 30 s is far past any I/O
// timeout, so hitting it is an error.
func (w *perfWorker) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for w.qp.Inflight() > 0 {
		if _, err := w.qp.PollContext(ctx, w.qp.Inflight(), len(w.reqs)); err != nil {
			if w.firstErr == nil {
				w.firstErr = fmt.Errorf("draining: %w", err)
			}
			return
		}
	}
}

func (w *perfWorker) close() {
	if w.qp != nil {
		w.qp.Close()
	}
	if w.pool != nil {
		w.pool.Close()
	}
}

// ---- reporting -------------------------------------------------------------------------------

type latencyJSON struct {
	Min   float64 `json:"min"`
	Avg   float64 `json:"avg"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99.9"`
	Max   float64 `json:"max"`
	Units string  `json:"units"`
}

type doorbellJSON struct {
	Posted      uint64  `json:"posted"`
	Completed   uint64  `json:"completed"`
	SQDoorbells uint64  `json:"sq_doorbells"`
	CQDoorbells uint64  `json:"cq_doorbells"`
	SQPerIO     float64 `json:"sq_doorbells_per_io"`
	CQPerIO     float64 `json:"cq_doorbells_per_io"`
	BadCQEs     uint64  `json:"bad_cqes"`
	// Shadow: the queue published doorbell values in the shadow buffer;
	// the *_doorbells above count those, the MMIO fields the register
	// writes among them (equal without shadow doorbells).
	Shadow    bool    `json:"shadow"`
	SQMMIO    uint64  `json:"sq_mmio_writes"`
	CQMMIO    uint64  `json:"cq_mmio_writes"`
	MMIOPerIO float64 `json:"mmio_writes_per_io"`
}

// add sums b into db (for the total row) and recomputes the ratios over ios.
func (db *doorbellJSON) add(b *doorbellJSON, ios uint64) {
	db.Posted += b.Posted
	db.Completed += b.Completed
	db.SQDoorbells += b.SQDoorbells
	db.CQDoorbells += b.CQDoorbells
	db.BadCQEs += b.BadCQEs
	db.Shadow = db.Shadow || b.Shadow
	db.SQMMIO += b.SQMMIO
	db.CQMMIO += b.CQMMIO
	db.ratios(ios)
}

func (db *doorbellJSON) ratios(ios uint64) {
	if ios == 0 {
		return
	}
	per := func(n uint64) float64 { return float64(int64(float64(n)/float64(ios)*1000)) / 1000 }
	db.SQPerIO, db.CQPerIO, db.MMIOPerIO = per(db.SQDoorbells), per(db.CQDoorbells), per(db.SQMMIO+db.CQMMIO)
}

type bucketJSON struct {
	UpToUS float64 `json:"le_us"`
	Count  uint64  `json:"count"`
}

type perfJobJSON struct {
	Queue     int           `json:"queue"`
	IOs       uint64        `json:"ios"`
	Reads     uint64        `json:"reads"`
	Writes    uint64        `json:"writes"`
	Errors    uint64        `json:"errors"`
	IOPS      float64       `json:"iops"`
	MiBps     float64       `json:"mib_per_s"`
	Latency   latencyJSON   `json:"latency"`
	Doorbells *doorbellJSON `json:"doorbells,omitempty"`
	Histogram []bucketJSON  `json:"histogram,omitempty"`
}

type perfJSON struct {
	Device     string        `json:"device"`
	NSID       uint32        `json:"nsid"`
	Workload   string        `json:"workload"`
	ReadPct    *int          `json:"rwmixread,omitempty"`
	IOSize     int64         `json:"io_size"`
	Offset     int64         `json:"offset"`
	Size       int64         `json:"size"`
	QueueDepth int           `json:"queue_depth"`
	Queues     int           `json:"queues"`
	Batch      int           `json:"batch_complete"` // completions reaped per poll at most
	LingerUS   float64       `json:"linger_us"`      // --linger, µs (0: off)
	Seconds    float64       `json:"seconds"`
	Mode       string        `json:"mode"`
	CPUs       string        `json:"cpus"` // the CPUs perf ran on (a list), or "any"
	Rate       float64       `json:"rate,omitempty"`
	CPUPct     float64       `json:"cpu_pct"`       // user+system over wall time, % of one core
	CPUPerIO   float64       `json:"cpu_us_per_io"` // CPU µs per completed I/O
	Jobs       []perfJobJSON `json:"jobs"`
	Total      perfJobJSON   `json:"total"`
}

func us(ns float64) float64 { return float64(int64(ns/10+0.5)) / 100 } // ns -> µs, 2 decimals

func jobJSON(queue int, h *histogram, reads, writes, errs uint64, elapsed time.Duration, ioSize int64, withHist bool) perfJobJSON {
	ios := h.n
	j := perfJobJSON{Queue: queue, IOs: ios, Reads: reads, Writes: writes, Errors: errs,
		IOPS:  float64(ios) / elapsed.Seconds(),
		MiBps: float64(ios) * float64(ioSize) / (1 << 20) / elapsed.Seconds(),
		Latency: latencyJSON{Min: us(float64(h.min)), Avg: us(h.mean()), P50: us(float64(h.quantile(0.5))),
			P99: us(float64(h.quantile(0.99))), P999: us(float64(h.quantile(0.999))), Max: us(float64(h.max)), Units: "us"},
	}
	j.IOPS = float64(int64(j.IOPS*10+0.5)) / 10
	j.MiBps = float64(int64(j.MiBps*100+0.5)) / 100
	if withHist {
		for i, c := range h.counts {
			if c > 0 {
				_, hi := histBounds(i)
				j.Histogram = append(j.Histogram, bucketJSON{UpToUS: us(float64(hi)), Count: c})
			}
		}
	}
	return j
}

func perfReport(d *device, ns *nvme.Namespace, c *perfConfig, workers []*perfWorker, elapsed time.Duration) perfJSON {
	r := perfJSON{Device: d.name, NSID: ns.ID(), Workload: c.workload, IOSize: c.ioSize, Offset: c.offset, Size: c.size, QueueDepth: c.depth,
		Queues: c.queues, Batch: c.depth, Seconds: float64(int64(elapsed.Seconds()*1000)) / 1000}
	if c.batch > 0 {
		r.Batch = c.batch
	}
	r.LingerUS = us(float64(c.linger))
	if c.workload == "randrw" {
		r.ReadPct = &c.mix
	}
	var total histogram
	var reads, writes, errs uint64
	var dbTotal doorbellJSON
	for _, w := range workers {
		j := jobJSON(int(w.qp.ID()), &w.hist, w.reads, w.writesN, w.errs, elapsed, c.ioSize, c.hist)
		st, dbs := w.qp.Stats(), w.qp.Doorbells()
		db := &doorbellJSON{Posted: st.Posted, Completed: st.Completed, SQDoorbells: st.SQDoorbells, CQDoorbells: st.CQDoorbells, BadCQEs: st.Bad(),
			Shadow: dbs.Shadow, SQMMIO: dbs.SQ.MMIOWrites, CQMMIO: dbs.CQ.MMIOWrites}
		db.ratios(w.hist.n)
		j.Doorbells = db
		r.Jobs = append(r.Jobs, j)
		total.merge(&w.hist)
		reads, writes, errs = reads+w.reads, writes+w.writesN, errs+w.errs
		dbTotal.add(db, 0)
	}
	r.Total = jobJSON(0, &total, reads, writes, errs, elapsed, c.ioSize, c.hist)
	r.Mode, r.Rate, r.CPUPct = c.mode.String(), c.rate, cpuPct(c.cpu, elapsed)
	r.CPUs = "any"
	if c.cpus != nil {
		r.CPUs = formatCPUList(c.cpus)
	}
	if total.n > 0 {
		r.CPUPerIO = us(float64(c.cpu) / float64(total.n))
	}
	dbTotal.ratios(total.n)
	r.Total.Doorbells = &dbTotal
	return r
}

func printPerf(out io.Writer, d *device, ns *nvme.Namespace, c *perfConfig, workers []*perfWorker, elapsed time.Duration) {
	r := perfReport(d, ns, c, workers, elapsed)
	mix := ""
	if r.ReadPct != nil {
		mix = fmt.Sprintf(" (%d%% reads)", *r.ReadPct)
	}
	batch := ""
	if c.batch > 0 {
		batch = fmt.Sprintf(" (reaping at most %d per poll)", c.batch)
	}
	if c.linger > 0 {
		batch += fmt.Sprintf(" (lingering %v for more completions)", c.linger)
	}
	fmt.Fprintf(out, "%s namespace %d: %s%s, %d-byte I/Os, queue depth %d%s, %d queue pair(s), CPUs %s, %.2f s\n\n",
		d.name, ns.ID(), c.workload, mix, c.ioSize, c.depth, batch, c.queues, r.CPUs, elapsed.Seconds())
	fmt.Fprintf(out, "%-10s %12s %10s %10s %10s %10s %10s %10s %10s\n", "", "IOPS", "MiB/s", "min", "avg", "p50", "p99", "p99.9", "max")
	row := func(name string, j perfJobJSON) {
		l := j.Latency
		fmt.Fprintf(out, "%-10s %12.1f %10.2f %10.2f %10.2f %10.2f %10.2f %10.2f %10.2f\n", name, j.IOPS, j.MiBps, l.Min, l.Avg, l.P50, l.P99, l.P999, l.Max)
	}
	for _, j := range r.Jobs {
		row(fmt.Sprintf("queue %d", j.Queue), j)
	}
	row("total", r.Total)
	fmt.Fprintf(out, "(latency in microseconds; %d I/Os, %d reads, %d writes, %d errors)\n\n", r.Total.IOs, r.Total.Reads, r.Total.Writes, r.Total.Errors)
	printPace(out, r, workers)
	fmt.Fprintf(out, "doorbells: ")
	for i, j := range r.Jobs {
		if i > 0 {
			fmt.Fprintf(out, "           ")
		}
		db := j.Doorbells
		fmt.Fprintf(out, "queue %d: %d SQ writes (%.3f per I/O), %d CQ writes (%.3f per I/O), %d commands posted, %d bad CQEs\n",
			j.Queue, db.SQDoorbells, db.SQPerIO, db.CQDoorbells, db.CQPerIO, db.Posted, db.BadCQEs)
	}
	// MMIO writes are what cost (a trap into the hypervisor under emulation); with shadow
	// doorbells most doorbell updates are only memory stores.
	mode := "off"
	if r.Total.Doorbells.Shadow {
		mode = "on"
	}
	fmt.Fprintf(out, "MMIO doorbell writes (shadow doorbells %s): ", mode)
	for _, j := range r.Jobs {
		db := j.Doorbells
		fmt.Fprintf(out, "queue %d: %d SQ + %d CQ; ", j.Queue, db.SQMMIO, db.CQMMIO)
	}
	fmt.Fprintf(out, "total %d, %.3f per I/O\n", r.Total.Doorbells.SQMMIO+r.Total.Doorbells.CQMMIO, r.Total.Doorbells.MMIOPerIO)
	if c.hist {
		fmt.Fprintf(out, "\nlatency histogram (all queues):\n")
		var cum uint64
		for _, b := range r.Total.Histogram {
			cum += b.Count
			fmt.Fprintf(out, "  <= %10.2f us: %10d  %6.2f%%\n", b.UpToUS, b.Count, 100*float64(cum)/float64(r.Total.IOs))
		}
	}
}

// isTerminal reports whether w is a terminal (a character device), for the progress line.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
