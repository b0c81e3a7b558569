package iopoll

import (
	"sync"
	"time"
)

// Ticks and TickClock time short intervals without the system clock: a
// poller's window, an I/O's latency. time.Now is the problem they avoid: in
// a guest whose kernel distrusts the TSC (QEMU with two vCPUs falls back to
// the HPET clocksource) every read is a system call and a register access
// that traps to the hypervisor, under the same lock the emulated device
// needs. Reading it twice per I/O cost nvmectl perf a third of its QD1
// IOPS, and the adaptive window's reads cost ModeAdaptive a fifth.
//
// On amd64 Ticks is the time-stamp counter (RDTSC), as SPDK's
// spdk_get_ticks; elsewhere it is the monotonic clock in nanoseconds. The
// counters of two CPUs may differ slightly: an interval that comes out
// negative counts as 0.

// TickClock converts Ticks intervals to time, at a rate measured against
// the monotonic clock.
type TickClock struct {
	nsPerTick float64
}

// CalibrateTicks measures the tick rate over d (it sleeps for d).
func CalibrateTicks(d time.Duration) TickClock {
	t0, k0 := time.Now(), Ticks()
	time.Sleep(d)
	t1, k1 := time.Now(), Ticks()
	if k1 <= k0 {
		return TickClock{nsPerTick: 1} // a counter that does not move: treat as ns
	}
	return TickClock{nsPerTick: float64(t1.Sub(t0)) / float64(k1-k0)}
}

// Duration converts an interval of ticks; a negative one is 0.
func (c TickClock) Duration(ticks int64) time.Duration {
	if ticks <= 0 {
		return 0
	}
	return time.Duration(float64(ticks) * c.nsPerTick)
}

// Ticks converts a duration to ticks.
func (c TickClock) Ticks(d time.Duration) int64 { return int64(float64(d) / c.nsPerTick) }

// ProcessClock is the process's TickClock, calibrated the first time it is
// asked for (a 5 ms sleep). It is for intervals of a few µs to a few ms (an
// adaptive poll window, how long since a poller last read the system
// clock), where a rate within a few percent is plenty.
func ProcessClock() TickClock { return processClock() }

var processClock = sync.OnceValue(func() TickClock { return CalibrateTicks(5 * time.Millisecond) })
