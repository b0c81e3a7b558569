package nvme

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nvmepoll/nvmepoll/iopoll"
	"github.com/nvmepoll/nvmepoll/queue"
	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// PageSize is the host memory page size nvmepoll configures (CC.MPS): 4 KiB,
// which every controller supports and every PRP is built for.
const PageSize = 4096

// Options tune a Controller. The zero value (or nil) gives the defaults
// documented on each field.
type Options struct {
	// AdminDepth is the admin queue depth (default 32, 2..4096).
	AdminDepth int
	// AdminTimeout bounds one admin command when its context has no
	// earlier deadline (default 10 s).
	AdminTimeout time.Duration
	// IOTimeout bounds one I/O command (default 30 s, as Linux's
	// nvme_core.io_timeout). A synchronous call returns when its context
	// has an earlier deadline; either way a command outstanding this long
	// gets an Abort, and if that does not end it within AbortTimeout, a
	// controller reset (see Reset). On the asynchronous path the check
	// runs in Poll, with a resolution of min(IOTimeout/4, 1 s).
	IOTimeout time.Duration
	// AbortTimeout bounds the wait for an Abort to end a timed-out command
	// before the controller is reset (default 5 s).
	AbortTimeout time.Duration
	// ShutdownTimeout bounds the wait for CSTS.SHST "complete" on Close.
	// Default: the controller's RTD3E if it reports one, else 10 s.
	ShutdownTimeout time.Duration
	// MaxTransfer caps the bytes one command moves; larger synchronous
	// requests are split. The controller's MDTS caps it further.
	// Default 2 MiB.
	MaxTransfer int
	// IOQueues is how many I/O queue pairs to ask the controller for with
	// Set Features (Number of Queues). Default 16.
	IOQueues int
	// SyncQueues is how many queue pairs the synchronous API (ReadAt,
	// WriteAt, ReadBlocks...) shares; that many synchronous calls run at
	// once, the rest wait. Default 2.
	SyncQueues int
	// SyncDepth is the depth of those queue pairs (default 8).
	SyncDepth int
	// SGL describes I/O data with an SGL Data Block descriptor instead of
	// PRPs when the controller supports SGLs (Identify SGLS); otherwise
	// PRPs are used. nvmepoll's buffers are contiguous in IOVA space, so
	// one descriptor covers any transfer and no list page is needed.
	SGL bool
	// NoShadowDoorbells keeps every doorbell update an MMIO write. By
	// default, when the controller offers Doorbell Buffer Config (OACS
	// bit 8, e.g. QEMU's emulated NVMe), I/O queues publish tails and
	// heads in a shadow buffer and write MMIO only when the controller's
	// EventIdx asks for it (see Controller.ShadowDoorbells).
	NoShadowDoorbells bool
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&r.AdminDepth, 32)
	defDur(&r.AdminTimeout, 10*time.Second)
	defDur(&r.IOTimeout, 30*time.Second)
	defDur(&r.AbortTimeout, 5*time.Second)
	def(&r.MaxTransfer, 2<<20)
	def(&r.IOQueues, 16)
	def(&r.SyncQueues, 2)
	def(&r.SyncDepth, 8)
	return r
}

