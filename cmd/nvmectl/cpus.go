package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// perf's CPU placement (--cpus), as SPDK perf's core mask (-c, default core
// 0) and fio's cpus_allowed. A poller spins on its CPU; what costs is the
// rest of the process (the Go scheduler's idle threads, sysmon, the
// coordinating goroutine) waking up on other CPUs. In a QEMU guest every
// such wake-up is a vCPU the host must run next to the emulated
// controller's thread: confining the process to one CPU per queue pair took
// QD1 from 22k to 29k IOPS on a 2-vCPU guest (docs/PERFORMANCE.md).

// maxCPUs is how many CPUs a unix.CPUSet holds (the kernel's CPU_SETSIZE, 1024).
const maxCPUs = int(unsafe.Sizeof(unix.CPUSet{})) * 8

// parseCPUList parses a CPU list in the kernel's and fio's syntax:
// "0", "0,2", "0-3,6". The CPUs come back sorted, without repeats.
func parseCPUList(s string) ([]int, error) {
	var cpus []int
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("CPU list %q: %q is not a CPU number", s, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("CPU list %q: %q is not a range of CPUs (low-high)", s, part)
			}
		}
		if b >= maxCPUs {
			return nil, fmt.Errorf("CPU list %q: CPU %d is past the largest CPU number, %d", s, b, maxCPUs-1)
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	slices.Sort(cpus)
	return slices.Compact(cpus), nil
}

// formatCPUList is parseCPUList's inverse for sorted CPUs: [0 1 2 5] is "0-2,5".
func formatCPUList(cpus []int) string {
	var b strings.Builder
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpus[i]))
		if j > i {
			b.WriteString("-" + strconv.Itoa(cpus[j]))
		}
		i = j + 1
	}
	return b.String()
}

// allowedCPUs returns the CPUs this process may run on.
func allowedCPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	var cpus []int
	for c := 0; c < maxCPUs; c++ {
		if set.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return cpus, nil
}

// chooseCPUs resolves --cpus: "any" is no placement (nil); "" is the
// default, the first queues CPUs the process may use; anything else a CPU
// list, every CPU of which the process must be allowed to use.
func chooseCPUs(spec string, queues int) ([]int, error) {
	if spec == "any" {
		return nil, nil
	}
	allowed, err := allowedCPUs()
	if err != nil {
		return nil, err
	}
	if spec == "" {
		return allowed[:min(queues, len(allowed))], nil
	}
	cpus, err := parseCPUList(spec)
	if err != nil {
		return nil, err
	}
	for _, c := range cpus {
		if !slices.Contains(allowed, c) {
			return nil, fmt.Errorf("--cpus %s: CPU %d is not one this process may run on (%s)", spec, c, formatCPUList(allowed))
		}
	}
	return cpus, nil
}

// confine runs every thread of the process on cpus and sizes GOMAXPROCS to
// them, and returns what undoes it. Threads inherit their creator's mask, so
// the threads the runtime starts later stay inside; the task list is walked
// twice in case one was being created during the first walk.
func confine(cpus []int) (restore func(), err error) {
	var set, old unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	procs := runtime.GOMAXPROCS(0)
	undo := func() {
		setAllThreads(&old)
		runtime.GOMAXPROCS(procs)
	}
	for range 2 {
		if err := setAllThreads(&set); err != nil {
			undo()
			return nil, fmt.Errorf("running on CPUs %s: %w", formatCPUList(cpus), err)
		}
	}
	runtime.GOMAXPROCS(len(cpus))
	return undo, nil
}

// setAllThreads sets the CPU mask of every thread of the process. A thread
// that exited since the directory was read is not an error.
func setAllThreads(set *unix.CPUSet) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("sched_setaffinity(thread %d): %w", tid, err)
		}
	}
	return nil
}
