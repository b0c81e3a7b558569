package main

import (
	"encoding/json"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseCPUList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		err  string
	}{
		{in: "0", want: []int{0}},
		{in: "3,1,1", want: []int{1, 3}},
		{in: "0-2,5", want: []int{0, 1, 2, 5}},
		{in: "4-4", want: []int{4}},
		{in: "", err: `"" is not a CPU number`},
		{in: "a", err: `"a" is not a CPU number`},
		{in: "-1", err: `"" is not a CPU number`},
		{in: "3-1", err: `"3-1" is not a range`},
		{in: "0,5000", err: "CPU 5000 is past the largest CPU number, 1023"},
	} {
		got, err := parseCPUList(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseCPUList(%q) = %v, %v; want an error containing %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("parseCPUList(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if back, _ := parseCPUList(formatCPUList(got)); !slices.Equal(back, got) {
			t.Errorf("formatCPUList(%v) = %q does not parse back", got, formatCPUList(got))
		}
	}
	if s := formatCPUList([]int{0, 1, 2, 5, 7, 8}); s != "0-2,5,7-8" {
		t.Errorf("formatCPUList = %q, want 0-2,5,7-8", s)
	}
}

func TestChooseCPUs(t *testing.T) {
	allowed, err := allowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := chooseCPUs("", 1); err != nil || !slices.Equal(got, allowed[:1]) {
		t.Errorf("default for one queue pair: %v, %v; want the first allowed CPU, %v", got, err, allowed[:1])
	}
	if got, err := chooseCPUs("", len(allowed)+3); err != nil || !slices.Equal(got, allowed) {
		t.Errorf("default for more queue pairs than CPUs: %v, %v; want all of %v", got, err, allowed)
	}
	if got, err := chooseCPUs("any", 2); err != nil || got != nil {
		t.Errorf(`"any": %v, %v; want no placement`, got, err)
	}
	bad := allowed[len(allowed)-1] + 1
	if _, err := chooseCPUs(strconv.Itoa(bad), 1); err == nil || !strings.Contains(err.Error(), "CPU "+strconv.Itoa(bad)+" is not one this process may run on") {
		t.Errorf("a CPU outside the mask: %v", err)
	}
}

// threadMasks returns every thread's CPU mask.
func threadMasks(t *testing.T) map[int]unix.CPUSet {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	m := map[int]unix.CPUSet{}
	for _, e := range tasks {
		tid, _ := strconv.Atoi(e.Name())
		var s unix.CPUSet
		if unix.SchedGetaffinity(tid, &s) == nil {
			m[tid] = s
		}
	}
	return m
}

// TestConfine: every thread of the process runs on the chosen CPU and
// GOMAXPROCS follows it, and restore puts both back.
func TestConfine(t *testing.T) {
	allowed, err := allowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	cpu := allowed[len(allowed)-1]
	procs := runtime.GOMAXPROCS(0)
	restore, err := confine([]int{cpu})
	if err != nil {
		t.Fatal(err)
	}
	for tid, s := range threadMasks(t) {
		if s.Count() != 1 || !s.IsSet(cpu) {
			t.Errorf("thread %d may run on %d CPUs after confine to CPU %d", tid, s.Count(), cpu)
		}
	}
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("GOMAXPROCS %d after confining to one CPU, want 1", n)
	}
	restore()
	for tid, s := range threadMasks(t) {
		if s.Count() != len(allowed) {
			t.Errorf("thread %d may run on %d CPUs after restore, want %d", tid, s.Count(), len(allowed))
		}
	}
	if n := runtime.GOMAXPROCS(0); n != procs {
		t.Errorf("GOMAXPROCS %d after restore, want %d", n, procs)
	}
}