// Controller is an enabled NVMe controller: its admin queue, the I/O queue
// pairs made on it, and the namespaces it serves.
//
// Admin commands are serialised by a mutex (they are not a hot path). I/O
// goes through QueuePairs; see NewQueuePair.
type Controller struct {
	dev    Device
	opts   Options
	cap    CAP
	vs     VS
	stride int // doorbell stride in bytes

	adminMu  sync.Mutex
	admin    *queue.Pair
	adminSQ  dma.Buffer
	adminCQ  dma.Buffer
	adminBuf dma.Buffer // one page for Identify / log data, used under adminMu
	// adminLost marks admin cids whose command timed out: the slot stays
	// taken until the controller completes it (or forever).
	adminLost []bool
	closed    bool // under adminMu

	id          *IdentifyController
	maxTransfer int  // bytes per command: min(MaxTransfer, MDTS)
	useSGL      bool // I/O data as one SGL Data Block (Options.SGL and SGLS)
	sqGranted   int  // I/O SQs the controller granted
	cqGranted   int  // I/O CQs the controller granted

	qpMu  sync.Mutex
	qids  []bool // qids[i]: I/O queue id i is in use (0 is admin)
	pairs map[*QueuePair]struct{}
	held  []heldQueue // queues the controller may still hold (heldqueue.go)
	// heldPages are admin data pages a timed-out command may still write;
	// heldBounce pool buffers of commands on held queues.
	heldPages  []dma.Buffer
	heldBounce []heldBuffer

	syncPairs chan *QueuePair // the synchronous API's idle queue pairs
	syncMu    sync.Mutex      // guards syncMade, syncMax and syncRetired
	syncMade  int             // synchronous queue pairs created so far
	syncMax   int             // at most this many
	syncLimit int             // syncMax as Open set it, before queue ids ran out
	// qidFreed is set when a queue id is given back: syncMax, lowered
	// while the caller held every id, may go back up to syncLimit.
	qidFreed atomic.Bool
	// syncRetired, when not nil, is closed when putSyncPair retires a
	// pair, to wake callers waiting in takeSyncPair for a slot.
	syncRetired chan struct{}
	syncPool    *Pool   // bounce buffers for the synchronous API
	pools       []*Pool // from NewPool, under qpMu; closed on Close
	dbbuf       dbbuf   // shadow doorbell and EventIdx pages (dbbuf.go)

	nsMu       sync.Mutex
	namespaces map[uint32]*Namespace

	rec    recovery  // reset state and error counters (recovery.go, health.go)
	opened time.Time // for the coarse I/O clock (timeout.go)
	// refreshTicks is clockRefresh in TSC ticks (timeout.go).
	refreshTicks int64

	closeOnce sync.Once
	closeErr  error
}

// Open brings up the controller behind dev (NVMe base spec 2.0, 3.5.1
// "Memory-based Controller Initialization"): it checks CAP, disables the
// controller, sets up the admin queue, enables it, identifies it and asks
// for I/O queues. On success the Controller owns dev and closes it on Close;
// on failure dev is closed too.
//
// If dev limits its DMA memory (MemlockChecker: RLIMIT_MEMLOCK for VFIO),
// Open checks what it maps before mapping it, so a low limit fails with the
// bytes needed, the limit and how to raise it instead of part-way through.
// Open cannot know the whole total before it starts: the shadow doorbell
// pages and the synchronous API's bounce buffers depend on Identify (MDTS,
// OACS) and on the queues granted, which need the admin queue. So it checks
// twice: the admin queue before it touches the controller, then the rest
// once those answers are in and before any of it is mapped. An I/O queue
// pair (NewQueuePair, and the synchronous API's, made on first use) checks
// its SQ, CQ and PRP pages together before mapping them; a pool (NewPool)
// is one allocation, checked by itself.
func Open(dev Device, opts *Options) (*Controller, error) {
	c := &Controller{dev: dev, opts: opts.withDefaults(), namespaces: map[uint32]*Namespace{}, pairs: map[*QueuePair]struct{}{}, opened: time.Now()}
	c.refreshTicks = iopoll.ProcessClock().Ticks(clockRefresh)
	if err := c.bringUp(); err != nil {
		c.teardown(false)
		return nil, err
	}
	return c, nil
}

