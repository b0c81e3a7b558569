package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nvmepoll/nvmepoll/iopoll"
	"github.com/nvmepoll/nvmepoll/nvme"
	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
)

// nvmectl runs the command line in-process and returns what it printed and its exit status.
func nvmectl(t *testing.T, stdin []byte, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, bytes.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

// mustRun fails the test unless the command exits 0.
func mustRun(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	out, errs, code := nvmectl(t, stdin, args...)
	if code != 0 {
		t.Fatalf("nvmectl %s: exit %d, stderr:\n%s", strings.Join(args, " "), code, errs)
	}
	return out
}

// keepDevice is a model device that survives Controller.Close, so data written by one nvmectl
// run is there for the next, as on a real disk.
type keepDevice struct{ *nvmetest.Controller }

func (keepDevice) Close() error { return nil }

// sharedSim makes every "sim" in this test the same model controller, and returns it.
func sharedSim(t *testing.T, cfg nvmetest.Config) *nvmetest.Controller {
	t.Helper()
	cfg.Inline = true
	m := nvmetest.NewController(t, cfg)
	old := newSim
	newSim = func(int64) (nvme.Device, error) { return keepDevice{m}, nil }
	t.Cleanup(func() { newSim = old })
	return m
}

// decodeJSON parses output with numbers kept exact, failing the test on bad JSON.
func decodeJSON(t *testing.T, out string) map[string]any {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(out))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("output is not a JSON object: %v\n%s", err, out)
	}
	return m
}

// topKeys returns the keys of the top-level JSON object in the order printed.
func topKeys(t *testing.T, out string) []string {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(out))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("output does not start with a JSON object: %v", err)
	}
	var keys []string
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := d.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

func num(t *testing.T, m map[string]any, key string) json.Number {
	t.Helper()
	v, ok := m[key]
	if !ok {
		t.Fatalf("key %q missing from %v", key, m)
	}
	n, ok := v.(json.Number)
	if !ok {
		t.Fatalf("key %q is %T (%v), want a JSON number as nvme-cli prints it", key, v, v)
	}
	return n
}

func TestHelp(t *testing.T) {
	for _, c := range commands {
		out, errs, code := nvmectl(t, nil, c.name, "--help")
		if code != exitOK || !strings.HasPrefix(out, "Usage: nvmectl "+c.name) || errs != "" {
			t.Errorf("%s --help: exit %d, stdout %q, stderr %q; want exit 0 and the usage on stdout", c.name, code, out, errs)
		}
	}
	if out := mustRun(t, nil, "help"); !strings.Contains(out, "perf") || !strings.Contains(out, "sim:SIZE") {
		t.Errorf("help does not list the commands and device names:\n%s", out)
	}
	if _, errs, code := nvmectl(t, nil); code != exitUsage || !strings.Contains(errs, "Usage") {
		t.Errorf("no arguments: exit %d, stderr %q; want 2 and the usage", code, errs)
	}
	if _, errs, code := nvmectl(t, nil, "frobnicate"); code != exitUsage || !strings.Contains(errs, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: exit %d, stderr %q", code, errs)
	}
	if _, errs, code := nvmectl(t, nil, "id-ctrl", "sim", "--bogus"); code != exitUsage || !strings.Contains(errs, "bogus") {
		t.Errorf("unknown flag: exit %d, stderr %q", code, errs)
	}
}

// fakeSysfs builds a sysfs tree with one function per call of dev, as vfio/pci's tests do, and
// points nvmectl at it.
type fakeSysfs struct {
	t    *testing.T
	root string
}

func newFakeSysfs(t *testing.T) *fakeSysfs {
	f := &fakeSysfs{t: t, root: t.TempDir()}
	for _, d := range []string{"bus/pci/devices", "bus/pci/drivers/nvme", "bus/pci/drivers/vfio-pci", "block"} {
		f.mkdir(d)
	}
	t.Setenv("NVMECTL_SYSFS", f.root)
	t.Setenv("NVMECTL_MOUNTS", f.file("proc-mounts", "proc /proc proc rw 0 0\n"))
	t.Setenv("NVMECTL_SWAPS", f.file("proc-swaps", "Filename Type Size Used Priority\n"))
	return f
}

func (f *fakeSysfs) mkdir(rel string) {
	if err := os.MkdirAll(filepath.Join(f.root, rel), 0o755); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeSysfs) file(rel, data string) string {
	p := filepath.Join(f.root, rel)
	f.mkdir(filepath.Dir(rel))
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *fakeSysfs) link(rel, target string) {
	if err := os.Symlink(filepath.Join(f.root, target), filepath.Join(f.root, rel)); err != nil {
		f.t.Fatal(err)
	}
}

// dev adds a PCI function; driver "" leaves it unbound. blockDev (e.g. "nvme0n1") gives an
// nvme-bound controller a namespace block device.
func (f *fakeSysfs) dev(addr string, class uint32, driver string, group int, blockDev string) {
	d := "bus/pci/devices/" + addr
	f.file(d+"/vendor", "0x1b36\n")
	f.file(d+"/device", "0x0010\n")
	f.file(d+"/class", fmt.Sprintf("0x%06x\n", class))
	f.file(d+"/irq", "11\n")
	f.file(d+"/resource", "0x00000000febf0000 0x00000000febf3fff 0x0000000000140204\n")
	override := "(null)\n"
	if driver == "vfio-pci" {
		override = "vfio-pci\n" // as nvmectl bind leaves it
	}
	f.file(d+"/driver_override", override)
	if driver != "" {
		f.link(d+"/driver", "bus/pci/drivers/"+driver)
	}
	g := fmt.Sprintf("kernel/iommu_groups/%d", group)
	f.mkdir(g + "/devices")
	f.link(d+"/iommu_group", g)
	if blockDev != "" {
		name := blockDev[:strings.LastIndex(blockDev, "n")] // nvme0n1 -> nvme0
		f.mkdir(d + "/nvme/" + name + "/" + blockDev)
		f.mkdir("block/" + blockDev + "/holders")
	}
}

