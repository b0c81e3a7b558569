package main

import "time"

// ioClock times I/Os for nvmectl perf's latency histogram. It counts ticks
// (ticks_amd64.s) and converts them with a rate measured against the
// monotonic clock when perf starts, because time.Now itself is the problem
// it avoids: in a guest whose kernel distrusts the TSC (QEMU with two vCPUs
// uses HPET) each read is a system call and a trap to the hypervisor, two
// per I/O, which cost perf a third of its QD1 IOPS.
type ioClock struct {
	nsPerTick float64
}

// calibrateTicks measures the tick rate over d.
func calibrateTicks(d time.Duration) ioClock {
	t0, k0 := time.Now(), ticks()
	time.Sleep(d)
	t1, k1 := time.Now(), ticks()
	if k1 <= k0 {
		return ioClock{nsPerTick: 1} // a counter that does not move: treat as ns
	}
	return ioClock{nsPerTick: float64(t1.Sub(t0)) / float64(k1-k0)}
}

// ns converts a tick interval to nanoseconds. A negative one (a goroutine
// that moved between CPUs whose counters differ slightly) counts as 0.
func (c ioClock) ns(d int64) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64(float64(d) * c.nsPerTick)
}
