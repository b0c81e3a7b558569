package iopoll

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// chanInterrupt is an Interrupt over a one-slot channel, as the nvmetest
// model provides: raise never blocks, repeated raises merge.
type chanInterrupt struct {
	ch     chan struct{}
	raised atomic.Uint64

	// Masking, used only through maskedChan: like MSI-X, a raise while
	// masked is held (pending) and sent on unmask.
	mu              sync.Mutex
	masked, pending bool
	sent            atomic.Uint64
}

func newChanInterrupt() *chanInterrupt { return &chanInterrupt{ch: make(chan struct{}, 1)} }

func (c *chanInterrupt) raise() {
	c.raised.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.masked {
		c.pending = true
		return
	}
	c.send()
}

func (c *chanInterrupt) send() {
	c.sent.Add(1)
	select {
	case c.ch <- struct{}{}:
	default:
	}
}

// maskedChan is a chanInterrupt that implements Masker.
type maskedChan struct{ *chanInterrupt }

func (m maskedChan) Mask() {
	m.mu.Lock()
	m.masked = true
	m.mu.Unlock()
}

func (m maskedChan) Unmask() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.masked = false
	if m.pending {
		m.pending = false
		m.send()
	}
}

func (m maskedChan) isMasked() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.masked
}

func (c *chanInterrupt) Clear() error {
	select {
	case <-c.ch:
	default:
	}
	return nil
}

func (c *chanInterrupt) Wait(d time.Duration) (bool, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.ch:
		return true, nil
	case <-t.C:
		return false, nil
	}
}

// delayDevice completes each issued request after a delay, on its own
// goroutine like hardware: it posts the completion, then raises the
// interrupt. Reap takes what is posted.
type delayDevice struct {
	ring  *Ring
	irq   *chanInterrupt
	mu    sync.Mutex
	post  []*Request
	reaps atomic.Int64
}

func (d *delayDevice) Reap(max int) (int, error) {
	d.reaps.Add(1)
	d.mu.Lock()
	n := min(max, len(d.post))
	done := d.post[:n]
	d.post = d.post[n:]
	d.mu.Unlock()
	for _, r := range done {
		d.ring.Complete(r)
	}
	return n, nil
}

// issue hands r to the ring and completes it after delay (at once if 0).
func (d *delayDevice) issue(t testing.TB, r *Request, delay time.Duration) {
	t.Helper()
	if err := d.ring.Submitted(r); err != nil {
		t.Fatal(err)
	}
	complete := func() {
		d.mu.Lock()
		d.post = append(d.post, r)
		d.mu.Unlock()
		d.irq.raise()
	}
	if delay == 0 {
		go complete()
		return
	}
	time.AfterFunc(delay, complete)
}

func newDelayRing(t testing.TB, mode Mode, delivered *int) (*Ring, *delayDevice) {
	return newDelayRingMask(t, mode, false, delivered)
}

// newDelayRingMask is newDelayRing whose interrupt is a Masker if masked.
func newDelayRingMask(t testing.TB, mode Mode, masked bool, delivered *int) (*Ring, *delayDevice) {
	t.Helper()
	d := &delayDevice{irq: newChanInterrupt()}
	var irq Interrupt = d.irq
	if masked {
		irq = maskedChan{d.irq}
	}
	r, err := NewWithWait(d, func(b []*Request) { *delivered += len(b) }, WaitOptions{Mode: mode, Interrupt: irq})
	if err != nil {
		t.Fatal(err)
	}
	d.ring = r
	return r, d
}

func TestModesDeliverWithinMinMax(t *testing.T) {
	for _, mode := range []Mode{ModePoll, ModeInterrupt, ModeAdaptive} {
		t.Run(mode.String(), func(t *testing.T) {
			var delivered int
			r, d := newDelayRing(t, mode, &delivered)
			reqs := make([]Request, 6)
			for i := range reqs {
				d.issue(t, &reqs[i], time.Duration(i)*300*time.Microsecond)
			}
			// min 2, max 3: at least 2 and never more than 3, whatever
			// the device has posted by then.
			n, err := r.Poll(2, 3)
			if err != nil || n < 2 || n > 3 || delivered != n {
				t.Fatalf("Poll(2, 3) = %d, %v (delivered %d), want 2..3, nil", n, err, delivered)
			}
			for delivered < len(reqs) {
				if _, err := r.Poll(1, 1); err != nil {
					t.Fatal(err)
				}
			}
			if delivered != len(reqs) || r.Inflight() != 0 {
				t.Fatalf("delivered %d, in flight %d, want %d, 0", delivered, r.Inflight(), len(reqs))
			}
			st := r.WaitStats()
			if st.Mode != mode {
				t.Errorf("WaitStats().Mode = %v, want %v", st.Mode, mode)
			}
			// Completions 300 µs apart: interrupt mode must have slept,
			// and been woken by the interrupt (not by the slice timeout);
			// poll mode never blocks.
			switch mode {
			case ModePoll:
				if st.Blocks != 0 {
					t.Errorf("poll mode blocked %d times", st.Blocks)
				}
			case ModeInterrupt:
				if st.Blocks == 0 || st.Wakeups == 0 || st.Timeouts != 0 {
					t.Errorf("interrupt mode: %+v, want blocks woken by the interrupt and no timeouts", st)
				}
			}
		})
	}
}