func TestDeviceErrors(t *testing.T) {
	fs := newFakeSysfs(t)
	fs.dev("0000:00:02.0", 0x020000, "e1000e", 2, "")
	fs.dev("0000:00:03.0", 0x010802, "nvme", 3, "nvme0n1")
	fs.dev("0000:00:04.0", 0x010802, "", 4, "")
	for _, tc := range []struct {
		dev  string
		code int
		want string
	}{
		{"0000:00:09.0", exitFailure, "no such PCI device"},
		{"00:02.0", exitFailure, "0000:00:02.0 is not an NVMe controller: class 0x020000"},
		{"00:03.0", exitFailure, "bound to the kernel's nvme driver, not vfio-pci; run 'nvmectl bind 0000:00:03.0' first"},
		{"0000:00:04.0", exitFailure, "bound to no driver; run 'nvmectl bind 0000:00:04.0'"},
		{"nvme0", exitUsage, "neither a PCI address"},
		{"sim:lots", exitUsage, `device "sim:lots"`},
		{"sim:1000", exitUsage, "multiple of 4 KiB"},
	} {
		for _, cmd := range [][]string{{"id-ctrl", tc.dev}, {"read", tc.dev, "-n", "1", "--lba", "0", "--count", "1"}} {
			_, errs, code := nvmectl(t, nil, cmd...)
			if code != tc.code || !strings.Contains(errs, tc.want) {
				t.Errorf("nvmectl %s: exit %d, stderr %q; want exit %d and %q", strings.Join(cmd, " "), code, errs, tc.code, tc.want)
			}
		}
	}
}

func TestIDCtrl(t *testing.T) {
	out := mustRun(t, nil, "id-ctrl", "sim", "--json")
	keys := topKeys(t, out)
	// nvme-cli's json_nvme_id_ctrl order, in part.
	wantPrefix := []string{"vid", "ssvid", "sn", "mn", "fr", "rab", "ieee", "cmic", "mdts", "cntlid", "ver", "rtd3r", "rtd3e", "oaes", "ctratt"}
	if strings.Join(keys[:len(wantPrefix)], ",") != strings.Join(wantPrefix, ",") {
		t.Errorf("id-ctrl keys start %v, want %v", keys[:len(wantPrefix)], wantPrefix)
	}
	for _, k := range []string{"sqes", "cqes", "maxcmd", "nn", "oncs", "tnvmcap", "psds"} {
		if !strings.Contains(","+strings.Join(keys, ",")+",", ","+k+",") {
			t.Errorf("id-ctrl JSON has no %q", k)
		}
	}
	if keys[len(keys)-1] != "psds" {
		t.Errorf("id-ctrl JSON ends with %q, want psds as nvme-cli", keys[len(keys)-1])
	}
	m := decodeJSON(t, out)
	if v := num(t, m, "vid"); v.String() != fmt.Sprint(nvmetest.VendorID) {
		t.Errorf("vid = %s, want %d", v, nvmetest.VendorID)
	}
	if sn := m["sn"]; sn != fmt.Sprintf("%-20s", nvmetest.DefaultSerialNumber) {
		t.Errorf("sn = %q, want the 20-byte field with its padding, as nvme-cli prints it", sn)
	}
	if v := num(t, m, "ver"); v.String() != fmt.Sprint(nvmetest.Version) {
		t.Errorf("ver = %s, want %d", v, nvmetest.Version)
	}
	if v := num(t, m, "sqes"); v.String() != "102" { // 0x66: 64-byte entries required and max
		t.Errorf("sqes = %s, want 102 (0x66)", v)
	}
	if v, ok := m["tnvmcap"].(string); !ok || v == "" {
		t.Errorf("tnvmcap = %#v, want a decimal string as nvme-cli 2.3 prints 128-bit values", m["tnvmcap"])
	}
	psds, ok := m["psds"].([]any)
	if !ok || len(psds) == 0 {
		t.Fatalf("psds = %v, want at least power state 0", m["psds"])
	}
	if _, ok := psds[0].(map[string]any)["max_power"]; !ok {
		t.Errorf("psds[0] has no max_power: %v", psds[0])
	}

	if o := mustRun(t, nil, "id-ctrl", "sim", "--output-format", "json"); o != out {
		t.Error("id-ctrl --output-format json differs from --json")
	}
	if _, errs, code := nvmectl(t, nil, "id-ctrl", "sim", "--output-format", "xml"); code != exitUsage || !strings.Contains(errs, `output format "xml"`) {
		t.Errorf("--output-format xml: exit %d, %q", code, errs)
	}
	human := mustRun(t, nil, "id-ctrl", "sim")
	for _, want := range []string{"NVME Identify Controller:", "vid       : 0x1b36", "sn        : " + nvmetest.DefaultSerialNumber, "ps    0 : mp:"} {
		if !strings.Contains(human, want) {
			t.Errorf("id-ctrl output lacks %q:\n%s", want, human)
		}
	}
}