func (c *Controller) bringUp() error {
	lo, hi := c.dev.Read32(RegCAP), c.dev.Read32(RegCAP+4)
	c.cap = CAP(uint64(hi)<<32 | uint64(lo))
	if err := c.cap.Validate(); err != nil {
		return fmt.Errorf("nvme: %w", err)
	}
	if !c.cap.SupportsPageSize(PageSize) {
		return fmt.Errorf("nvme: %v does not allow %d-byte pages: %w", c.cap, PageSize, ErrNotSupported)
	}
	vs := c.dev.Read32(RegVS)
	if err := CheckRegister(RegVS, vs); err != nil {
		return fmt.Errorf("nvme: %w", err)
	}
	c.vs = VS(vs)
	c.stride = c.cap.DoorbellStride()
	if ps := c.dev.DMA().PageSize(); ps%PageSize != 0 {
		return fmt.Errorf("nvme: DMA page size %d is not a multiple of %d: %w", ps, PageSize, ErrNotSupported)
	}
	_, _, adminBufs, err := c.adminLayout()
	if err != nil {
		return err
	}
	if err := c.checkMemlock("Open maps the admin queue first", adminBufs); err != nil {
		return err
	}

	if err := c.disable(); err != nil {
		return err
	}
	if err := c.setupAdmin(); err != nil {
		return err
	}
	cc, err := NewCC(PageSize)
	if err != nil {
		return fmt.Errorf("nvme: %w", err)
	}
	cc = cc.WithAMS(0) // round robin
	c.dev.Write32(RegCC, uint32(cc))
	c.dev.Write32(RegCC, uint32(cc.WithEN(true)))
	if err := c.waitReady(true); err != nil {
		return err
	}

	ctx := context.Background()
	id, err := c.IdentifyController(ctx)
	if err != nil {
		return err
	}
	c.id = id
	c.maxTransfer = c.opts.MaxTransfer
	switch {
	case id.MDTS >= 32:
		// 2^32 pages or more per command: no controller moves that, so
		// this is a broken field, not a limit. Options.MaxTransfer
		// applies, as for MDTS 0.
		c.countIdentify(BadMDTS)
	case id.MDTS != 0:
		if mdts := c.cap.MinPageSize() << id.MDTS; mdts < c.maxTransfer {
			c.maxTransfer = mdts
		}
	}
	c.maxTransfer = c.maxTransfer / PageSize * PageSize
	c.useSGL = c.opts.SGL && id.SGLS.Supported()
	if c.maxTransfer < PageSize {
		return fmt.Errorf("nvme: maximum transfer %d bytes (MDTS %d, Options.MaxTransfer %d) is below one page: %w",
			c.maxTransfer, id.MDTS, c.opts.MaxTransfer, ErrInvalidArgument)
	}

	sq, cq, err := c.SetNumberOfQueues(ctx, c.opts.IOQueues, c.opts.IOQueues)
	if err != nil {
		return err
	}
	c.sqGranted, c.cqGranted = sq, cq
	n := min(sq, cq) + 1
	c.qids = make([]bool, n)
	c.qids[0] = true

	// The synchronous API's queue pairs are made on first use, so a user
	// of a one-queue controller who only submits asynchronously gets it.
	nsync := min(c.opts.SyncQueues, n-1)
	// One bounce buffer per synchronous queue pair, plus spares for
	// commands abandoned after a timeout (they keep theirs until the
	// controller answers).
	nbounce := nsync + 2
	bounce, err := poolBufferSize(c.dev.DMA().PageSize(), nbounce, c.maxTransfer)
	if err != nil {
		return fmt.Errorf("nvme: %w", err)
	}
	rest, _ := c.shadowDoorbellPlan()
	rest = append(rest, dmaBuf{fmt.Sprintf("synchronous API bounce buffers (%d x %d bytes)", nbounce, bounce), nbounce * bounce})
	if err := c.checkMemlock("Open maps the rest of its DMA memory once Identify has sized it", rest); err != nil {
		return err
	}

	if err := c.setupShadowDoorbells(ctx); err != nil {
		return err
	}
	c.syncPairs = make(chan *QueuePair, nsync)
	c.syncMax, c.syncLimit = nsync, nsync
	c.syncPool, err = NewPool(c.dev.DMA(), nbounce, c.maxTransfer)
	if err != nil {
		return fmt.Errorf("nvme: %w", err)
	}
	return nil
}

// checkMemlock asks the Device, if it limits DMA memory (MemlockChecker),
// whether bufs can all be mapped now. The error lists them, so the user
// sees what the memory is for; the Device's error says how much is needed
// in all and how to raise the limit.
func (c *Controller) checkMemlock(what string, bufs []dmaBuf) error {
	mc, ok := c.dev.(MemlockChecker)
	if !ok || len(bufs) == 0 {
		return nil
	}
	sizes := make([]int, len(bufs))
	parts := make([]string, len(bufs))
	for i, b := range bufs {
		sizes[i] = b.size
		parts[i] = fmt.Sprintf("%s: %d bytes", b.what, b.size)
	}
	if err := mc.CheckMemlock(sizes...); err != nil {
		return fmt.Errorf("nvme: %s (%s): %w", what, strings.Join(parts, ", "), err)
	}
	return nil
}

// disable clears CC.EN and waits for CSTS.RDY to clear, which resets the
// controller's queues (3.5.1 step 1).
func (c *Controller) disable() error {
	cc := CC(c.dev.Read32(RegCC))
	if err := CheckRegister(RegCC, uint32(cc)); err != nil {
		return fmt.Errorf("nvme: %w", err)
	}
	if !cc.EN() {
		// Still wait: a controller being disabled by someone else may
		// not have dropped RDY yet.
		return c.waitReady(false)
	}
	c.dev.Write32(RegCC, uint32(cc.WithEN(false)))
	return c.waitReady(false)
}

