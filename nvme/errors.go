package nvme

import "errors"

// Sentinel errors. Functions in this package wrap them with the numbers
// that explain the failure ("lba 9000+8 is past the end of namespace 1
// (8192 blocks): invalid argument"); match them with errors.Is. A command
// the controller completed with an error status returns a *StatusError
// instead, which matches the status sentinels in status.go.
var (
	// ErrTimeout: the controller did not answer in time (CSTS.RDY after
	// CAP.TO, or an admin command past its deadline).
	ErrTimeout = errors.New("timed out")

	// ErrDeviceGone: a register read returned all ones. The device was
	// removed, its link is down, or it is being reset; nothing more can be
	// done with it without reopening.
	ErrDeviceGone = errors.New("device gone (register reads all ones)")

	// ErrQueueFull: every slot of the queue is in flight. It is retryable:
	// reap completions (Poll) and submit again.
	ErrQueueFull = errors.New("queue full")

	// ErrControllerFatal: CSTS.CFS is set. The controller needs a reset.
	ErrControllerFatal = errors.New("controller fatal status (CSTS.CFS)")

	// ErrNotReady: the controller is not enabled (CSTS.RDY clear) or is
	// shutting down.
	ErrNotReady = errors.New("controller not ready")

	// ErrClosed: the Controller, Namespace or queue was closed.
	ErrClosed = errors.New("closed")

	// ErrInvalidArgument: the caller's input is out of range. The wrapping
	// error names the input and the limit.
	ErrInvalidArgument = errors.New("invalid argument")

	// ErrBadCompletion: a completion queue entry failed validation (unknown
	// or duplicate command id, SQ head out of range, wrong SQ id).
	ErrBadCompletion = errors.New("bad completion entry")

	// ErrOutOfSpec: data from the device (a register, an Identify page, a
	// log page) holds a value the NVMe specification does not allow, or
	// one nvmepoll cannot use safely. The wrapping error names the field
	// and the value.
	ErrOutOfSpec = errors.New("device data out of spec")

	// ErrNamespaceInactive: Identify Namespace returned an all-zero page,
	// which is how a controller answers for an NSID that is valid (at most
	// NN) but not active (not created or not attached).
	ErrNamespaceInactive = errors.New("namespace not active")

	// ErrNotSupported: the controller does not offer a feature nvmepoll
	// needs or the caller asked for (a command set, an optional command).
	ErrNotSupported = errors.New("not supported by the controller")
)
