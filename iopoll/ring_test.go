package iopoll

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// fakeDevice is a Completer over requests "issued to hardware". Each Reap
// completes up to perReap of them in issue order (all if perReap < 0),
// honouring max unless ignoreMax is set.
type fakeDevice struct {
	ring *Ring

	mu        sync.Mutex // submitters issue while the reaper reaps
	issued    []*Request
	perReap   int
	ignoreMax bool
	err       error
	block     chan struct{} // if set, Reap signals entered and waits for block
	entered   chan struct{}
	reaps     int
	budgets   []int
}

func (d *fakeDevice) Reap(max int) (int, error) {
	if d.block != nil {
		select {
		case d.entered <- struct{}{}:
		default:
		}
		<-d.block
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reaps++
	d.budgets = append(d.budgets, max)
	if d.err != nil {
		return 0, d.err
	}
	n := d.perReap
	if n < 0 || n > len(d.issued) {
		n = len(d.issued)
	}
	if !d.ignoreMax && n > max {
		n = max
	}
	for _, q := range d.issued[:n] {
		d.ring.Complete(q)
	}
	d.issued = d.issued[n:]
	return n, nil
}

// submit issues req to the device, then tells the ring, in the order the
// nvme layer does.
func (d *fakeDevice) submit(t testing.TB, reqs ...*Request) {
	t.Helper()
	for _, q := range reqs {
		d.mu.Lock()
		d.issued = append(d.issued, q)
		d.mu.Unlock()
		if err := d.ring.Submitted(q); err != nil {
			t.Fatal(err)
		}
	}
}

func (d *fakeDevice) reapCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reaps
}

// recorder is a deliver callback that remembers every batch.
type recorder struct {
	mu      sync.Mutex
	batches [][]*Request
	all     []*Request
}

func (r *recorder) deliver(b []*Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, slices.Clone(b))
	r.all = append(r.all, b...)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.all)
}

func newTest(perReap int) (*Ring, *fakeDevice, *recorder) {
	d := &fakeDevice{perReap: perReap}
	rec := &recorder{}
	d.ring = New(d, rec.deliver)
	return d.ring, d, rec
}

func reqs(n int) []*Request {
	rs := make([]*Request, n)
	for i := range rs {
		rs[i] = new(Request)
	}
	return rs
}

func TestPollNeverMoreThanMax(t *testing.T) {
	r, d, rec := newTest(-1)
	rs := reqs(20)
	d.submit(t, rs...)
	n, err := r.Poll(1, 5)
	if err != nil || n != 5 || rec.count() != 5 {
		t.Fatalf("Poll(1, 5) with 20 ready = %d, %v (delivered %d); want 5", n, err, rec.count())
	}
	if d.budgets[0] != 5 {
		t.Errorf("device asked for %d, want max 5", d.budgets[0])
	}
	// A device that finds more than asked loses nothing: the extra wait on
	// the done list for the next Poll, still capped by max.
	d.ignoreMax = true
	if n, err := r.Poll(2, 3); n != 3 || err != nil {
		t.Fatalf("Poll(2, 3) = %d, %v; want 3", n, err)
	}
	if n, err := r.Poll(0, 100); n != 12 || err != nil {
		t.Fatalf("Poll(0, 100) = %d, %v; want the remaining 12", n, err)
	}
	if !slices.Equal(rec.all, rs) {
		t.Error("requests delivered out of completion order, or some twice")
	}
	if r.Inflight() != 0 {
		t.Errorf("Inflight = %d after delivering everything", r.Inflight())
	}
}

func TestPollSpinsUntilMin(t *testing.T) {
	r, d, rec := newTest(1) // one completion per device poll
	d.submit(t, reqs(10)...)
	n, err := r.Poll(4, 10)
	if err != nil || n != 4 {
		t.Fatalf("Poll(4, 10) = %d, %v; want 4", n, err)
	}
	// It stopped as soon as min was met: exactly four device polls.
	if d.reaps != 4 || rec.count() != 4 {
		t.Errorf("%d device polls, %d delivered; want 4 and 4", d.reaps, rec.count())
	}
}