func TestIDNS(t *testing.T) {
	out := mustRun(t, nil, "id-ns", "sim:1G", "-n", "1", "--json")
	keys := topKeys(t, out)
	if strings.Join(keys[:6], ",") != "nsze,ncap,nuse,nsfeat,nlbaf,flbas" || keys[len(keys)-1] != "lbafs" {
		t.Errorf("id-ns keys %v, want nvme-cli's order (nsze, ncap, nuse, nsfeat, nlbaf, flbas ... lbafs)", keys)
	}
	m := decodeJSON(t, out)
	if v := num(t, m, "nsze"); v.String() != fmt.Sprint(1<<30/512) {
		t.Errorf("nsze = %s, want %d blocks of a 1 GiB namespace", v, 1<<30/512)
	}
	lbafs := m["lbafs"].([]any)
	l0 := lbafs[0].(map[string]any)
	if l0["ds"].(json.Number).String() != "9" || l0["ms"].(json.Number).String() != "0" {
		t.Errorf("lbafs[0] = %v, want ms 0 ds 9", l0)
	}
	human := mustRun(t, nil, "id-ns", "sim", "-n", "1")
	if line := grepLine(human, "lbaf  0 :"); !strings.Contains(line, "lbads:9 ") || !strings.HasSuffix(line, "(in use)") {
		t.Errorf("id-ns does not mark format 0 in use:\n%s", human)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"id-ns", "sim"}, exitUsage, "-n NSID"},
		{[]string{"id-ns", "sim", "-n", "0"}, exitUsage, "-n NSID"},
		{[]string{"id-ns", "sim", "-n", "x"}, exitUsage, `namespace id "x"`},
		{[]string{"id-ns", "sim", "-n", "7"}, exitFailure, "namespace 7 does not exist"},
	} {
		_, errs, code := nvmectl(t, nil, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errs, tc.code, tc.want)
		}
	}
}

func TestSMARTAndErrorLog(t *testing.T) {
	m := sharedSim(t, nvmetest.Config{})
	m.SetHealth(uint8(nvme.WarnTemperature), 350)
	mustRun(t, make([]byte, 4096), "write", "sim", "-n", "1", "--lba", "0")

	out := mustRun(t, nil, "smart-log", "sim", "--json")
	keys := topKeys(t, out)
	want := "critical_warning,temperature,avail_spare,spare_thresh,percent_used,endurance_grp_critical_warning_summary,data_units_read,data_units_written,host_read_commands,host_write_commands"
	if strings.Join(keys[:10], ",") != want {
		t.Errorf("smart-log keys %v, want nvme-cli's order %s", keys, want)
	}
	j := decodeJSON(t, out)
	if v := num(t, j, "temperature"); v.String() != "350" {
		t.Errorf("temperature = %s, want 350 (kelvin, as nvme-cli's JSON)", v)
	}
	if v := num(t, j, "critical_warning"); v.String() != "2" {
		t.Errorf("critical_warning = %s, want 2 (temperature)", v)
	}
	if v, err := strconv.ParseInt(fmt.Sprint(j["host_write_commands"]), 10, 64); err != nil || v < 1 {
		t.Errorf("host_write_commands = %d after a write, want at least 1", v)
	}
	human := mustRun(t, nil, "smart-log", "sim")
	for _, w := range []string{"critical_warning                        : 0x2 (temperature)", "temperature                             : 77 °C (350 K)"} {
		if !strings.Contains(human, w) {
			t.Errorf("smart-log output lacks %q:\n%s", w, human)
		}
	}

	out = mustRun(t, nil, "error-log", "sim", "--json", "-e", "4")
	el := decodeJSON(t, out)
	errs, ok := el["errors"].([]any)
	if !ok || len(errs) != 4 {
		t.Fatalf("error-log -e 4: errors = %v, want 4 entries", el["errors"])
	}
	e0 := errs[0].(map[string]any)
	for _, k := range []string{"error_count", "sqid", "cmdid", "status_field", "phase_tag", "parm_error_location", "lba", "nsid", "opcode", "cs", "log_page_version"} {
		if _, ok := e0[k]; !ok {
			t.Errorf("error-log entry has no %q: %v", k, e0)
		}
	}
	if human := mustRun(t, nil, "error-log", "sim", "-e", "2"); !strings.Contains(human, "entries:2") || !strings.Contains(human, " Entry[ 1]") {
		t.Errorf("error-log output:\n%s", human)
	}
}

