package main

import (
	"testing"
	"time"
)

// The latency histogram is only as right as the tick rate: a 20 ms sleep
// timed in ticks must come out as about 20 ms.
func TestIOClockMeasuresTime(t *testing.T) {
	c := calibrateTicks(10 * time.Millisecond)
	k0, t0 := ticks(), time.Now()
	time.Sleep(20 * time.Millisecond)
	got, want := time.Duration(c.ns(ticks()-k0)), time.Since(t0)
	if got < want*9/10 || got > want*11/10 {
		t.Errorf("a sleep of %v measured as %v in ticks (%.4f ns/tick)", want, got, c.nsPerTick)
	}
	if c.ns(-100) != 0 {
		t.Errorf("a negative interval (counters of two CPUs) converted to %d ns, want 0", c.ns(-100))
	}
}