func TestPollMinZeroDoesNotSpin(t *testing.T) {
	r, d, _ := newTest(0) // nothing ever finishes
	d.submit(t, reqs(3)...)
	n, err := r.Poll(0, 3)
	if err != nil || n != 0 {
		t.Fatalf("Poll(0, 3) = %d, %v; want 0, nil", n, err)
	}
	if d.reaps != 1 {
		t.Errorf("min 0 polled the device %d times, want once", d.reaps)
	}
	// With something finished, min 0 still polls once and delivers it.
	d.perReap = -1
	if n, _ := r.Poll(0, 3); n != 3 || d.reaps != 2 {
		t.Errorf("Poll(0, 3) = %d after %d device polls; want 3 after 2", n, d.reaps)
	}
}

func TestPollReturnsWhenNothingInFlight(t *testing.T) {
	r, d, _ := newTest(-1)
	if n, err := r.Poll(1, 1); n != 0 || err != nil || d.reaps != 0 {
		t.Fatalf("Poll on an empty ring = %d, %v after %d device polls; want 0, nil, 0", n, err, d.reaps)
	}
	d.submit(t, reqs(2)...)
	// min 5 cannot be met: Poll returns what there is instead of spinning
	// forever.
	if n, err := r.Poll(5, 10); n != 2 || err != nil {
		t.Fatalf("Poll(5, 10) with 2 in flight = %d, %v; want 2", n, err)
	}
}

func TestPollRejectsBadLimits(t *testing.T) {
	r, _, _ := newTest(-1)
	for _, lim := range [][2]int{{-1, 1}, {2, 1}, {0, 0}} {
		if _, err := r.Poll(lim[0], lim[1]); err == nil || !strings.Contains(err.Error(), "min") {
			t.Errorf("Poll(%d, %d): err %v", lim[0], lim[1], err)
		}
	}
}

func TestBatchesOfAtMostEight(t *testing.T) {
	r, d, rec := newTest(-1)
	d.submit(t, reqs(50)...)
	if n, err := r.Poll(1, 50); n != 50 || err != nil {
		t.Fatalf("Poll(1, 50) = %d, %v", n, err)
	}
	var sizes []int
	for _, b := range rec.batches {
		sizes = append(sizes, len(b))
	}
	if want := []int{8, 8, 8, 8, 8, 8, 2}; !slices.Equal(sizes, want) {
		t.Errorf("batch sizes %v, want %v", sizes, want)
	}
}

func TestCompletedDuringIssueGoesFirst(t *testing.T) {
	r, d, rec := newTest(0)
	a, b := new(Request), new(Request)
	d.submit(t, a)
	// b is issued to the device, and a reaper finds its completion before
	// the submitter gets to Submitted.
	d.mu.Lock()
	d.issued = []*Request{b}
	d.mu.Unlock()
	d.perReap = 1
	if n, _ := r.Poll(0, 1); n != 0 {
		t.Fatalf("Poll delivered %d; b is not submitted yet", n)
	}
	if !b.Done() || a.Done() {
		t.Fatalf("after the device poll: a done %v, b done %v; want false, true", a.Done(), b.Done())
	}
	c := new(Request)
	d.perReap = 0
	d.submit(t, c)
	if err := r.Submitted(b); err != nil {
		t.Fatal(err)
	}
	if r.submitted.head != b {
		t.Fatal("the completed request did not go to the front of the submitted list")
	}
	// The next Poll finds it without asking the device.
	reaps := d.reaps
	if n, err := r.Poll(1, 1); n != 1 || err != nil || rec.all[0] != b {
		t.Fatalf("Poll(1, 1) = %d, %v, delivered %v; want b", n, err, rec.all)
	}
	if d.reaps != reaps {
		t.Error("Poll asked the device for a completion it already had")
	}
	if b.Done() {
		t.Error("a delivered request still says Done")
	}
	if r.Inflight() != 2 {
		t.Errorf("Inflight = %d, want 2 (a and c)", r.Inflight())
	}
}