func grepLine(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

func TestReadWriteRoundTrip(t *testing.T) {
	m := sharedSim(t, nvmetest.Config{})
	dir := t.TempDir()
	data := make([]byte, 1<<20)
	rand.Read(data)
	in := filepath.Join(dir, "in")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")

	// Bytes in with --offset, blocks out with --lba: 1 MiB is block 2048 of 512.
	mustRun(t, nil, "write", "sim", "-n", "1", "--offset", "1M", "--input", in)
	mustRun(t, nil, "read", "sim", "-n", "1", "--lba", "2048", "--count", "2048", "--output", out)
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (err %v), want the 1 MiB written", len(got), err)
	}
	// The model's store agrees: the driver wrote where it said.
	behind := make([]byte, len(data))
	m.Namespace(1).ReadAt(behind, 1<<20)
	if !bytes.Equal(behind, data) {
		t.Fatal("the namespace does not hold the data at byte 1 MiB")
	}
	// stdout, --size in bytes.
	if o := mustRun(t, nil, "read", "sim", "-n", "1", "--offset", "1MiB", "--size", "4k"); o != string(data[:4096]) {
		t.Error("read to stdout does not return the data")
	}
	mustRun(t, nil, "compare", "sim", "-n", "1", "--lba", "2048", "-i", in)
	bad := bytes.Clone(data)
	bad[5000] ^= 1
	if _, errs, code := nvmectl(t, bad, "compare", "sim", "-n", "1", "--lba", "2048"); code != exitFailure || !strings.Contains(errs, "differs") {
		t.Errorf("compare of changed data: exit %d, stderr %q; want 1 and 'differs'", code, errs)
	}

	// stdin with --pad: 100 bytes become one zero-filled block.
	mustRun(t, []byte(strings.Repeat("x", 100)), "write", "sim", "-n", "1", "--lba", "10", "--pad")
	blk := mustRun(t, nil, "read", "sim", "-n", "1", "--lba", "10", "--count", "1")
	if blk != strings.Repeat("x", 100)+string(make([]byte, 412)) {
		t.Errorf("padded block reads back as %q", blk)
	}

	// A stream that ends mid-block after a full transfer has already changed the device: the
	// error says so and is not a usage error ("nothing happened").
	chunk := 512 << 10 // the model's MDTS 7
	long := bytes.Repeat([]byte{0xa5}, chunk+100)
	_, errs, code := nvmectl(t, long, "write", "sim", "-n", "1", "--lba", "4096")
	if code != exitFailure || !strings.Contains(errs, "wrote 1024 blocks at lba 4096") || !strings.Contains(errs, "add --pad") {
		t.Errorf("write of a stream ending mid-block: exit %d, stderr %q; want 1, the blocks written and the --pad hint", code, errs)
	}
	if got := mustRun(t, nil, "read", "sim", "-n", "1", "--lba", "4096", "--count", "1024"); got != string(long[:chunk]) {
		t.Error("the blocks the error says were written are not on the device")
	}

	mustRun(t, nil, "write-zeroes", "sim", "-n", "1", "--lba", "2048", "--count", "8")
	if z := mustRun(t, nil, "read", "sim", "-n", "1", "--lba", "2048", "--count", "8"); z != string(make([]byte, 4096)) {
		t.Error("blocks are not zero after write-zeroes")
	}
	mustRun(t, nil, "trim", "sim", "-n", "1", "--offset", "2M", "--size", "64K")
	mustRun(t, nil, "flush", "sim", "-n", "1")
	if st := m.Stats(); st.IOCommands[nvmetest.OpDSM] != 1 || st.IOCommands[nvmetest.OpFlush] == 0 {
		t.Errorf("the model saw %d Dataset Management and %d Flush commands, want 1 and at least 1", st.IOCommands[nvmetest.OpDSM], st.IOCommands[nvmetest.OpFlush])
	}
	if m.DMAFaults() != 0 {
		t.Errorf("%d DMA faults", m.DMAFaults())
	}
}

func TestFormat(t *testing.T) {
	sharedSim(t, nvmetest.Config{})
	if _, errs, code := nvmectl(t, nil, "format", "sim", "-n", "1", "--lbaf", "1"); code != exitUsage || !strings.Contains(errs, "--force") {
		t.Fatalf("format without --force: exit %d, stderr %q; want 2 and a hint to add --force", code, errs)
	}
	if _, errs, code := nvmectl(t, nil, "format", "sim", "-n", "1", "--lbaf", "5", "--force"); code != exitUsage || !strings.Contains(errs, "formats 0-1") {
		t.Errorf("format to a missing LBA format: exit %d, stderr %q", code, errs)
	}
	mustRun(t, nil, "format", "sim", "-n", "1", "--lbaf", "1", "--force")
	m := decodeJSON(t, mustRun(t, nil, "id-ns", "sim", "-n", "1", "--json"))
	if v := num(t, m, "flbas"); v.String() != "1" {
		t.Errorf("flbas = %s after format --lbaf 1, want 1", v)
	}
	// The block size is now 4096: a 512-byte offset is refused.
	if _, errs, code := nvmectl(t, nil, "read", "sim", "-n", "1", "--offset", "512", "--size", "4K"); code != exitUsage || !strings.Contains(errs, "4096-byte block size") {
		t.Errorf("512-byte offset on a 4 KiB namespace: exit %d, stderr %q", code, errs)
	}
}

