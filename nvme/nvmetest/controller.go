package nvmetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// Register offsets in BAR0 (NVMe base specification 2.0, section 3.1.4).
const (
	regCAP   = 0x00 // Controller Capabilities, 64-bit
	regVS    = 0x08 // Version
	regINTMS = 0x0c // Interrupt Mask Set
	regINTMC = 0x10 // Interrupt Mask Clear
	regCC    = 0x14 // Controller Configuration
	regCSTS  = 0x1c // Controller Status
	regAQA   = 0x24 // Admin Queue Attributes
	regASQ   = 0x28 // Admin Submission Queue Base Address, 64-bit
	regACQ   = 0x30 // Admin Completion Queue Base Address, 64-bit
	regDB    = 0x1000

	// Version is the NVMe version the model reports in VS and Identify
	// Controller VER: 1.4.0.
	Version = 0x00010400

	ccEN    = 1 << 0
	cstsRDY = 1 << 0
	cstsCFS = 1 << 1
	// CSTS.SHST values (bits 3:2).
	shstProcessing = 1 << 2
	shstComplete   = 2 << 2
)

// NamespaceConfig describes one namespace. Namespaces are numbered from 1 in
// the order given.
type NamespaceConfig struct {
	// Blocks is the size in logical blocks. 0 means 64 MiB worth.
	Blocks uint64
	// LBAShift is log2 of the logical block size: 9 (512 bytes, the
	// default when 0) or 12 (4096 bytes). Every namespace offers both as LBA
	// formats 0 and 1; Format NVM switches between them.
	LBAShift uint8
}

// Config sets up a Controller. The zero value is a usable controller; each
// field documents its default.
type Config struct {
	// Namespaces to create. Default: one namespace of 64 MiB with 512-byte
	// blocks (131072 blocks). Storage is sparse: only written 4 KiB chunks
	// take memory, so a 1 TiB namespace is fine.
	Namespaces []NamespaceConfig

	// MQES is CAP.MQES, the largest queue size minus one. Default 2047.
	MQES uint16
	// TO is CAP.TO, the worst-case time to become ready, in 500 ms units.
	// Default 1.
	TO uint8
	// MDTS is Identify Controller MDTS: the largest transfer is
	// 2^MDTS * 4 KiB. Default 7 (512 KiB). Negative means no limit
	// (reported as 0).
	MDTS int
	// MaxQueuePairs is the most I/O submission and completion queues the
	// controller grants through Set Features Number of Queues, and the
	// largest I/O queue id. Default 16. Set 1 to test a driver on a device
	// like QEMU's max_ioqpairs=1.
	MaxQueuePairs int

	// SerialNumber, ModelNumber and FirmwareRevision are Identify
	// Controller SN, MN and FR. Defaults "nvmetest-0001", "nvmepoll model",
	// "1.0".
	SerialNumber, ModelNumber, FirmwareRevision string

	// SGL makes the controller advertise (Identify SGLS) and accept SGLs
	// for I/O commands. Off by default, as on QEMU's controller.
	SGL bool
	// NoWriteCache removes the volatile write cache (Identify VWC = 0; Set
	// Features Volatile Write Cache fails).
	NoWriteCache bool
	// ShadowDoorbells advertises and implements Doorbell Buffer Config
	// (OACS bit 8): once configured, I/O queue doorbells are read from the
	// shadow buffer and the EventIdx buffer says what the model has seen.
	ShadowDoorbells bool

	// Inline processes commands inside the doorbell write (Ring or
	// Write32) on the caller's goroutine, which makes tests deterministic
	// and benchmarks cheap. By default a worker goroutine processes them
	// asynchronously, like hardware.
	Inline bool

	// ReadyDelay is how long after CC.EN goes 1 the controller sets
	// CSTS.RDY. Default 0 (at once).
	ReadyDelay time.Duration
	// NeverReady keeps CSTS.RDY at 0 after enable, to test a bring-up
	// bounded by CAP.TO.
	NeverReady bool
	// NeverDisables ignores CC.EN going 1 to 0, as a hung controller:
	// CSTS.RDY stays set and every queue stays, to test a reset bounded by
	// CAP.TO and the memory the host must not free while the controller
	// may still use it.
	NeverDisables bool
	// FailEnable makes every enable fail with CSTS.CFS set.
	FailEnable bool
	// ShutdownDelay is how long CSTS.SHST stays "processing" after a
	// shutdown request. Default 0.
	ShutdownDelay time.Duration
}