// waitReady polls CSTS until RDY equals want, for at most CAP.TO. While
// enabling, CFS set means the controller will never become ready.
func (c *Controller) waitReady(want bool) error {
	timeout := c.cap.Timeout()
	start := time.Now()
	for i := 0; ; i++ {
		csts := CSTS(c.dev.Read32(RegCSTS))
		if AllOnes(uint32(csts)) {
			return fmt.Errorf("nvme: waiting for CSTS.RDY=%d: %w", b2i(want), ErrDeviceGone)
		}
		if want && csts.CFS() {
			return fmt.Errorf("nvme: enabling the controller: %v: %w", csts, ErrControllerFatal)
		}
		if csts.RDY() == want {
			return nil
		}
		if time.Since(start) > timeout {
			return fmt.Errorf("nvme: CSTS.RDY did not become %d within CAP.TO = %v (last %v): %w",
				b2i(want), timeout, csts, ErrTimeout)
		}
		pause(i)
	}
}

// pause is the wait between polls of a register that changes in
// milliseconds: spin briefly, then sleep so a slow controller does not
// burn a core.
func pause(i int) {
	switch {
	case i < 64:
		runtime.Gosched()
	default:
		time.Sleep(time.Millisecond)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// dmaBuf is a DMA buffer the controller maps at Open: what it is for and
// its size in bytes, as passed to Alloc.
type dmaBuf struct {
	what string
	size int
}

// adminLayout sizes the admin queue: its depth (Options.AdminDepth capped
// at CAP.MQES+1), the AQA value for it and the buffers setupAdmin maps, in
// the order of adminSQ, adminCQ, adminBuf.
func (c *Controller) adminLayout() (depth int, aqa AQA, bufs []dmaBuf, err error) {
	depth = min(c.opts.AdminDepth, c.cap.MaxQueueEntries())
	if aqa, err = MakeAQA(depth, depth); err != nil {
		return 0, 0, nil, fmt.Errorf("nvme: %w", err)
	}
	return depth, aqa, []dmaBuf{
		{"SQ", depth * queue.SQESize},
		{"CQ", depth * queue.CQESize},
		{"data page", PageSize}, // Identify and log pages
	}, nil
}

// setupAdmin allocates the admin queue and points AQA/ASQ/ACQ at it.
func (c *Controller) setupAdmin() error {
	depth, aqa, bufs, err := c.adminLayout()
	if err != nil {
		return err
	}
	a := c.dev.DMA()
	for i, b := range []*dma.Buffer{&c.adminSQ, &c.adminCQ, &c.adminBuf} {
		if *b, err = a.Alloc(bufs[i].size); err != nil {
			return fmt.Errorf("nvme: allocating admin %s: %w", bufs[i].what, err)
		}
	}
	sqdb, err := c.dev.Doorbell(DoorbellOffset(0, false, c.stride))
	if err != nil {
		return fmt.Errorf("nvme: admin SQ doorbell: %w", err)
	}
	cqdb, err := c.dev.Doorbell(DoorbellOffset(0, true, c.stride))
	if err != nil {
		return fmt.Errorf("nvme: admin CQ doorbell: %w", err)
	}
	c.admin, err = queue.New(queue.Config{
		ID: 0, Depth: depth, SQ: c.adminSQ, CQ: c.adminCQ, PageSize: PageSize,
		SQTail: sqdb, CQHead: cqdb,
	})
	if err != nil {
		return fmt.Errorf("nvme: admin queue: %w", err)
	}
	c.adminLost = make([]bool, depth)
	c.dev.Write32(RegAQA, uint32(aqa))
	c.write64(RegASQ, c.adminSQ.IOVA)
	c.write64(RegACQ, c.adminCQ.IOVA)
	return nil
}

// write64 writes a 64-bit register as two 32-bit stores, low half first.
func (c *Controller) write64(off int, v uint64) {
	c.dev.Write32(off, uint32(v))
	c.dev.Write32(off+4, uint32(v>>32))
}

// CAP is the controller's capabilities register as read at Open.
func (c *Controller) CAP() CAP { return c.cap }

// Version is the controller's VS register as read at Open.
func (c *Controller) Version() VS { return c.vs }

// Identify is the Identify Controller data read at Open.
func (c *Controller) Identify() *IdentifyController { return c.id }

// UsesSGL reports whether I/O commands describe data with SGLs (see
// Options.SGL) rather than PRPs.
func (c *Controller) UsesSGL() bool { return c.useSGL }

// MaxTransfer is the largest number of bytes one command moves: the
// controller's MDTS, capped by Options.MaxTransfer.
func (c *Controller) MaxTransfer() int { return c.maxTransfer }

// QueuesGranted is how many I/O submission and completion queues the
// controller granted at Open (Set Features, Number of Queues).
func (c *Controller) QueuesGranted() (sq, cq int) { return c.sqGranted, c.cqGranted }

// Status reads CSTS and returns an error if the controller is gone or has
// reported a fatal error (CSTS.CFS).
func (c *Controller) Status() error {
	if err := CSTS(c.dev.Read32(RegCSTS)).Check(); err != nil {
		return fmt.Errorf("nvme: %w", err)
	}
	return nil
}

// Close shuts the controller down cleanly: it drains and deletes every
// queue pair (so call it once no other goroutine is submitting or polling), sets CC.SHN to "normal" and waits for CSTS.SHST "complete"
// (bounded by Options.ShutdownTimeout or RTD3E), then frees DMA memory and
// closes the device. It is safe to call more than once, and on nil.
func (c *Controller) Close() error {
	if c == nil {
		return nil
	}
	c.closeOnce.Do(func() { c.closeErr = c.teardown(true) })
	return c.closeErr
}

func (c *Controller) teardown(shutdown bool) error {
	var errs []error
	c.qpMu.Lock()
	pairs := make([]*QueuePair, 0, len(c.pairs))
	for qp := range c.pairs {
		pairs = append(pairs, qp)
	}
	c.qpMu.Unlock()
	for _, qp := range pairs {
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.AdminTimeout)
		if err := qp.close(ctx, shutdown); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	c.qpMu.Lock()
	pools := c.pools
	c.pools = nil
	c.qids = nil // no new queue pairs
	c.qpMu.Unlock()
	c.adminMu.Lock()
	c.closed = true
	c.adminMu.Unlock()
	if shutdown {
		errs = append(errs, c.shutdown())
	}
	// Shut down (or gone), the controller holds no queue: only now may the
	// memory of held pairs, and the pools their commands point into, go.
	errs = append(errs, c.freeHeld())
	if c.syncPool != nil {
		errs = append(errs, c.syncPool.Close())
	}
	for _, p := range pools {
		errs = append(errs, p.Close())
	}
	errs = append(errs, c.freeShadowDoorbells()...)
	a := c.dev.DMA()
	for _, b := range []*dma.Buffer{&c.adminSQ, &c.adminCQ, &c.adminBuf} {
		if b.Len() > 0 {
			errs = append(errs, a.Free(*b))
			*b = dma.Buffer{}
		}
	}
	errs = append(errs, c.dev.Close())
	return errors.Join(errs...)
}

// shutdown asks for a normal shutdown (CC.SHN = 01b) and waits for
// CSTS.SHST to say it is complete (3.6.1).
func (c *Controller) shutdown() error {
	timeout := c.opts.ShutdownTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
		if c.id != nil && c.id.RTD3E != 0 {
			// RTD3E is the controller's own estimate; a floor keeps a
			// tiny value from failing a shutdown that is merely slow.
			timeout = max(time.Duration(c.id.RTD3E)*time.Microsecond, time.Second)
		}
	}
	cc := CC(c.dev.Read32(RegCC))
	if AllOnes(uint32(cc)) {
		return nil // nothing left to shut down
	}
	c.dev.Write32(RegCC, uint32(cc.WithSHN(ShutdownNormal)))
	start := time.Now()
	for i := 0; ; i++ {
		csts := CSTS(c.dev.Read32(RegCSTS))
		if AllOnes(uint32(csts)) {
			return fmt.Errorf("nvme: waiting for shutdown: %w", ErrDeviceGone)
		}
		if csts.SHST() == ShutdownStatusComplete {
			return nil
		}
		if time.Since(start) > timeout {
			return fmt.Errorf("nvme: CSTS.SHST did not reach %v within %v (last %v): %w",
				ShutdownStatusComplete, timeout, csts, ErrTimeout)
		}
		pause(i)
	}
}