// TestBadInput is every mistake an operator is likely to make with the block commands: each
// must fail with the right status and a message that names the input and the limit.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	odd := filepath.Join(dir, "odd")
	os.WriteFile(odd, make([]byte, 1000), 0o644)
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, 8192), 0o644)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"read"}, exitUsage, "no device given"},
		{[]string{"read", "sim", "sim"}, exitUsage, "one device expected"},
		{[]string{"perf", "sim", "-w", "randread", "-q", "1", "-t", "1", "-j", "70000"}, exitUsage, "-j 70000: give 1 to 65535 queue pairs"},
		{[]string{"error-log", "sim", "-e", "1000"}, exitUsage, "-e 1000: sim:64MiB keeps at most 64 error log entries"},
		{[]string{"read", "sim", "--lba", "0", "--count", "1"}, exitUsage, "-n NSID"},
		{[]string{"read", "sim", "-n", "0", "--lba", "0", "--count", "1"}, exitUsage, "-n NSID"},
		{[]string{"read", "sim", "-n", "2", "--lba", "0", "--count", "1"}, exitFailure, "namespace 2"},
		{[]string{"read", "sim:1M", "-n", "1", "--lba", "2048", "--count", "1"}, exitUsage, "lba 2048+1 is past the end of namespace 1 (2048 blocks of 512 bytes)"},
		{[]string{"read", "sim:1M", "-n", "1", "--lba", "2000", "--count", "100"}, exitUsage, "past the end"},
		{[]string{"read", "sim", "-n", "1", "--lba", "0"}, exitUsage, "--count"},
		{[]string{"read", "sim", "-n", "1", "--count", "1"}, exitUsage, "--lba"},
		{[]string{"read", "sim", "-n", "1", "--lba", "0", "--offset", "0", "--count", "1"}, exitUsage, "not both"},
		{[]string{"read", "sim", "-n", "1", "--offset", "100", "--count", "1"}, exitUsage, "--offset 100 is not a multiple of the 512-byte block size"},
		{[]string{"read", "sim", "-n", "1", "--lba", "0", "--size", "1000"}, exitUsage, "--size 1000 is not a multiple"},
		{[]string{"read", "sim", "-n", "1", "--lba", "0", "--size", "1Q"}, exitUsage, "not a byte count"},
		{[]string{"read", "sim", "-n", "1", "--lba", "-1", "--count", "1"}, exitUsage, "--lba"},
		// A number is all of its text: fmt.Sscan would have read these as lba 1, 100 and 0.
		{[]string{"read", "sim", "-n", "1", "--lba", "1e6", "--count", "1"}, exitUsage, `--lba "1e6" is not a non-negative integer`},
		{[]string{"read", "sim", "-n", "1", "--lba", "0", "--count", "100k"}, exitUsage, `--count "100k" is not a non-negative integer`},
		{[]string{"read", "sim", "-n", "1", "--lba", "08x", "--count", "1"}, exitUsage, `--lba "08x"`},
		{[]string{"read", "sim", "-n", "1x", "--lba", "0", "--count", "1"}, exitUsage, `namespace id "1x"`},
		{[]string{"read", "sim", "-n", "4294967296", "--lba", "0", "--count", "1"}, exitUsage, "from 1 to 4294967295"},
		{[]string{"read", "sim", "-n", "1", "--lba", "0", "--count", "0"}, exitUsage, "0 blocks"},
		{[]string{"read", "sim", "-n", "1", "--lba", "0", "--count", "1", "--output", filepath.Join(dir, "no/such/dir/f")}, exitFailure, "cannot write the output file"},
		{[]string{"write", "sim", "-n", "1", "--lba", "0", "--input", odd}, exitUsage, "1000 bytes, not a multiple of the 512-byte block size; add --pad"},
		{[]string{"write", "sim", "-n", "1", "--lba", "0", "--input", filepath.Join(dir, "missing")}, exitFailure, "cannot read the input file"},
		{[]string{"write", "sim:1M", "-n", "1", "--lba", "2040", "--input", big}, exitUsage, "lba 2040+16 is past the end"},
		{[]string{"write", "sim", "-n", "1", "--lba", "0"}, exitUsage, "input is empty"},
		{[]string{"trim", "sim:1M", "-n", "1", "--lba", "0", "--count", "4096"}, exitUsage, "past the end"},
		{[]string{"format", "sim", "-n", "1"}, exitUsage, "--lbaf"},
		{[]string{"perf", "sim", "-q", "8", "-t", "1"}, exitUsage, "-w"},
		{[]string{"perf", "sim", "-q", "8", "-w", "seqread", "-t", "1"}, exitUsage, `unknown workload "seqread"`},
		{[]string{"perf", "sim", "-q", "0", "-w", "randread", "-t", "1"}, exitUsage, "queue depth -q 0"},
		{[]string{"perf", "sim", "-q", "5000", "-w", "randread", "-t", "1"}, exitUsage, "queue depth -q 5000 is above the controller's limit of 2047"},
		{[]string{"perf", "sim", "-q", "8", "-w", "randread"}, exitUsage, "run time"},
		{[]string{"perf", "sim", "-q", "8", "-w", "randread", "-t", "NaN"}, exitUsage, "run time -t NaN: give a number of seconds above 0, at most 1000000"},
		{[]string{"perf", "sim", "-q", "8", "-w", "randread", "-t", "1e300"}, exitUsage, "run time -t 1e+300"},
		{[]string{"perf", "sim", "-q", "8", "-w", "randread", "-t", "1", "--rate", "1e-300"}, exitUsage, "--rate 1e-300: give I/Os per second from 0.001 to 1e+09"},
		{[]string{"perf", "sim", "-q", "8", "-w", "randread", "-t", "1", "--rate", "NaN"}, exitUsage, "--rate NaN"},
		{[]string{"perf", "sim", "-q", "8", "-w", "randread", "-t", "1", "--mix", "70"}, exitUsage, "--mix 70 applies to -w randrw and --verify, not -w randread"},
		{[]string{"perf", "sim", "-q", "8", "-w", "randread", "-t", "1", "--verify"}, exitUsage, "--verify chooses reads and writes itself"},
		{[]string{"perf", "sim", "-q", "8", "-w", "randread", "-t", "1", "--ack-log", filepath.Join(dir, "acks")}, exitUsage, "add --verify"},
		{[]string{"perf", "sim", "-q", "8", "-w", "randread", "-t", "1", "--window-max", "1ms"}, exitUsage, "--window-max 1ms caps the adaptive poll window; add --mode adaptive"},
		{[]string{"perf", "sim", "-q", "8", "-w", "randread", "-t", "1", "--mode", "adaptive", "--window-max", "-1s"}, exitUsage, "--window-max -1s: give a positive duration"},
		{[]string{"perf", "sim", "-q", "8", "-w", "randread", "-t", "1", "-o", "1000"}, exitUsage, "-o 1000 is not a multiple"},
		{[]string{"perf", "sim", "-q", "8", "-w", "randread", "-t", "1", "-o", "4M"}, exitUsage, "largest transfer"},
		{[]string{"perf", "sim", "-q", "8", "-w", "randread", "-t", "1", "-j", "99"}, exitUsage, "-j 99"},
		{[]string{"perf", "sim", "-q", "8", "-w", "randread", "-t", "1", "--batch-complete", "9"}, exitUsage, "--batch-complete 9: give 1 to the queue depth, 8"},
		{[]string{"perf", "sim", "-q", "8", "-w", "randread", "-t", "1", "--linger", "2s"}, exitUsage, "--linger 2s: give a duration from 0 (off) to 1s"},
		{[]string{"perf", "sim", "-q", "8", "-w", "randrw", "--mix", "101", "-t", "1"}, exitUsage, "--mix 101"},
		{[]string{"perf", "sim:1M", "-q", "8", "-w", "read", "-t", "1", "--offset", "1M"}, exitUsage, "past the end of namespace 1"},
		{[]string{"perf", "sim:1M", "-q", "8", "-w", "read", "-t", "1", "--offset", "512K", "--size", "1M"}, exitUsage, "past the end"},
		{[]string{"perf", "sim", "-q", "8", "-w", "read", "-t", "1", "--size", "2K"}, exitUsage, "smaller than one I/O"},
	} {
		_, errs, code := nvmectl(t, nil, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("nvmectl %s: exit %d, stderr %q;\nwant exit %d and %q", strings.Join(tc.args, " "), code, errs, tc.code, tc.want)
		}
	}
}

