package main

// ticks reads the time-stamp counter (RDTSC), as SPDK's spdk_get_ticks does:
// a few nanoseconds, no system call, whatever clock source the kernel uses.
func ticks() int64