// In interrupt mode a Poll that must wait 20 ms should sleep, not spin:
// only a handful of device polls (arm, re-check, after the wake-up).
func TestInterruptModeDoesNotSpin(t *testing.T) {
	var delivered int
	r, d := newDelayRing(t, ModeInterrupt, &delivered)
	var req Request
	d.issue(t, &req, 20*time.Millisecond)
	if n, err := r.Poll(1, 1); n != 1 || err != nil {
		t.Fatalf("Poll = %d, %v", n, err)
	}
	if reaps := d.reaps.Load(); reaps > 5 {
		t.Errorf("%d device polls while waiting 20 ms in interrupt mode, want a few", reaps)
	}
	// One wait for 20 ms: armed once, then blocked (perhaps in two slices).
	if st := r.WaitStats(); st.Arms < 1 || st.Blocks < st.Arms {
		t.Errorf("wait stats %+v: want the wait armed and blocked", st)
	}
}

func TestAdaptiveWindow(t *testing.T) {
	w := waiter{mode: ModeAdaptive, start: 4 * time.Microsecond, max: 32 * time.Microsecond}
	w.window.Store(int64(w.start))
	us := time.Microsecond
	steps := []struct {
		waited time.Duration
		want   time.Duration
	}{
		{2 * us, 4 * us},   // inside the window: keep
		{10 * us, 8 * us},  // after it, under the cap: grow x2
		{10 * us, 16 * us}, // again
		{20 * us, 32 * us}, // up to the cap
		{30 * us, 32 * us}, // inside: keep
		{31 * us, 32 * us},
		{time.Millisecond, 16 * us}, // past the cap: shrink
		{time.Millisecond, 8 * us},
		{time.Millisecond, 4 * us},
		{time.Millisecond, 0}, // below the start: off, block at once
		{time.Millisecond, 0},
		{5 * us, 4 * us}, // a short wait brings it back at the start
	}
	for i, s := range steps {
		w.adapt(s.waited)
		if got := time.Duration(w.window.Load()); got != s.want {
			t.Fatalf("step %d: after a wait of %v the window is %v, want %v", i, s.waited, got, s.want)
		}
	}
	if w.grows.Load() != 4 || w.shrinks.Load() != 5 {
		t.Errorf("grows %d, shrinks %d, want 4, 5", w.grows.Load(), w.shrinks.Load())
	}
}

// An idle-ish load (completions far apart) must drive the window to 0 so
// the process sleeps instead of polling; fast completions grow it again.
func TestAdaptiveWindowFollowsLoad(t *testing.T) {
	var delivered int
	r, d := newDelayRing(t, ModeAdaptive, &delivered)
	var req Request
	for range 6 {
		d.issue(t, &req, 2*time.Millisecond)
		if _, err := r.Poll(1, 1); err != nil {
			t.Fatal(err)
		}
	}
	if st := r.WaitStats(); st.Window != 0 || st.Shrinks == 0 || st.Blocks == 0 {
		t.Fatalf("after slow completions: %+v, want window 0 after shrinking, and blocking waits", st)
	}
	// Completions that are already posted when Poll starts need no wait
	// at all and leave the window alone; ones that take some µs grow it.
	grew := false
	for range 200 {
		d.issue(t, &req, 10*time.Microsecond)
		if _, err := r.Poll(1, 1); err != nil {
			t.Fatal(err)
		}
		if r.WaitStats().Window > 0 {
			grew = true
			break
		}
	}
	if !grew {
		t.Errorf("window stayed 0 through 200 completions of ~10 µs: %+v", r.WaitStats())
	}
}