func TestPerf(t *testing.T) {
	out := mustRun(t, nil, "perf", "sim", "-q", "8", "-o", "4k", "-w", "randrw", "--mix", "70", "-t", "0.2", "-j", "2", "--json", "--histogram")
	var r perfJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("perf --json: %v\n%s", err, out)
	}
	if r.Offset != 0 || r.Size != 64<<20 {
		t.Errorf("perf region %d+%d, want the whole 64 MiB namespace", r.Offset, r.Size)
	}
	if len(r.Jobs) != 2 || r.Queues != 2 || r.QueueDepth != 8 || r.IOSize != 4096 || r.Workload != "randrw" {
		t.Fatalf("perf report does not echo the job: %+v", r)
	}
	tot := r.Total
	if tot.IOs == 0 || tot.IOPS <= 0 || tot.MiBps <= 0 || tot.Errors != 0 {
		t.Fatalf("total %+v: want I/Os, IOPS and MiB/s, no errors", tot)
	}
	if tot.Reads+tot.Writes != tot.IOs || tot.Reads == 0 || tot.Writes == 0 {
		t.Errorf("randrw did %d reads and %d writes of %d I/Os", tot.Reads, tot.Writes, tot.IOs)
	}
	l := tot.Latency
	if !(l.Min > 0 && l.Min <= l.P50 && l.P50 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max && l.Avg >= l.Min && l.Avg <= l.Max) {
		t.Errorf("latencies out of order: %+v", l)
	}
	var sum, hsum uint64
	for _, j := range r.Jobs {
		sum += j.IOs
		if j.Doorbells == nil || j.Doorbells.SQDoorbells == 0 || j.Doorbells.Completed < j.IOs || j.Doorbells.BadCQEs != 0 {
			t.Errorf("queue %d doorbells %+v for %d I/Os", j.Queue, j.Doorbells, j.IOs)
		}
	}
	for _, b := range tot.Histogram {
		hsum += b.Count
	}
	if sum != tot.IOs || hsum != tot.IOs {
		t.Errorf("queues add up to %d I/Os and the histogram to %d, total says %d", sum, hsum, tot.IOs)
	}

	human := mustRun(t, nil, "perf", "sim", "-q", "4", "-o", "512", "-w", "read", "-t", "0.1")
	for _, w := range []string{"IOPS", "p99.9", "queue 1", "total", "doorbells: queue 1:"} {
		if !strings.Contains(human, w) {
			t.Errorf("perf output lacks %q:\n%s", w, human)
		}
	}
	if strings.Contains(human, "\r") {
		t.Error("perf printed progress lines to a non-terminal")
	}
}

