package iopoll

import (
	"testing"
	"time"
)

// A poll window and a latency histogram are only as right as the tick
// rate: a 20 ms sleep timed in ticks must come out as about 20 ms.
func TestTickClockMeasuresTime(t *testing.T) {
	c := CalibrateTicks(10 * time.Millisecond)
	k0, t0 := Ticks(), time.Now()
	time.Sleep(20 * time.Millisecond)
	got, want := c.Duration(Ticks()-k0), time.Since(t0)
	if got < want*9/10 || got > want*11/10 {
		t.Errorf("a sleep of %v measured as %v in ticks (%.4f ns/tick)", want, got, c.nsPerTick)
	}
	if d := c.Duration(-100); d != 0 {
		t.Errorf("a negative interval (counters of two CPUs) converted to %v, want 0", d)
	}
	if back := c.Duration(c.Ticks(time.Millisecond)); back < 990*time.Microsecond || back > 1010*time.Microsecond {
		t.Errorf("1ms to ticks and back: %v", back)
	}
}
