package iopoll

import (
	"testing"
	"time"
)

// The window bounds spinning while waiting for the device; the time the
// caller's deliver callback takes is not part of that wait. Here the device
// answers on the next poll every time and only delivery is slow (1 ms, more
// than WindowMax): the window must not shrink.
func TestAdaptiveWindowIgnoresDeliverTime(t *testing.T) {
	var pending *Request
	var r *Ring
	polls := 0
	c := CompleterFunc(func(max int) (int, error) {
		polls++
		if pending != nil && polls%2 == 0 { // found on the second device poll
			q := pending
			pending = nil
			r.Complete(q)
			return 1, nil
		}
		return 0, nil
	})
	var err error
	r, err = NewWithWait(c, func([]*Request) { time.Sleep(time.Millisecond) },
		WaitOptions{Mode: ModeAdaptive, Interrupt: newChanInterrupt()})
	if err != nil {
		t.Fatal(err)
	}
	start := r.WaitStats().Window
	for range 20 {
		q := new(Request)
		polls, pending = 0, q
		if err := r.Submitted(q); err != nil {
			t.Fatal(err)
		}
		if n, err := r.Poll(1, 1); n != 1 || err != nil {
			t.Fatalf("Poll(1, 1) = %d, %v", n, err)
		}
	}
	if ws := r.WaitStats(); ws.Shrinks != 0 || ws.Window < start {
		t.Errorf("device answered within one poll, yet the window went %v -> %v (%d shrinks): delivery was counted as waiting", start, ws.Window, ws.Shrinks)
	}
}