func TestConcurrentPollIsBusy(t *testing.T) {
	r, d, _ := newTest(-1)
	d.block, d.entered = make(chan struct{}), make(chan struct{}, 1)
	d.submit(t, reqs(1)...)
	first := make(chan error)
	go func() {
		_, err := r.Poll(1, 1)
		first <- err
	}()
	<-d.entered // the first poller is inside the device poll
	start := time.Now()
	if _, err := r.Poll(1, 1); !errors.Is(err, ErrBusy) {
		t.Fatalf("second Poll: %v, want ErrBusy", err)
	}
	if _, err := r.PollContext(context.Background(), 0, 1); !errors.Is(err, ErrBusy) {
		t.Fatalf("second PollContext: %v, want ErrBusy", err)
	}
	if time.Since(start) > time.Second {
		t.Error("ErrBusy took a second: the second Poll waited")
	}
	close(d.block)
	if err := <-first; err != nil {
		t.Fatalf("first Poll: %v", err)
	}
}

func TestDeliverMayResubmitButNotPoll(t *testing.T) {
	d := &fakeDevice{perReap: -1}
	var inner error
	resubmitted := 0
	var r *Ring
	r = New(d, func(b []*Request) {
		_, inner = r.Poll(0, 1)
		for _, q := range b {
			if resubmitted < 3 {
				resubmitted++
				d.submit(t, q)
			}
		}
	})
	d.ring = r
	d.submit(t, reqs(1)...)
	total := 0
	for i := 0; i < 10 && r.Inflight() > 0; i++ {
		n, err := r.Poll(1, 1)
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if !errors.Is(inner, ErrBusy) {
		t.Errorf("Poll from inside deliver: %v, want ErrBusy", inner)
	}
	if total != 4 || r.Inflight() != 0 {
		t.Errorf("delivered %d (want 4: once plus 3 resubmissions), %d in flight", total, r.Inflight())
	}
}

func TestPollContextGivesUp(t *testing.T) {
	r, d, _ := newTest(0) // never completes
	d.submit(t, reqs(1)...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	n, err := r.PollContext(ctx, 1, 1)
	if n != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("PollContext on a stuck device = %d, %v; want 0, DeadlineExceeded", n, err)
	}
	// It polled many times between looks at the context.
	if d.reapCount() < ctxCheckEvery {
		t.Errorf("only %d device polls before giving up", d.reapCount())
	}
	// The ring is still usable and the request still in flight.
	d.perReap = -1
	if n, err := r.Poll(1, 1); n != 1 || err != nil {
		t.Errorf("Poll after the timeout = %d, %v", n, err)
	}
}

func TestDeviceErrorIsReturned(t *testing.T) {
	r, d, _ := newTest(-1)
	d.ignoreMax = true // the first Poll finishes all three, delivers one
	gone := errors.New("nvme: device gone")
	d.submit(t, reqs(3)...)
	if n, err := r.Poll(1, 1); n != 1 || err != nil {
		t.Fatal(n, err)
	}
	d.err = gone
	d.submit(t, reqs(1)...)
	// Two finished requests are delivered before the device poll fails.
	n, err := r.Poll(3, 3)
	if n != 2 || !errors.Is(err, gone) {
		t.Fatalf("Poll = %d, %v; want 2, %v", n, err, gone)
	}
}

func TestCloseDrainsInFlight(t *testing.T) {
	r, d, rec := newTest(1)
	rs := reqs(10)
	d.submit(t, rs...)
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rec.count() != 10 || r.Inflight() != 0 {
		t.Fatalf("Close delivered %d of 10, %d still in flight", rec.count(), r.Inflight())
	}
	if err := r.Submitted(new(Request)); !errors.Is(err, ErrClosed) {
		t.Errorf("Submitted after Close: %v", err)
	}
	if _, err := r.Poll(0, 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Poll after Close: %v", err)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestCloseGivesUpAndResumes(t *testing.T) {
	r, d, rec := newTest(0)
	d.submit(t, reqs(3)...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := r.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "3 requests in flight") {
		t.Fatalf("Close on a stuck device: %v", err)
	}
	d.mu.Lock()
	d.perReap = -1
	d.mu.Unlock()
	if err := r.Close(context.Background()); err != nil || rec.count() != 3 {
		t.Fatalf("second Close: %v, %d delivered", err, rec.count())
	}
}

func TestCloseReportsDeviceError(t *testing.T) {
	r, d, _ := newTest(0)
	d.err = errors.New("device gone")
	d.submit(t, reqs(2)...)
	if err := r.Close(context.Background()); err == nil || !strings.Contains(err.Error(), "2 requests in flight: device gone") {
		t.Fatalf("Close: %v", err)
	}
}

func TestCloseWaitsForRunningPoll(t *testing.T) {
	r, d, rec := newTest(-1)
	d.block, d.entered = make(chan struct{}), make(chan struct{}, 1)
	d.submit(t, reqs(2)...)
	polled := make(chan int)
	go func() {
		n, _ := r.Poll(1, 1)
		polled <- n
	}()
	<-d.entered
	// Close cannot get the reaper role while the Poll runs.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := r.Close(ctx); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "running Poll") {
		t.Fatalf("Close during Poll: %v", err)
	}
	close(d.block)
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := <-polled; n != 1 || rec.count() != 2 {
		t.Errorf("Poll delivered %d, total %d; want 1 by Poll and 2 in all", n, rec.count())
	}
}

// Many submitters, two would-be reapers, and a device that often completes
// a request before its submitter has called Submitted. Every request must
// be delivered exactly once.
func TestManySubmittersOneReaper(t *testing.T) {
	const submitters, each = 4, 2000
	d := &fakeDevice{perReap: -1}
	var delivered [submitters * each]atomic.Int32
	var total atomic.Int64
	type req struct {
		Request // first, so the deliver callback can recover req
		id      int
	}
	all := make([]req, submitters*each)
	for i := range all {
		all[i].id = i
	}
	r := New(d, func(b []*Request) {
		if len(b) > Batch {
			t.Errorf("batch of %d", len(b))
		}
		for _, q := range b {
			id := (*req)(unsafe.Pointer(q)).id
			delivered[id].Add(1)
		}
		total.Add(int64(len(b)))
	})
	d.ring = r

	var wg sync.WaitGroup
	for s := 0; s < submitters; s++ {
		wg.Go(func() {
			for i := s * each; i < (s+1)*each; i++ {
				d.mu.Lock()
				d.issued = append(d.issued, &all[i].Request)
				d.mu.Unlock()
				if err := r.Submitted(&all[i].Request); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	var busy atomic.Int64
	var reapers sync.WaitGroup
	for range 2 {
		reapers.Go(func() {
			for total.Load() < submitters*each {
				n, err := r.Poll(1, 32)
				if n == 0 {
					runtime.Gosched()
				}
				if errors.Is(err, ErrBusy) {
					busy.Add(1)
				} else if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	reapers.Wait()
	for i := range delivered {
		if n := delivered[i].Load(); n != 1 {
			t.Fatalf("request %d delivered %d times", i, n)
		}
	}
	if r.Inflight() != 0 {
		t.Errorf("Inflight = %d at the end", r.Inflight())
	}
	t.Logf("%d ErrBusy answers to the second reaper", busy.Load())
}

func TestSteadyStateDoesNotAllocate(t *testing.T) {
	q := new(Request)
	var pending *Request
	var r *Ring
	r = New(CompleterFunc(func(int) (int, error) {
		if pending == nil {
			return 0, nil
		}
		r.Complete(pending)
		pending = nil
		return 1, nil
	}), func([]*Request) {})
	allocs := testing.AllocsPerRun(1000, func() {
		pending = q
		r.Submitted(q)
		if n, err := r.Poll(1, 1); n != 1 || err != nil {
			t.Fatal(n, err)
		}
	})
	if allocs != 0 {
		t.Errorf("Submitted + Poll allocate %v times per request", allocs)
	}
}
