// Package iopoll is the completion side of a polled I/O queue: it tracks
// requests in flight, polls the device for finished ones, and delivers them
// in small batches, with one poller at a time.
//
// Between two device polls that found too little, Poll runs one wait step
// whose behaviour is the Ring's Mode (wait.go, NewWithWait): ModePoll spins
// (the patch's behaviour, no interrupts), ModeInterrupt sleeps on an
// Interrupt (an MSI-X eventfd) after arming it and polling once more, and
// ModeAdaptive spins for an adaptive window first, as QEMU's aio-posix
// does (shared/seeds/004: poll_ns grows x2 while waits end just after it,
// shrinks past poll-max-ns). WaitStats shows the window and counters.
//
// The design is the reap loop of the Linux aio IOPOLL patch ("aio: support
// for IO polling", Jens Axboe, 2018; shared/seeds/000 and 001), in Go and
// generic over the device through the Completer interface. Each part maps
// to a function of that patch:
//
//	Ring.Submitted      aio_iopoll_iocb_issued: add to poll_submitted under
//	                    a short lock; a request already completed during
//	                    issue goes to the front so it is found first.
//	Ring.Poll           aio_iopoll_check + __aio_iopoll_check: deliver what
//	                    is already done, splice submitted into completing,
//	                    deliver again, then poll the device (f_op->iopoll,
//	                    here Completer.Reap), spinning only until min is met
//	                    and never past max. min == 0 is a non-spinning check
//	                    (the v2 review: stop once the caller has max).
//	ErrBusy             the mutex_trylock(&ctx->getevents_lock) that returns
//	                    -EBUSY: one poller at a time, nobody waits.
//	Ring.check          one round of __aio_iopoll_check.
//	Ring.splice         list_splice_init(&poll_submitted, &poll_completing).
//	Ring.reap, Batch    aio_iopoll_reap freeing with iocb_put_many in
//	                    batches of AIO_IOPOLL_BATCH (8): deliver gets at
//	                    most Batch requests per call.
//	Ring.Complete       setting IOCB_POLL_COMPLETED from the driver's poll.
//	Ring.Close          aio_iopoll_reap_events at io_destroy: poll until
//	                    nothing is in flight; then ErrClosed, like ctx->dead.
//
// One change from the patch: aio_iopoll_reap walks the whole completing
// list looking for the COMPLETED bit. Here Complete moves a finished request
// from the completing list to a done list, so each request is touched a
// constant number of times however deep the queue.
//
// Queue-full at submission is handled inline, as in the patch (-EAGAIN to
// the submitter): the layer below (package nvme) returns a retryable error
// and the request never reaches Submitted, so it can never show up as a
// completion.
//
// # Concurrency
//
// Submitted may be called from any goroutine. Poll, PollContext and Close
// take the reaper role; Complete must be called only by its holder (from
// inside Completer.Reap). The deliver callback runs on the reaper, with
// submissions still open: it may resubmit requests.
//
// # Waiting
//
// Between device polls that found too little, the waiter (wait.go) decides
// how to wait, by WaitOptions.Mode: ModePoll spins, yielding the processor
// every 4096 polls; ModeInterrupt blocks on the queue's interrupt (an MSI-X
// eventfd) at once; ModeAdaptive spins inside a window and then blocks, and
// adapts the window to how long each Poll waited for the device (QEMU's
// aio_poll poll_ns, shared/seeds/004). Only the wait counts, not the time
// the deliver callback takes.
//
// Nothing in the steady state allocates: the lists are intrusive and the
// batch array lives in the Ring.
package iopoll
