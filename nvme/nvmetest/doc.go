// Package nvmetest is an in-process model of an NVMe controller on PCIe, as
// net/http/httptest is for HTTP: the driver code that runs on a VFIO-bound
// SSD runs unchanged in `go test` on any machine. The model replaces only
// BAR0 and the DMA memory; everything above them (queue pairs, the reap
// loop, nvme.Controller) is the real code.
//
// A *Controller implements the nvme.Device interface (Read32, Write32,
// Doorbell, DMA, Close) without importing package nvme, so nvme's own tests
// can use it:
//
//	c := nvmetest.NewController(t, nvmetest.Config{})   // closed by t.Cleanup
//	ctrl, err := nvme.New(c, ...)                        // the driver, unchanged
//
// The model is written from the NVMe base specification 2.0 and the NVM
// Command Set specification 1.0, independently of the driver's spec types,
// so a test that passes shows the two agree on the wire format.
//
// # What it models
//
// Registers: CAP (MQES, CQR=1, TO, DSTRD=0, CSS=NVM, MPSMIN=0, MPSMAX=4),
// VS 1.4, INTMS/INTMC, CC, CSTS, AQA, ASQ, ACQ, and doorbells from 0x1000
// with a 4-byte stride (NSSR writes are ignored: CAP.NSSRS is 0). CC.EN 0->1 checks CC (CSS 0, MPS, AMS 0,
// IOSQES 6, IOCQES 4: stricter than the spec, which lets IOSQES/IOCQES wait
// until I/O queues are created, to catch a driver that forgets them), AQA
// and page-aligned ASQ/ACQ; a bad configuration sets CSTS.CFS and
// EnableError says why. Otherwise CSTS.RDY follows after Config.ReadyDelay.
// CC.EN 1->0 is a controller reset: every queue and held command goes,
// features return to their defaults, namespace data stays. CC.SHN sets
// CSTS.SHST to processing, then complete after Config.ShutdownDelay; then
// no further commands run until a reset.
//
// Admin commands: Identify (CNS 0 namespace, 1 controller, 2 active
// namespace list, 3 namespace id descriptors), Set/Get Features (Arbitration,
// Power Management, Temperature Threshold, Error Recovery, Volatile Write
// Cache, Number of Queues, Interrupt Coalescing and Vector Configuration,
// Write Atomicity, Async Event Configuration; unknown ids fail with Invalid
// Field, the save bit with Feature Not Saveable), Create/Delete I/O CQ and
// SQ with the spec's checks, Get Log Page (Error Information and SMART /
// Health, with offsets), Asynchronous Event Request, Abort (of commands
// held by a fault), Format NVM
// (switch between the 512 B and 4 KiB LBA formats, erase), and Doorbell
// Buffer Config when Config.ShadowDoorbells is set. With shadow doorbells,
// as on QEMU, an SQ's shadow tail is read only from its own MMIO doorbell
// write until the model has drained it and published EventIdx: a host
// that skips an MMIO write it owed sees its commands sit.
//
// NVM commands: Read, Write (FUA accepted), Flush, Write Zeroes, Dataset
// Management (deallocated blocks read as zeros), Compare (a mismatch is
// Compare Failure, SCT 2 SC 0x85) and Verify, with PRPs (an offset first
// page, PRP2 as data or list pointer, chained list pages) or, with
// Config.SGL, SGL Data Block, Bit Bucket, Segment and Last Segment
// descriptors. Transfers over MDTS fail with Invalid Field in Command, LBAs
// past the end with LBA Out of Range (SCT 0 SC 0x80). Errors the model finds
// itself carry DNR. Namespaces are sparse: 4 KiB chunks are allocated on
// first write and freed on deallocate, so a 1 TiB namespace costs nothing.
//
// # Processing
//
// By default a worker goroutine does what the hardware does: a doorbell
// write wakes it; it fetches SQEs from host memory, executes them, and posts
// each CQE by writing DW0-DW2 and then DW3 (status, phase, command id) with
// one atomic store. It never overflows a completion queue: when a CQ is
// full it stops fetching from the SQs that feed it until the host writes the
// CQ head doorbell. Config.Inline instead runs all of this inside the
// doorbell write, on the caller's goroutine, for deterministic tests and
// cheap benchmarks. Close stops the worker and any timers.
//
// Doorbell writes for queues that do not exist, SQ tails out of range and CQ
// heads past the controller's tail are ignored, counted in
// Stats.InvalidDoorbellWrites, and, as QEMU does, reported as an Error
// asynchronous event only if an Asynchronous Event Request (up to 4) is
// outstanding. Once an event of a type is posted, later ones of that type
// wait until the host reads its log page (Error Information, SMART /
// Health) without Retain Asynchronous Event.
//
// # DMA
//
// DMA returns a *Memory: anonymous mmap'd memory outside the Go heap at
// fake IOVAs from 0x1_0000_0000 up, never equal to host addresses, with an
// unmapped guard page after each buffer. The model reaches memory only
// through its translation table. An access to an unmapped IOVA behaves as
// on QEMU behind an IOMMU: a data transfer still succeeds, the data is
// dropped (or reads as zeros), and DMAFaults counts it, so tests should
// check that DMAFaults is 0; an SQ entry or CQ entry that cannot be read or
// written makes the controller fatal (CSTS.CFS), as QEMU's nvme_process_sq
// and nvme_post_cqes do.
//
// # Fault injection
//
// Inject adds a Fault: a Match function (MatchOpcode, MatchCommand,
// MatchLBA, MatchIdentify, or your own over the decoded Command), Skip and
// Count to pick the nth command, and effects: an error Status instead of
// executing, a Delay or Hold (abortable), a dropped completion, a duplicate
// completion, a completion with the wrong phase (never visible), an unknown
// command id (0xFFFF), an out-of-range SQ head, Identify data edited before
// it is sent (out-of-spec controller or namespace fields). FailLBA is a
// shortcut for media errors at chosen LBAs. Controller-wide: SetFatal
// (CSTS.CFS), SetGone (registers read all ones, as after surprise
// removal), Config.NeverReady, Config.NeverDisables and Config.FailEnable.
// Stats counts commands by opcode, doorbell writes, posted completions and
// errors.
//
// # Defaults
//
// Config's zero value gives: one namespace of 64 MiB with 512-byte blocks,
// CAP.MQES 2047, CAP.TO 1 (500 ms), MDTS 7 (512 KiB), 16 I/O queue pairs,
// serial "nvmetest-0001", model "nvmepoll model", firmware "1.0", VID and
// SSVID 0x1b36, a volatile write cache, no SGLs, no shadow doorbells,
// worker-goroutine processing, RDY at once.
package nvmetest
