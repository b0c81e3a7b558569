//go:build !amd64

package main

import "time"

var ticksBase = time.Now()

// ticks is the monotonic clock in nanoseconds where there is no RDTSC.
func ticks() int64 { return int64(time.Since(ticksBase)) }
