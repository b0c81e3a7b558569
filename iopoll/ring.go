package iopoll

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// Batch is the most finished requests handed to the deliver callback at
// once (AIO_IOPOLL_BATCH in the aio patch).
const Batch = 8

const (
	// ctxCheckEvery is how many unsuccessful device polls pass between two
	// looks at the context: ctx.Err takes a lock, a device poll is a few
	// loads.
	ctxCheckEvery = 64
	// yieldEvery is how many unsuccessful device polls pass between two
	// runtime.Gosched calls in wait. Rarely: Gosched puts the goroutine on
	// the global run queue and wakes an idle P (wakep), so yielding every
	// few dozen polls kept a second thread spinning on another CPU; in a
	// 2-vCPU guest that halved QD1 IOPS. The scheduler's asynchronous
	// preemption (every 10 ms) keeps other goroutines running anyway; the
	// yield only shortens their wait when GOMAXPROCS is oversubscribed.
	yieldEvery = 4096
)

var (
	// ErrBusy is returned by Poll when another goroutine is polling the
	// same Ring. It is returned at once; nothing waits.
	ErrBusy = errors.New("iopoll: another goroutine is already polling this ring")
	// ErrClosed is returned by Submitted and Poll after Close.
	ErrClosed = errors.New("iopoll: ring is closed")
)

// Request is the part of an I/O request the Ring needs: an intrusive list
// link and a done flag. Embed it in the caller's request type and recover
// the outer type in the deliver callback (for example by putting Request
// first and converting the pointer, or by a lookup the caller owns).
//
// A Request belongs to the Ring from Submitted until it is delivered, and
// must not be submitted again before that. The zero value is ready to use.
type Request struct {
	next, prev *Request
	// done is set by Complete. It is atomic because a request can complete
	// while its submitter is still between issuing it and Submitted.
	done atomic.Bool
	// completing says the request is on Ring.completing. Only the reaper
	// reads or writes it.
	completing bool
}

// Done reports whether the request has been completed and not yet
// delivered. Inside the deliver callback it is already false again.
func (r *Request) Done() bool { return r.done.Load() }

// Completer polls the device once for finished requests.
type Completer interface {
	// Reap checks the hardware once without waiting (for example
	// queue.Pair.Next until empty, then one UpdateHead), calls
	// Ring.Complete for each finished request, and returns how many it
	// found. It should complete at most max; more are not lost, only
	// delivered by a later Poll. An error means the device is unusable (it
	// is gone, or returned garbage); Poll returns it to its caller as is.
	Reap(max int) (int, error)
}

// CompleterFunc adapts a function to the Completer interface.
type CompleterFunc func(max int) (int, error)

// Reap calls f(max).
func (f CompleterFunc) Reap(max int) (int, error) { return f(max) }

// Ring tracks in-flight requests for one polled completion source (one
// queue pair) and runs the reap loop. Submitters call Submitted from any
// goroutine; one goroutine at a time polls.
type Ring struct {
	c       Completer
	deliver func(batch []*Request)

	// Submitter side: taken for a few instructions per request.
	mu         sync.Mutex
	submitted  list
	nsubmitted atomic.Int32 // len(submitted), readable without mu
	closed     bool         // written holding both mu and reaper

	_ [64]byte // keep submitters' and the reaper's hot fields on separate cache lines

	// Reaper side: owned by whoever holds reaper.
	reaper     sync.Mutex
	completing list // issued, not finished
	done       list // finished, not yet delivered
	batch      [Batch]*Request
	inflight   atomic.Int64 // submitted and not yet delivered
	w          waiter       // the wait step's mode and state (wait.go)
}

// New returns a Ring that polls c and hands finished requests to deliver, at
// most Batch at a time, on the polling goroutine. deliver may submit
// requests again (Submitted does not need the reaper); a Poll from inside
// deliver gets ErrBusy. The batch slice is reused: do not keep it.
func New(c Completer, deliver func(batch []*Request)) *Ring {
	return &Ring{c: c, deliver: deliver}
}

// Submitted hands an issued request to the Ring. Call it after the command
// is in the queue and the doorbell written; the request may complete (be
// passed to Complete by a reaper) before Submitted is called, and then goes
// to the front so the next Poll finds it first.
//
// A full queue at submission is the submitter's business: it gets a
// retryable error from the layer below and never calls Submitted, so a
// rejected request never appears as a completion.
//
// After Close, Submitted returns ErrClosed and does not take the request.
func (r *Ring) Submitted(req *Request) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	if req.done.Load() {
		r.submitted.pushFront(req)
	} else {
		r.submitted.pushBack(req)
	}
	r.nsubmitted.Store(int32(r.submitted.n))
	r.inflight.Add(1)
	r.mu.Unlock()
	return nil
}

// Complete marks req finished. Only the reaper calls it: from inside
// Completer.Reap, or otherwise while holding the reaper role. Completing a
// request twice before it is delivered is harmless.
func (r *Ring) Complete(req *Request) {
	req.done.Store(true)
	if req.completing {
		req.completing = false
		r.completing.remove(req)
		r.done.pushBack(req)
	}
}

// Inflight returns the number of requests submitted and not yet delivered.
func (r *Ring) Inflight() int { return int(r.inflight.Load()) }

