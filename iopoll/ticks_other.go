//go:build !amd64

package iopoll

import "time"

var ticksBase = time.Now()

// Ticks is the monotonic clock in nanoseconds where there is no RDTSC.
func Ticks() int64 { return int64(time.Since(ticksBase)) }