// TestPerfRegion checks that --offset/--size keep a write workload, random or sequential,
// inside its region: the data outside (here the first MiB, as the demo keeps its file there) is
// untouched.
func TestPerfRegion(t *testing.T) {
	for _, workload := range []string{"randwrite", "write"} {
		t.Run(workload, func(t *testing.T) {
			m := sharedSim(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8 << 20 / 512}}})
			keep := make([]byte, 1<<20)
			rand.Read(keep)
			m.Namespace(1).WriteAt(keep, 0)
			mustRun(t, nil, "perf", "sim", "-q", "16", "-o", "4k", "-w", workload, "-t", "0.2", "--offset", "1M", "--size", "2M", "-j", "2")
			got := make([]byte, 1<<20)
			m.Namespace(1).ReadAt(got, 0)
			if !bytes.Equal(got, keep) {
				t.Error("perf --offset 1M wrote into the first MiB")
			}
			m.Namespace(1).ReadAt(got, 3<<20)
			if !bytes.Equal(got, make([]byte, 1<<20)) {
				t.Error("perf --offset 1M --size 2M wrote past 3 MiB")
			}
			m.Namespace(1).ReadAt(got, 1<<20)
			if bytes.Equal(got, make([]byte, 1<<20)) {
				t.Errorf("perf -w %s wrote nothing into its region", workload)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "4k": 4096, "4K": 4096, "4KiB": 4096, "4KB": 4096, "1M": 1 << 20, "1MiB": 1 << 20, "2G": 2 << 30, "512B": 512, "0": 0} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1", "1.5M", "4Q", "99999999999T"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) succeeded", in)
		}
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for v := uint64(1); v <= 100000; v++ {
		h.record(v)
	}
	for _, q := range []float64{0.5, 0.99, 0.999} {
		want := q * 100000
		if got := float64(h.quantile(q)); got < want*0.97 || got > want*1.03 {
			t.Errorf("quantile(%g) = %g, want %g within 3%%", q, got, want)
		}
	}
	if h.min != 1 || h.max != 100000 || h.quantile(1) != 100000 {
		t.Errorf("min %d max %d q(1) %d", h.min, h.max, h.quantile(1))
	}
	for _, v := range []uint64{0, 63, 64, 65, 1000, 1 << 40, 1<<64 - 1} {
		i := histIndex(v)
		lo, hi := histBounds(i)
		if i >= histBuckets || v < lo || v > hi {
			t.Errorf("value %d: bucket %d [%d, %d]", v, i, lo, hi)
		}
	}
	if n := testing.AllocsPerRun(1000, func() { h.record(12345) }); n != 0 {
		t.Errorf("record allocates %v times", n)
	}
}

// A namespace whose Identify fails is named in the list entry, not dropped from it, and the
// namespaces that answered are still listed.
func TestListNamespaceFailure(t *testing.T) {
	m := sharedSim(t, nvmetest.Config{Namespaces: []nvmetest.NamespaceConfig{{Blocks: 8192}, {Blocks: 4096}}})
	f := m.Inject(&nvmetest.Fault{Match: nvmetest.MatchIdentify(0), Count: 1, Status: nvmetest.StatusInternalError | nvmetest.StatusDNR})
	ent := listEntry{Address: "sim"}
	describe(&ent)
	if f.Hits() != 1 {
		t.Fatalf("the Identify Namespace fault hit %d times, want 1", f.Hits())
	}
	if len(ent.Namespaces) != 1 || ent.Namespaces[0].NSID != 2 || ent.Namespaces[0].Blocks != 4096 {
		t.Errorf("namespaces %+v, want namespace 2 of 4096 blocks", ent.Namespaces)
	}
	if !strings.Contains(ent.Error, "namespace 1:") || !strings.Contains(ent.Error, "Internal Error") {
		t.Errorf("Error %q, want namespace 1 and what the controller said", ent.Error)
	}
}

func TestListAndBind(t *testing.T) {
	fs := newFakeSysfs(t)
	fs.dev("0000:00:02.0", 0x020000, "e1000e", 2, "")
	fs.dev("0000:00:03.0", 0x010802, "nvme", 3, "nvme0n1")
	fs.dev("0000:00:05.0", 0x010802, "nvme", 5, "nvme1n1")
	fs.dev("0000:00:04.0", 0x010802, "vfio-pci", 4, "")
	os.WriteFile(os.Getenv("NVMECTL_MOUNTS"), []byte("/dev/nvme0n1 /data ext4 rw 0 0\n"), 0o644)
	fs.file("block/nvme1n1/holders/dm-0", "")

	out := mustRun(t, nil, "list", "--json")
	var l struct{ Devices []listEntry }
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatal(err)
	}
	if len(l.Devices) != 3 {
		t.Fatalf("list found %d controllers, want the 3 NVMe ones (not the NIC): %s", len(l.Devices), out)
	}
	d0 := l.Devices[0]
	if d0.Address != "0000:00:03.0" || d0.Driver != "nvme" || d0.IOMMUGroup != 3 || d0.VendorID != "1b36" || strings.Join(d0.BlockDevices, ",") != "nvme0n1" {
		t.Errorf("list entry %+v", d0)
	}
	// The vfio one cannot be opened in a fake tree: list says why instead of failing.
	if d := l.Devices[1]; d.Address != "0000:00:04.0" || d.Error == "" {
		t.Errorf("vfio-bound entry %+v: want an Error saying why it could not be opened", d)
	}
	if human := mustRun(t, nil, "list"); !strings.Contains(human, "0000:00:03.0") || !strings.Contains(human, "nvme0n1") {
		t.Errorf("list:\n%s", human)
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"bind", "00:03.0"}, exitFailure, "/dev/nvme0n1 is mounted on /data; unmount"},
		{[]string{"bind", "00:05.0"}, exitFailure, "/dev/nvme1n1 is held by dm-0"},
		{[]string{"bind", "00:02.0"}, exitFailure, "not an NVMe controller"},
		{[]string{"bind", "00:09.0"}, exitFailure, "no such PCI device"},
		{[]string{"bind", "zz"}, exitUsage, "not a PCI address"},
		{[]string{"bind"}, exitUsage, "--all"},
		{[]string{"bind", "--all", "00:03.0"}, exitUsage, "--all"},
		{[]string{"unbind"}, exitUsage, "PCI addresses"},
		{[]string{"unbind", "00:02.0"}, exitFailure, "not an NVMe controller"},
	} {
		_, errs, code := nvmectl(t, nil, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("nvmectl %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, errs, tc.code, tc.want)
		}
	}
	// Binding what is already bound changes nothing and says so (idempotent).
	if out := mustRun(t, nil, "bind", "0000:00:04.0"); out != "0000:00:04.0: already on vfio-pci\n" {
		t.Errorf("bind of a vfio-bound controller: %q", out)
	}
	// --all skips the busy controllers with the reason, and binds the rest (here: none left).
	out = mustRun(t, nil, "bind", "--all")
	for _, w := range []string{"0000:00:03.0: skipped, in use: /dev/nvme0n1 is mounted on /data", "0000:00:05.0: skipped, in use: /dev/nvme1n1 is held by dm-0", "0000:00:04.0: already on vfio-pci"} {
		if !strings.Contains(out, w) {
			t.Errorf("bind --all output lacks %q:\n%s", w, out)
		}
	}
}

