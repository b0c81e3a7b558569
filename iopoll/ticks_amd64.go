package iopoll

// Ticks reads the time-stamp counter (RDTSC): a few nanoseconds, no system
// call, whatever clock source the kernel uses. See TickClock.
func Ticks() int64