// Defaults for Config fields left zero.
const (
	DefaultMQES             = 2047
	DefaultTO               = 1
	DefaultMDTS             = 7
	DefaultMaxQueuePairs    = 16
	DefaultNamespaceBytes   = 64 << 20
	DefaultSerialNumber     = "nvmetest-0001"
	DefaultModelNumber      = "nvmepoll model"
	DefaultFirmwareRevision = "1.0"

	// VendorID is the PCI vendor id in Identify Controller VID and SSVID
	// (Red Hat, as QEMU's emulated controller).
	VendorID = 0x1b36
	// MPSMax is CAP.MPSMAX: memory page sizes from 4 KiB to 64 KiB.
	MPSMax = 4
)

// Controller is an in-process model of an NVMe controller on PCIe. It
// implements the nvme.Device interface: BAR0 registers through Read32 and
// Write32, doorbells, and DMA memory whose IOVAs the model translates.
//
// All its methods are safe for concurrent use.
type Controller struct {
	cfg Config
	mem *Memory

	mu     sync.Mutex
	cap    uint64
	cc     uint32
	csts   uint32
	aqa    uint32
	intms  uint32
	asq    uint64
	acq    uint64
	gen    uint64 // bumped on every reset; stale timers compare it
	timers []*time.Timer

	enableErr string
	fatal     bool // CSTS.CFS injected or enable failed
	gone      bool // device removed: registers read all ones
	closed    bool
	shutdown  bool // shutdown complete: no more commands

	sqs []*subQueue // by qid; nil when absent
	cqs []*compQueue

	nsqa, ncqa int // granted I/O queues (Number of Queues), 1-based
	queuesSet  bool
	cqsMade    bool // an I/O CQ was created since the reset (QEMU's qs_created)
	features   map[uint8]uint32
	shadow     uint64       // Doorbell Buffer Config: shadow doorbell buffer IOVA
	eventIdx   uint64       // and EventIdx buffer IOVA; 0 when not configured
	irqs       []*Interrupt // by MSI-X vector; nil entries signal nothing (irq.go)

	namespaces []*Namespace

	faults  []*Fault
	pending []*pendingCmd
	aers    []pendingCmd // outstanding Asynchronous Event Requests
	events  []uint32     // async events waiting for a request (DW0)
	masked  uint8        // event types posted whose log page is unread
	errLog  []errorEntry // newest last
	errSeq  uint64
	health  health
	stats   Stats
	scratch []byte
	segs    []segment // reused by prpSegments
	list    []byte    // PRP list entries, reused by prpSegments
	fetched Command   // the command being run, see fetchLocked

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

// New returns a controller with cfg, or an error naming a bad Config field.
// Close it when done: that stops its worker and frees its DMA memory.
func New(cfg Config) (*Controller, error) {
	if cfg.MQES == 0 {
		cfg.MQES = DefaultMQES
	}
	if cfg.TO == 0 {
		cfg.TO = DefaultTO
	}
	if cfg.MDTS == 0 {
		cfg.MDTS = DefaultMDTS
	}
	if cfg.MDTS > 15 {
		return nil, fmt.Errorf("nvmetest: MDTS %d is above 15 (a 128 MiB transfer)", cfg.MDTS)
	}
	if cfg.MaxQueuePairs == 0 {
		cfg.MaxQueuePairs = DefaultMaxQueuePairs
	}
	if cfg.MaxQueuePairs < 0 || cfg.MaxQueuePairs > 65535 {
		return nil, fmt.Errorf("nvmetest: MaxQueuePairs %d is outside 1..65535", cfg.MaxQueuePairs)
	}
	if cfg.SerialNumber == "" {
		cfg.SerialNumber = DefaultSerialNumber
	}
	if cfg.ModelNumber == "" {
		cfg.ModelNumber = DefaultModelNumber
	}
	if cfg.FirmwareRevision == "" {
		cfg.FirmwareRevision = DefaultFirmwareRevision
	}
	if len(cfg.Namespaces) == 0 {
		cfg.Namespaces = []NamespaceConfig{{}}
	}
	c := &Controller{cfg: cfg, mem: newMemory()}
	for i, nc := range cfg.Namespaces {
		if nc.LBAShift == 0 {
			nc.LBAShift = 9
		}
		if nc.LBAShift != 9 && nc.LBAShift != 12 {
			return nil, fmt.Errorf("nvmetest: namespace %d: LBAShift %d is neither 9 (512 B) nor 12 (4 KiB)", i+1, nc.LBAShift)
		}
		if nc.Blocks == 0 {
			nc.Blocks = DefaultNamespaceBytes >> nc.LBAShift
		}
		if nc.Blocks > 1<<52>>nc.LBAShift {
			return nil, fmt.Errorf("nvmetest: namespace %d: %d blocks is more than the model's 4 PiB", i+1, nc.Blocks)
		}
		c.namespaces = append(c.namespaces, newNamespace(c, uint32(i+1), nc))
	}
	c.cap = uint64(cfg.MQES) | 1<<16 | uint64(cfg.TO)<<24 | 1<<37 | uint64(MPSMax)<<52
	c.resetLocked()
	if !cfg.Inline {
		c.wake = make(chan struct{}, 1)
		c.stop = make(chan struct{})
		c.done = make(chan struct{})
		go c.worker()
	}
	return c, nil
}

// NewController is New for tests: with a non-nil t it fails the test on a
// bad Config and closes the controller in t.Cleanup (failing the test if
// Close does); with a nil t it panics on a bad Config, as httptest.NewServer
// does when it cannot listen.
func NewController(t testing.TB, cfg Config) *Controller {
	if t != nil {
		t.Helper()
	}
	c, err := New(cfg)
	if err != nil {
		if t == nil {
			panic(err)
		}
		t.Fatal(err)
	}
	if t != nil {
		t.Cleanup(func() {
			if err := c.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	return c
}

// Close stops the worker, cancels pending timers and frees all DMA memory.
// Afterwards registers read all ones, like a removed device. Safe to call
// more than once.
func (c *Controller) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.stopTimersLocked()
	c.mu.Unlock()
	if c.stop != nil {
		close(c.stop)
		<-c.done
	}
	return c.mem.close()
}

// DMA returns the model's allocator. Its buffers live until Free or Close.
func (c *Controller) DMA() dma.Allocator { return c.mem }

// Memory is DMA with its concrete type, for Faults and Mapped.
func (c *Controller) Memory() *Memory { return c.mem }

// DMAFaults is the number of controller accesses to unmapped IOVAs. Such
// accesses succeed silently, as on QEMU; tests should assert this is 0.
func (c *Controller) DMAFaults() uint64 { return c.mem.Faults() }

// Config returns the configuration with defaults filled in.
func (c *Controller) Config() Config { return c.cfg }

// EnableError says why the last enable failed (CSTS.CFS), or "".
func (c *Controller) EnableError() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.enableErr
}

func (c *Controller) worker() {
	defer close(c.done)
	for {
		select {
		case <-c.stop:
			return
		case <-c.wake:
		}
		c.mu.Lock()
		c.runLocked()
		c.mu.Unlock()
	}
}

// kickLocked makes the controller look at its queues: at once when inline,
// else by waking the worker. The caller holds mu.
func (c *Controller) kickLocked() {
	if c.cfg.Inline {
		c.runLocked()
		return
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Read32 reads the 32-bit register at off. Unknown and write-only registers
// read 0; a removed (or closed) device reads all ones.
func (c *Controller) Read32(off int) uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone || c.closed {
		return 0xffffffff
	}
	switch off {
	case regCAP:
		return uint32(c.cap)
	case regCAP + 4:
		return uint32(c.cap >> 32)
	case regVS:
		return Version
	case regINTMS, regINTMC:
		return c.intms
	case regCC:
		return c.cc
	case regCSTS:
		s := c.csts
		if c.fatal {
			s |= cstsCFS
		}
		return s
	case regAQA:
		return c.aqa
	case regASQ:
		return uint32(c.asq)
	case regASQ + 4:
		return uint32(c.asq >> 32)
	case regACQ:
		return uint32(c.acq)
	case regACQ + 4:
		return uint32(c.acq >> 32)
	}
	return 0
}

// Write32 writes the 32-bit register at off; offsets from 0x1000 are
// doorbells. Writes to read-only or unknown registers are ignored.
func (c *Controller) Write32(off int, v uint32) {
	if off >= regDB {
		c.ring(off, v)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gone || c.closed {
		return
	}
	switch off {
	case regINTMS:
		c.intms |= v
	case regINTMC:
		c.intms &^= v
	case regCC:
		c.writeCCLocked(v)
	case regAQA:
		c.aqa = v & 0x0fff0fff
	case regASQ:
		c.asq = c.asq&^0xffffffff | uint64(v)
	case regASQ + 4:
		c.asq = c.asq&0xffffffff | uint64(v)<<32
	case regACQ:
		c.acq = c.acq&^0xffffffff | uint64(v)
	case regACQ + 4:
		c.acq = c.acq&0xffffffff | uint64(v)<<32
	}
}

func (c *Controller) writeCCLocked(v uint32) {
	old := c.cc
	c.cc = v & 0x01fffff1
	switch {
	case old&ccEN == 0 && v&ccEN != 0:
		c.enableLocked()
	case old&ccEN != 0 && v&ccEN == 0 && !c.cfg.NeverDisables:
		c.resetLocked()
	}
	if shn := v >> 14 & 3; shn != 0 && old>>14&3 == 0 && c.cc&ccEN != 0 {
		c.csts = c.csts&^(3<<2) | shstProcessing
		gen := c.gen
		finish := func() {
			c.shutdown = true
			c.csts = c.csts&^(3<<2) | shstComplete
		}
		if c.cfg.ShutdownDelay == 0 {
			finish()
		} else {
			c.afterLocked(c.cfg.ShutdownDelay, func() {
				if c.gen == gen {
					finish()
				}
			})
		}
	}
}

// enableLocked validates CC and the admin queue registers; if they are good
// the admin queues exist and RDY follows after ReadyDelay, otherwise CFS.
func (c *Controller) enableLocked() {
	if err := c.checkEnableLocked(); err != "" {
		c.enableErr = err
		c.fatal = true
		return
	}
	c.enableErr = ""
	c.sqs[0] = &subQueue{id: 0, size: c.aqa&0xfff + 1, base: c.asq, cqid: 0}
	c.cqs[0] = &compQueue{id: 0, size: c.aqa>>16&0xfff + 1, base: c.acq, phase: 1, nsq: 1}
	if c.cfg.NeverReady {
		return
	}
	gen := c.gen
	ready := func() {
		if c.gen == gen && c.cc&ccEN != 0 {
			c.csts |= cstsRDY
			c.runLocked()
		}
	}
	if c.cfg.ReadyDelay == 0 {
		ready()
		return
	}
	c.afterLocked(c.cfg.ReadyDelay, ready)
}

func (c *Controller) checkEnableLocked() string {
	cc := c.cc
	switch {
	case c.cfg.FailEnable:
		return "enable fails (Config.FailEnable)"
	case cc>>4&7 != 0:
		return fmt.Sprintf("CC.CSS %d is not 0 (NVM command set)", cc>>4&7)
	case cc>>7&0xf > MPSMax:
		return fmt.Sprintf("CC.MPS %d is above CAP.MPSMAX %d", cc>>7&0xf, MPSMax)
	case cc>>11&7 != 0:
		return fmt.Sprintf("CC.AMS %d is not 0 (round robin)", cc>>11&7)
	case cc>>16&0xf != 6:
		return fmt.Sprintf("CC.IOSQES %d is not 6 (64-byte SQEs)", cc>>16&0xf)
	case cc>>20&0xf != 4:
		return fmt.Sprintf("CC.IOCQES %d is not 4 (16-byte CQEs)", cc>>20&0xf)
	case c.aqa&0xfff == 0 || c.aqa>>16&0xfff == 0:
		return fmt.Sprintf("AQA %#x: admin queues need at least 2 entries", c.aqa)
	case c.asq == 0 || c.asq%uint64(c.pageSize()) != 0:
		return fmt.Sprintf("ASQ %#x is not a page-aligned address", c.asq)
	case c.acq == 0 || c.acq%uint64(c.pageSize()) != 0:
		return fmt.Sprintf("ACQ %#x is not a page-aligned address", c.acq)
	}
	return ""
}

// resetLocked is a controller reset: queues, pending commands, features and
// status go; namespaces, logs and counters stay.
func (c *Controller) resetLocked() {
	c.stopTimersLocked()
	c.gen++
	c.csts = 0
	c.fatal = false
	c.shutdown = false
	c.sqs = make([]*subQueue, c.cfg.MaxQueuePairs+1)
	c.cqs = make([]*compQueue, c.cfg.MaxQueuePairs+1)
	c.pending = nil
	c.aers, c.events, c.masked = nil, nil, 0
	c.nsqa, c.ncqa = c.cfg.MaxQueuePairs, c.cfg.MaxQueuePairs
	c.queuesSet = false
	c.cqsMade = false
	c.shadow, c.eventIdx = 0, 0
	c.features = map[uint8]uint32{
		fidArbitration:    0,
		fidPowerMgmt:      0,
		fidTempThreshold:  0x0157, // 343 K
		fidErrorRecovery:  0,
		fidWriteCache:     0,
		fidIRQCoalescing:  0,
		fidIRQConfig:      0,
		fidWriteAtomicity: 0,
		fidAsyncEvent:     0,
	}
	if !c.cfg.NoWriteCache {
		c.features[fidWriteCache] = 1
	}
}

// afterLocked runs f with mu held after d, unless the controller is reset or
// closed first.
func (c *Controller) afterLocked(d time.Duration, f func()) {
	gen := c.gen
	t := time.AfterFunc(d, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed || c.gen != gen {
			return
		}
		f()
	})
	c.timers = append(c.timers, t)
}

func (c *Controller) stopTimersLocked() {
	for _, t := range c.timers {
		t.Stop()
	}
	c.timers = nil
	for _, p := range c.pending {
		if p.timer != nil {
			p.timer.Stop()
		}
	}
}

func (c *Controller) pageSize() int { return 4096 << (c.cc >> 7 & 0xf) }

// SetGone makes the device disappear (true) or come back (false): while
// gone every register reads all ones, writes are ignored and nothing is
// processed, as after a surprise removal.
func (c *Controller) SetGone(gone bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gone = gone
	if !gone {
		c.kickLocked()
	}
}

// SetFatal sets CSTS.CFS (controller fatal status) and stops processing
// until the host resets the controller (CC.EN 1 -> 0).
func (c *Controller) SetFatal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fatal = true
}

// Stats is a snapshot of the model's counters.
type Stats struct {
	// AdminCommands and IOCommands count fetched commands by opcode.
	AdminCommands, IOCommands [256]uint64
	// SQDoorbellWrites and CQDoorbellWrites count accepted doorbell writes
	// (MMIO, not shadow); InvalidDoorbellWrites counts ignored ones (no
	// such queue, value out of range, CQ head past the tail).
	SQDoorbellWrites, CQDoorbellWrites, InvalidDoorbellWrites uint64
	// CQEsPosted counts completion entries written, duplicates included.
	CQEsPosted uint64
	// CQFull counts the times the controller had a completion to post, or
	// a command to fetch, and found the CQ full: the host let its head
	// doorbell lag too far.
	CQFull uint64
	// Errors counts completions with a non-zero status.
	Errors uint64
	// DMAFaults counts accesses to unmapped IOVAs (see Memory).
	DMAFaults uint64
	// Interrupts counts MSI-X signals sent to an attached vector (irq.go);
	// HeldInterrupts those that found the vector masked and only set its
	// pending bit. Unmasks counts the host's Unmask calls.
	Interrupts, HeldInterrupts, Unmasks uint64
}

// Stats returns the counters so far.
func (c *Controller) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.DMAFaults = c.mem.Faults()
	return s
}

// QueueInfo describes an existing queue, for tests that check what the
// driver created.
type QueueInfo struct {
	ID      uint16
	Size    int    // entries
	Base    uint64 // IOVA
	CQID    uint16 // for a submission queue: its completion queue
	IRQ     bool   // for a completion queue: interrupts enabled
	IRQVec  uint16
	Head    int
	Tail    int
	Backlog int // completions waiting for room (completion queue)
	Pending int // commands held by injected delays (submission queue)
	IsSQ    bool
}

// SubmissionQueue reports the submission queue qid, if it exists.
func (c *Controller) SubmissionQueue(qid uint16) (QueueInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if int(qid) >= len(c.sqs) || c.sqs[qid] == nil {
		return QueueInfo{}, false
	}
	q := c.sqs[qid]
	n := 0
	for _, p := range c.pending {
		if p.cmd.SQID == qid {
			n++
		}
	}
	return QueueInfo{ID: q.id, Size: int(q.size), Base: q.base, CQID: q.cqid, Head: int(q.head), Tail: int(q.tail), Pending: n, IsSQ: true}, true
}

// CompletionQueue reports the completion queue qid, if it exists.
func (c *Controller) CompletionQueue(qid uint16) (QueueInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if int(qid) >= len(c.cqs) || c.cqs[qid] == nil {
		return QueueInfo{}, false
	}
	q := c.cqs[qid]
	return QueueInfo{ID: q.id, Size: int(q.size), Base: q.base, IRQ: q.ien, IRQVec: q.iv, Head: int(q.head), Tail: int(q.tail), Backlog: len(q.backlog)}, true
}