// Poll delivers between min and max finished requests through the deliver
// callback and returns how many it delivered.
//
// It first delivers what is already finished, then takes in newly submitted
// requests, then polls the device, repeating the device poll only while
// fewer than min have been delivered. It never delivers more than max and
// stops as soon as max are delivered. min == 0 is a check that polls the
// device once and does not spin. Poll returns fewer than min when nothing
// is left in flight.
//
// Only one goroutine polls at a time: a concurrent Poll returns ErrBusy at
// once. A Completer error is returned with the count delivered so far.
func (r *Ring) Poll(min, max int) (int, error) {
	return r.poll(nil, min, max)
}

// PollContext is Poll that gives up with ctx.Err() (and the count delivered
// so far) when ctx is done while it spins. The context is looked at every
// few dozen device polls, not on each one.
func (r *Ring) PollContext(ctx context.Context, min, max int) (int, error) {
	return r.poll(ctx, min, max)
}

func (r *Ring) poll(ctx context.Context, min, max int) (int, error) {
	if min < 0 || max < 1 || min > max {
		return 0, fmt.Errorf("iopoll: Poll(min %d, max %d): need 0 <= min <= max and max >= 1", min, max)
	}
	if !r.reaper.TryLock() {
		return 0, ErrBusy
	}
	defer r.reaper.Unlock()
	if r.closed {
		return 0, ErrClosed
	}
	defer r.w.end()
	n := 0
	for spins := 0; ; spins++ {
		again, err := r.check(&n, min, max)
		if err != nil || !again {
			return n, err
		}
		if ctx != nil && spins%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return n, err
			}
		}
		if err := r.w.wait(ctx, spins); err != nil {
			return n, err
		}
	}
}

// check is one round of the reap loop (__aio_iopoll_check). It adds what it
// delivers to *n and reports whether the caller should wait and poll again:
// fewer than min delivered and requests still in flight.
func (r *Ring) check(n *int, min, max int) (again bool, err error) {
	enough := func() bool { return *n >= max || min > 0 && *n >= min }

	// What is already finished may satisfy the caller without touching
	// the device.
	if !r.done.empty() {
		r.reap(n, max)
		if enough() {
			return false, nil
		}
	}
	// Take in the new working set (list_splice_init of poll_submitted).
	if r.nsubmitted.Load() != 0 {
		r.splice()
	}
	if r.completing.empty() && r.done.empty() {
		return false, nil
	}
	// Requests that completed during issue came in with the splice.
	r.reap(n, max)
	if enough() {
		return false, nil
	}
	// reap left done empty (or *n would be max): the device may give up
	// to max-*n more.
	if _, err := r.c.Reap(max - *n); err != nil {
		return false, err
	}
	if !r.done.empty() {
		r.w.found() // the wait (if any) ends here, before delivery
	}
	r.reap(n, max)
	if *n >= min {
		return false, nil // includes min == 0: one device poll, no spin
	}
	return !r.completing.empty() || r.nsubmitted.Load() != 0, nil
}

// splice moves the submitted list into the reaper's hands. Requests that
// completed during issue (at the front) go straight to done, the rest to
// completing, so Complete and reap never walk unfinished requests.
func (r *Ring) splice() {
	r.mu.Lock()
	l := r.submitted.take()
	r.nsubmitted.Store(0)
	r.mu.Unlock()
	for req := l.head; req != nil; {
		next := req.next
		if req.done.Load() {
			r.done.pushBack(req)
		} else {
			req.completing = true
			r.completing.pushBack(req)
		}
		req = next
	}
}

// reap delivers finished requests until done is empty or *n reaches max, in
// batches of at most Batch (aio_iopoll_reap and iocb_put_many).
func (r *Ring) reap(n *int, max int) {
	for *n < max && !r.done.empty() {
		k := 0
		for k < Batch && *n < max {
			req := r.done.popFront()
			if req == nil {
				break
			}
			req.done.Store(false)
			r.batch[k] = req
			k++
			*n++
		}
		r.inflight.Add(-int64(k))
		b := r.batch[:k]
		r.deliver(b)
		clear(b) // do not keep delivered requests reachable
	}
}

// Close stops the Ring: later Submitted and Poll calls return ErrClosed,
// and every request still in flight is polled to completion and delivered
// (aio_iopoll_reap_events). Close waits for a running Poll to return. If
// ctx ends first, Close returns an error wrapping ctx.Err() with requests
// still in flight; calling Close again resumes the drain. Close of a closed,
// drained Ring returns nil.
func (r *Ring) Close(ctx context.Context) error {
	for spins := 0; !r.reaper.TryLock(); spins++ {
		if spins%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("iopoll: close: waiting for the running Poll: %w", err)
			}
		}
		runtime.Gosched()
	}
	defer r.reaper.Unlock()

	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	defer r.w.end()

	for spins := 0; !r.completing.empty() || !r.done.empty() || r.nsubmitted.Load() != 0; spins++ {
		n := 0
		again, err := r.check(&n, 1, math.MaxInt)
		if err != nil {
			return fmt.Errorf("iopoll: close with %d requests in flight: %w", r.Inflight(), err)
		}
		if !again {
			continue
		}
		if spins%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("iopoll: close gave up with %d requests in flight: %w", r.Inflight(), err)
			}
		}
		// The wait step is the only place that decides how to wait
		// (busy-poll, adaptive window, interrupt: see wait.go).
		if err := r.w.wait(ctx, spins); err != nil {
			return fmt.Errorf("iopoll: close with %d requests in flight: %w", r.Inflight(), err)
		}
	}
	return nil
}