func TestParseMounts(t *testing.T) {
	m := parseMounts(strings.NewReader("/dev/nvme0n1p1 /boot vfat rw 0 0\n/dev/nvme0n1p2 / ext4 rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n"))
	if len(m) != 2 || m["nvme0n1p1"][0] != "/boot" || m["nvme0n1p2"][0] != "/" {
		t.Errorf("parseMounts = %v", m)
	}
}

// TestPerfWriteGuard: a write workload needs --force unless the controller is sim or the
// demo's (serial nvmepoll-demo...), so a benchmark cannot wipe a real disk by accident.
func TestPerfWriteGuard(t *testing.T) {
	for _, tc := range []struct {
		serial   string
		workload string
		verify   bool // --verify writes whatever -w says
		force    bool
		ok       bool
	}{
		{"prod-disk-1", "randwrite", false, false, false},
		{"prod-disk-1", "randwrite", false, true, true},
		{"prod-disk-1", "randread", false, false, true},
		{"prod-disk-1", "write", false, false, false},
		{"prod-disk-1", "write", false, true, true},
		{"prod-disk-1", "read", false, false, true},
		{"prod-disk-1", "randrw", true, false, false},
		{"prod-disk-1", "randrw", true, true, true},
		{"nvmepoll-demo", "randwrite", false, false, true},
	} {
		sharedSim(t, nvmetest.Config{SerialNumber: tc.serial})
		d, err := openDevice("sim", &nvme.Options{IOQueues: 1})
		if err != nil {
			t.Fatal(err)
		}
		d.sim = false // as if it were a PCI device
		var out bytes.Buffer
		c := &perfConfig{nsid: 1, depth: 4, ioSize: 4096, workload: tc.workload, verify: tc.verify, mix: 50, seconds: 0.05, queues: 1, force: tc.force}
		err = runPerf(&env{stdout: &out, stderr: &out}, d, c)
		d.Close()
		var ue *usageError
		if tc.ok && err != nil || !tc.ok && (!errors.As(err, &ue) || !strings.Contains(err.Error(), "add --force")) {
			t.Errorf("serial %q -w %s verify %v force %v: err %v", tc.serial, tc.workload, tc.verify, tc.force, err)
		}
	}
}

// TestPerfNoAllocs holds perf's I/O loop to no allocation per I/O: prepare, submit, poll,
// complete, over and over.
func TestPerfNoAllocs(t *testing.T) {
	d, err := openDevice("sim", &nvme.Options{IOQueues: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ns, err := d.namespace(1)
	if err != nil {
		t.Fatal(err)
	}
	// A 32 KiB region: after a warm-up every 4 KiB chunk of it has been written, so the model's
	// sparse store (which allocates a chunk on first write) allocates no more and whatever
	// allocates is the driver or perf.
	c := &perfConfig{depth: 8, ioSize: 4096, workload: "randrw", mix: 50, queues: 1, span: 64}
	w, err := newPerfWorker(d, ns, c, 0, iopoll.CalibrateTicks(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	for i := range w.reqs {
		w.free = append(w.free, &w.reqs[i])
	}
	cycle := func() {
		for _, r := range w.free {
			w.prepare(r)
		}
		n, err := w.qp.SubmitBatch(w.free)
		if err != nil {
			t.Fatal(err)
		}
		w.free = w.free[:copy(w.free, w.free[n:])]
		if _, err := w.qp.Poll(1, len(w.reqs)); err != nil {
			t.Fatal(err)
		}
	}
	for range 100 {
		cycle()
	}
	if n := testing.AllocsPerRun(200, cycle); n != 0 {
		t.Errorf("the perf loop allocates %v times per cycle of %d I/Os", n, c.depth)
	}
	if w.hist.n < 200 || w.errs != 0 {
		t.Errorf("%d I/Os completed, %d errors", w.hist.n, w.errs)
	}
	for w.qp.Inflight() > 0 {
		w.qp.Poll(1, len(w.reqs))
	}
}
