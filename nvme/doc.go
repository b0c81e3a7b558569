// Package nvme drives an NVMe controller from user space: it brings the
// controller up, sends admin commands, creates I/O queue pairs and does
// block I/O on namespaces, by polling, with no system calls on the I/O path
// while completions come fast. Each queue pair has a CompletionMode
// (QueueOptions, irq.go): ModePoll always spins; ModeInterrupt and
// ModeAdaptive (the default when the Device can deliver MSI-X interrupts)
// sleep on the CQ's interrupt vector when completions are slow, so an idle
// process does not burn a core.
//
// # Layering
//
// nvme sits on three smaller packages and one interface:
//
//   - Device (device.go) is the hardware: BAR0 registers, doorbells and DMA
//     memory. A VFIO-bound PCI function provides one (OpenPCI), and so does
//     the in-process model in nvme/nvmetest, which is how every test here
//     runs without hardware.
//   - queue is one submission/completion queue pair: 64-byte commands in,
//     16-byte completions out, command ids, phase bits and doorbells. It
//     knows the entry layouts and nothing of what commands mean.
//   - iopoll is the reap loop that turns completions into finished requests.
//
// This package adds the meaning. The spec layer is plain data and pure
// functions, usable on its own (nvmectl and tests use it to decode pages
// they fetched):
//
//   - regs.go: register offsets (RegCAP, RegCC, ...) and typed register
//     values with field methods (CAP, VS, CC, CSTS, AQA), DoorbellOffset.
//   - opcodes.go: admin and NVM opcodes, Identify CNS values, feature and
//     log page identifiers, all with spec names for messages.
//   - identify.go: Identify Controller, Identify Namespace and the active
//     namespace list, decoded and checked.
//   - logpage.go: the SMART / Health Information and Error Information logs.
//   - status.go, errors.go: the error model below.
//
// On top, Controller (Open) owns the admin queue and the I/O queue pairs,
// and Namespace offers io.ReaderAt / io.WriterAt and context-aware block
// calls.
//
// # Device data is input
//
// Registers, Identify pages, log pages and completions come from the
// device and are checked before use like any other untrusted input. A
// register reading all ones means the device is gone (ErrDeviceGone); a
// field outside what the specification allows, or outside what nvmepoll
// can use safely (an Identify Namespace block size below 512 bytes, an
// entry size range that excludes 64-byte commands), is ErrOutOfSpec with
// the field and value named. Each Identify check that fires on data a
// Controller read, rejecting it or clamping a field (MDTS, NPSS), is
// counted in Counters.BadIdentify by IdentifyAnomaly. No value from the
// device can make this package panic or index out of range; fuzz tests hold
// the parsers to it.
//
// # Errors
//
// Failures are matched with errors.Is against sentinels, never by string.
// Errors that did not come from a completion wrap one of:
//
//	ErrInvalidArgument  the caller's input is out of range; the message names
//	                    the input and the limit
//	ErrQueueFull        every slot is in flight; reap and retry
//	ErrTimeout          the controller did not answer in time
//	ErrDeviceGone       a register read all ones
//	ErrControllerFatal  CSTS.CFS is set; the controller needs a reset
//	ErrNotReady, ErrClosed, ErrBadCompletion, ErrOutOfSpec,
//	ErrNamespaceInactive, ErrNotSupported
//
// A command the controller completed with an error status returns a
// *StatusError. It keeps everything the controller said (status code type
// SCT, status code SC, Do Not Retry, More, Command Retry Delay) and which
// command it was (opcode, admin or I/O, command id, namespace, LBA), and
// its message says it in spec terms:
//
//	nvme: Read (0x02) cid 7 nsid 1: Unrecovered Read Error (sct 0x2 sc 0x81, dnr) at lba 1234
//
// A *StatusError matches the sentinel for its status, so callers need not
// know status numbers:
//
//	switch {
//	case errors.Is(err, nvme.ErrLBAOutOfRange):    // SCT 0 SC 0x80
//	case errors.Is(err, nvme.ErrUnrecoveredRead):  // SCT 2 SC 0x81
//	case errors.Is(err, nvme.ErrInvalidQueueSize): // SCT 1 SC 0x02, admin only
//	}
//
// Command specific codes (SCT 1) mean different things for admin and NVM
// I/O commands, so they match only for the kind of command they are
// defined for. For the numbers themselves use errors.As:
//
//	var se *nvme.StatusError
//	if errors.As(err, &se) && !se.DNR { /* the same command may succeed */ }
//
// Retryable(err) answers that question for both kinds of error.
package nvme