// The lost wake-up race: a completion posted (and its interrupt raised)
// between the last device poll and the block. Random tiny delays put the
// completion all around that point. A lost wake-up shows up as a Poll that
// lasts a whole blockSlice (a timeout) or, had the wait no bound, a hang.
func TestNoLostWakeup(t *testing.T) {
	iters := 20000
	if testing.Short() {
		iters = 3000
	}
	for _, tc := range []struct {
		mode   Mode
		masked bool
	}{{ModeInterrupt, false}, {ModeAdaptive, false}, {ModeAdaptive, true}} {
		name := tc.mode.String()
		if tc.masked {
			name += "-masked"
		}
		t.Run(name, func(t *testing.T) {
			var delivered int
			r, d := newDelayRingMask(t, tc.mode, tc.masked, &delivered)
			rng := rand.New(rand.NewPCG(1, 2))
			var req Request
			finished := make(chan struct{})
			go func() {
				defer close(finished)
				for i := range iters {
					delay := time.Duration(rng.IntN(20000)) * time.Nanosecond
					if rng.IntN(4) == 0 {
						delay = 0 // from another goroutine at once
					}
					d.issue(t, &req, delay)
					if n, err := r.Poll(1, 1); n != 1 || err != nil {
						t.Errorf("iteration %d: Poll = %d, %v", i, n, err)
						return
					}
				}
			}()
			select {
			case <-finished:
			case <-time.After(2 * time.Minute):
				t.Fatalf("hang: %d of %d completions delivered in 2 minutes (%+v)", delivered, iters, r.WaitStats())
			}
			if st := r.WaitStats(); st.Timeouts != 0 {
				t.Errorf("%d waits ran a whole %v slice: a wake-up was lost (%+v)", st.Timeouts, blockSlice, st)
			}
		})
	}
}

func TestNewWithWaitChecksOptions(t *testing.T) {
	d := &delayDevice{irq: newChanInterrupt()}
	if _, err := NewWithWait(d, func([]*Request) {}, WaitOptions{Mode: ModeInterrupt}); err == nil {
		t.Error("interrupt mode without an Interrupt was accepted")
	}
	if _, err := NewWithWait(d, func([]*Request) {}, WaitOptions{Mode: ModeAdaptive, Interrupt: d.irq,
		WindowStart: time.Millisecond, WindowMax: time.Microsecond}); err == nil {
		t.Error("a window start above its maximum was accepted")
	}
	for _, s := range []string{"poll", "interrupt", "adaptive"} {
		if m, err := ParseMode(s); err != nil || m.String() != s {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := ParseMode("spin"); err == nil {
		t.Error(`ParseMode("spin") succeeded`)
	}
}

// spinDevice completes its one request on the third device poll after it
// was issued, raising its interrupt as it posts: a completion that
// polling is sure to find inside the adaptive window.
type spinDevice struct {
	ring    *Ring
	irq     *chanInterrupt
	pending *Request
	polls   int
}

func (d *spinDevice) Reap(int) (int, error) {
	if d.pending == nil {
		return 0, nil
	}
	if d.polls++; d.polls < 3 {
		return 0, nil
	}
	d.irq.raise()
	d.ring.Complete(d.pending)
	d.pending, d.polls = nil, 0
	return 1, nil
}

// In ModeAdaptive a Masker is masked while the ring spins and whenever Poll
// has returned, so completions that polling finds cost no interrupt; it is
// unmasked only to block, and a completion held while masked wakes that
// block (TestNoLostWakeup/adaptive-masked covers the race).
func TestAdaptiveMasksWhilePolling(t *testing.T) {
	d := &spinDevice{irq: newChanInterrupt()}
	m := maskedChan{d.irq}
	r, err := NewWithWait(d, func([]*Request) {}, WaitOptions{Mode: ModeAdaptive, Interrupt: m})
	if err != nil {
		t.Fatal(err)
	}
	d.ring = r
	if !m.isMasked() {
		t.Fatal("a new adaptive ring left its interrupt unmasked")
	}
	var req Request
	for i := range 200 {
		if err := r.Submitted(&req); err != nil {
			t.Fatal(err)
		}
		d.pending = &req
		if n, err := r.Poll(1, 1); n != 1 || err != nil {
			t.Fatalf("Poll = %d, %v", n, err)
		}
		if !m.isMasked() {
			t.Fatalf("after Poll %d the interrupt is unmasked", i)
		}
	}
	// Only a block unmasks. Normally the ring never blocks here (three
	// polls fit in its window), but a loaded machine can deschedule it past
	// the window: each block may then take one interrupt, no more.
	if sent, blocks := d.irq.sent.Load(), r.WaitStats().Blocks; sent > blocks {
		t.Errorf("200 completions, %d blocking waits: %d interrupts sent, want at most one per block (masked while polling)", blocks, sent)
	}

	// A slow completion makes the ring block: it must unmask to be woken.
	var delivered int
	r2, d2 := newDelayRingMask(t, ModeAdaptive, true, &delivered)
	d2.issue(t, &req, 20*time.Millisecond)
	if n, err := r2.Poll(1, 1); n != 1 || err != nil {
		t.Fatalf("slow Poll = %d, %v", n, err)
	}
	if st := r2.WaitStats(); st.Blocks == 0 || st.Wakeups == 0 || st.Timeouts != 0 {
		t.Errorf("a 20 ms completion: %+v, want a block ended by the interrupt", st)
	}
	if !(maskedChan{d2.irq}).isMasked() {
		t.Error("after the blocking Poll the interrupt is unmasked")
	}
}
