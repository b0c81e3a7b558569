package main

import (
	"strings"
	"testing"

	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
)

// perf --verify prints the controller's Identify anomaly counts next to the
// other error counters: none for the model's own data, and the field by
// name when the controller sent an implausible one (an MDTS of 200).
func TestPerfVerifyIdentifyAnomalies(t *testing.T) {
	cfg := nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}}}
	sharedSim(t, cfg)
	out := mustRun(t, nil, "perf", "sim", "--verify", "-q", "4", "-o", "4k", "-t", "0.1")
	if !strings.Contains(out, "0 bad CQEs, 0 Identify anomalies\n") {
		t.Errorf("good controller: output lacks %q:\n%s", "0 bad CQEs, 0 Identify anomalies", out)
	}

	m := sharedSim(t, cfg)
	f := m.Inject(&nvmetest.Fault{Match: nvmetest.MatchIdentify(1), Identify: func(b []byte) { b[77] = 200 }})
	out = mustRun(t, nil, "perf", "sim", "--verify", "-q", "4", "-o", "4k", "-t", "0.1")
	if f.Hits() == 0 {
		t.Fatal("perf read no Identify Controller data: the test checks nothing")
	}
	if !strings.Contains(out, "1 Identify anomalies (MDTS 1)") {
		t.Errorf("MDTS 200: output lacks %q:\n%s", "1 Identify anomalies (MDTS 1)", out)
	}
}