// TestPerfCPUs: perf reports where it ran; the sim runs anywhere unless
// told; a CPU the process may not use is a usage error naming it.
func TestPerfCPUs(t *testing.T) {
	allowed, _ := allowedCPUs()
	cpu := strconv.Itoa(allowed[0])
	if r := runPerfJSON(t, "-q", "4", "-w", "randread", "-t", "0.1"); r.CPUs != "any" {
		t.Errorf("perf on sim: cpus %q; want any", r.CPUs)
	}
	out := mustRun(t, nil, "perf", "sim", "-q", "4", "-w", "randread", "-t", "0.1", "--cpus", cpu)
	if !strings.Contains(out, "queue pair(s), CPUs "+cpu+",") {
		t.Errorf("perf --cpus %s does not say where it ran:\n%s", cpu, out)
	}
	_, errs, code := nvmectl(t, nil, "perf", "sim", "-q", "4", "-w", "randread", "-t", "0.1", "--cpus", "1023")
	if code != exitUsage || !strings.Contains(errs, "CPU 1023 is not one this process may run on") {
		t.Errorf("perf --cpus 1023: exit %d, %s", code, errs)
	}
}

// TestPerfBatchComplete: --batch-complete caps what one poll reaps, the run
// still completes I/Os, and the report says so.
func TestPerfBatchComplete(t *testing.T) {
	r := runPerfJSON(t, "-q", "8", "-w", "randread", "-t", "0.2", "--batch-complete", "2")
	if r.Batch != 2 || r.Total.IOs == 0 || r.Total.Errors != 0 {
		t.Errorf("perf --batch-complete 2: batch_complete %d, %d I/Os, %d errors; want 2, some, 0", r.Batch, r.Total.IOs, r.Total.Errors)
	}
	// Each round resubmits what one poll reaped, at most 2, with one SQ
	// doorbell update: at least one update per 2 I/Os.
	if db := r.Total.Doorbells; db == nil || db.SQPerIO < 0.49 {
		t.Errorf("perf --batch-complete 2: SQ doorbell updates per I/O %+v, want at least 0.5", db)
	}
	if r := runPerfJSON(t, "-q", "8", "-w", "randread", "-t", "0.1"); r.Batch != 8 {
		t.Errorf("perf without --batch-complete: batch_complete %d; want the depth, 8", r.Batch)
	}
	human := mustRun(t, nil, "perf", "sim", "-q", "8", "-w", "randread", "-t", "0.1", "--batch-complete", "4")
	if !strings.Contains(human, "queue depth 8 (reaping at most 4 per poll)") {
		t.Errorf("perf --batch-complete 4 does not say so:\n%s", human)
	}
}

// TestPerfLinger: --linger keeps reaping until the queue has been quiet
// that long, so what one round resubmits (with one SQ doorbell update) is
// most of the depth, and the report says so.
func TestPerfLinger(t *testing.T) {
	r := runPerfJSON(t, "-q", "8", "-w", "randread", "-t", "0.2", "--linger", "2ms")
	if r.LingerUS != 2000 || r.Total.IOs == 0 || r.Total.Errors != 0 {
		t.Errorf("perf --linger 2ms: linger_us %v, %d I/Os, %d errors; want 2000, some, 0", r.LingerUS, r.Total.IOs, r.Total.Errors)
	}
	// The model answers within microseconds, far inside 2 ms: a round ends
	// with all 8 in hand, one doorbell update per 8 I/Os (0.125).
	if db := r.Total.Doorbells; db == nil || db.SQPerIO > 0.25 {
		t.Errorf("perf --linger 2ms: SQ doorbell updates per I/O %+v, want at most 0.25", db)
	}
	human := mustRun(t, nil, "perf", "sim", "-q", "8", "-w", "randread", "-t", "0.1", "--linger", "3us")
	if !strings.Contains(human, "queue depth 8 (lingering 3µs for more completions)") {
		t.Errorf("perf --linger 3us does not say so:\n%s", human)
	}
}

// runPerfJSON runs nvmectl perf on the sim with args and --json and decodes
// the report.
func runPerfJSON(t *testing.T, args ...string) perfJSON {
	t.Helper()
	out := mustRun(t, nil, append(append([]string{"perf", "sim"}, args...), "--json")...)
	var r perfJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("perf %v --json: %v\n%s", args, err, out)
	}
	return r
}
