package main

import (
	"strings"
	"testing"
)

// perf --rate paces the load and --mode picks how it waits; the JSON says
// which, and what it cost in CPU. A paced poll run keeps spinning between
// I/Os, a paced interrupt run sleeps: the CPU figures must show that.
func TestPerfModeRateCPU(t *testing.T) {
	cpu := map[string]float64{}
	for _, mode := range []string{"poll", "interrupt", "adaptive"} {
		out := mustRun(t, nil, "perf", "sim", "-w", "randread", "-q", "2", "-t", "1", "--rate", "200", "--mode", mode, "--json")
		m := decodeJSON(t, out)
		if m["mode"] != mode {
			t.Errorf("--mode %s: JSON mode = %v", mode, m["mode"])
		}
		if r, _ := num(t, m, "rate").Float64(); r != 200 {
			t.Errorf("--mode %s: JSON rate = %v, want 200", mode, r)
		}
		total := m["total"].(map[string]any)
		ios, _ := num(t, total, "ios").Int64()
		// 200 per second for 1 s, give or take the first and last interval
		// and a slow test machine.
		if ios < 120 || ios > 210 {
			t.Errorf("--mode %s --rate 200 -t 1: %d I/Os, want about 200", mode, ios)
		}
		cpu[mode], _ = num(t, m, "cpu_pct").Float64()
		if per, _ := num(t, m, "cpu_us_per_io").Float64(); per <= 0 {
			t.Errorf("--mode %s: cpu_us_per_io = %v, want > 0", mode, per)
		}
	}
	if cpu["interrupt"] >= cpu["poll"] || cpu["adaptive"] >= cpu["poll"] {
		t.Errorf("paced at 200/s, CPU %% poll %.1f, interrupt %.1f, adaptive %.1f: the sleeping modes should cost less than spinning",
			cpu["poll"], cpu["interrupt"], cpu["adaptive"])
	}
	out := mustRun(t, nil, "perf", "sim", "-w", "randread", "-q", "1", "-t", "0.3", "--rate", "100", "--mode", "interrupt")
	if !strings.Contains(out, "completion mode interrupt, paced at 100 I/Os per second: CPU") {
		t.Errorf("human output lacks the mode and CPU line:\n%s", out)
	}
}

func TestPerfModeRateUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--mode", "busy"}, `unknown completion mode "busy"`},
		{[]string{"--rate", "-5"}, "--rate -5"},
		{[]string{"--window-max", "soon"}, "window-max"},
	} {
		args := append([]string{"perf", "sim", "-w", "randread", "-q", "1", "-t", "0.1"}, tc.args...)
		_, errs, code := nvmectl(t, nil, args...)
		if code != exitUsage || !strings.Contains(errs, tc.want) {
			t.Errorf("nvmectl %s: exit %d, stderr %q; want usage error naming %q", strings.Join(args, " "), code, errs, tc.want)
		}
	}
}
