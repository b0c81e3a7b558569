package hwtest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The nvmectl tests run the real binary against the real controller, as an operator would.
// The binary is found in NVMEPOLL_NVMECTL or on PATH (scripts/guest.sh puts --file payloads in
// /payload, which is on PATH): build it with
//
//	CGO_ENABLED=0 go build -o /tmp/nvmectl ./cmd/nvmectl
//
// and pass it with --file /tmp/nvmectl next to the hwtest binary.

// nvmectlBin returns the nvmectl binary, skipping (failing under NVMEPOLL_REQUIRE_DEVICE)
// when there is none.
func nvmectlBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("NVMEPOLL_NVMECTL"); p != "" {
		return p
	}
	p, err := exec.LookPath("nvmectl")
	if err != nil {
		if os.Getenv("NVMEPOLL_REQUIRE_DEVICE") != "" {
			t.Fatal("no nvmectl binary: pass it to the guest (--file /tmp/nvmectl) or set NVMEPOLL_NVMECTL")
		}
		t.Skip("no nvmectl binary on PATH and NVMEPOLL_NVMECTL unset")
	}
	return p
}

// runNvmectl runs nvmectl with args and stdin, returning stdout, stderr and the exit status.
func runNvmectl(t *testing.T, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(nvmectlBin(t), args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running nvmectl %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), code
}

func mustNvmectl(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	out, errs, code := runNvmectl(t, stdin, args...)
	if code != 0 {
		t.Fatalf("nvmectl %s: exit %d\n%s", strings.Join(args, " "), code, errs)
	}
	return out
}

func jsonObject(t *testing.T, out string) map[string]any {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(out))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("not a JSON object: %v\n%s", err, out)
	}
	return m
}

func jsonInt(t *testing.T, m map[string]any, key string) int64 {
	t.Helper()
	n, ok := m[key].(json.Number)
	if !ok {
		t.Fatalf("%q is %T (%v), want a number", key, m[key], m[key])
	}
	v, err := n.Int64()
	if err != nil {
		t.Fatalf("%q = %s: %v", key, n, err)
	}
	return v
}

// serialOf returns the serial NVMEPOLL_TEST_DEVICES gives addr, or "".
func serialOf(addr string) string {
	devs, _ := parseDeviceList(os.Getenv("NVMEPOLL_TEST_DEVICES"))
	for s, a := range devs {
		if a == addr {
			return s
		}
	}
	return ""
}

func TestNvmectlIdentify(t *testing.T) {
	addr := testDevice(t)
	id := jsonObject(t, mustNvmectl(t, nil, "id-ctrl", addr, "--json"))
	if inQEMU() && jsonInt(t, id, "vid") != qemuVendor {
		t.Errorf("vid = %d, want QEMU's %#x", jsonInt(t, id, "vid"), qemuVendor)
	}
	if s := serialOf(addr); s != "" && strings.TrimSpace(id["sn"].(string)) != s {
		t.Errorf("sn = %q, want %q (the serial the guest started the controller with)", id["sn"], s)
	}
	if jsonInt(t, id, "nn") < 1 || jsonInt(t, id, "sqes") != 0x66 || jsonInt(t, id, "cqes") != 0x44 {
		t.Errorf("id-ctrl nn %v sqes %v cqes %v", id["nn"], id["sqes"], id["cqes"])
	}
	human := mustNvmectl(t, nil, "id-ctrl", addr)
	if !strings.HasPrefix(human, "NVME Identify Controller:\n") || !strings.Contains(human, "\nmn        : ") {
		t.Errorf("id-ctrl output:\n%s", human)
	}

	ns := jsonObject(t, mustNvmectl(t, nil, "id-ns", addr, "-n", "1", "--json"))
	if jsonInt(t, ns, "nsze") < 1 {
		t.Errorf("namespace 1 has nsze %v", ns["nsze"])
	}
	if lbafs, ok := ns["lbafs"].([]any); !ok || int64(len(lbafs)) != jsonInt(t, ns, "nlbaf")+1 {
		t.Errorf("lbafs %v for nlbaf %v", ns["lbafs"], ns["nlbaf"])
	}

	smart := jsonObject(t, mustNvmectl(t, nil, "smart-log", addr, "--json"))
	if k := jsonInt(t, smart, "temperature"); k < 250 || k > 400 {
		t.Errorf("smart-log temperature %d K is not a plausible controller temperature", k)
	}
	el := jsonObject(t, mustNvmectl(t, nil, "error-log", addr, "--json"))
	if errs, ok := el["errors"].([]any); !ok || len(errs) == 0 {
		t.Errorf("error-log: %v", el)
	}
}

func TestNvmectlList(t *testing.T) {
	addr := testDevice(t)
	var l struct {
		Devices []struct {
			Address, Driver, SerialNumber, Error string
			Namespaces                           []struct{ Blocks uint64 }
		}
	}
	if err := json.Unmarshal([]byte(mustNvmectl(t, nil, "list", "--json")), &l); err != nil {
		t.Fatal(err)
	}
	for _, d := range l.Devices {
		if d.Address != addr {
			continue
		}
		if d.Driver != "vfio-pci" || d.Error != "" || len(d.Namespaces) == 0 || d.Namespaces[0].Blocks == 0 {
			t.Errorf("list entry for %s: %+v; want vfio-pci, opened, with namespace 1", addr, d)
		}
		if s := serialOf(addr); s != "" && strings.TrimSpace(d.SerialNumber) != s {
			t.Errorf("list serial %q, want %q", d.SerialNumber, s)
		}
		// bind of a bound controller changes nothing.
		if out := mustNvmectl(t, nil, "bind", addr); !strings.Contains(out, "already on vfio-pci") {
			t.Errorf("bind %s: %q", addr, out)
		}
		return
	}
	t.Errorf("list does not show %s: %+v", addr, l.Devices)
}

// roundTrip writes 1 MiB of random data through files and reads it back on the device at addr.
func roundTrip(t *testing.T, addr, nsid, offset string) {
	dir := t.TempDir()
	data := make([]byte, 1<<20)
	rand.Read(data)
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	if err := os.WriteFile(in, data, 0o644); err != nil {
		t.Fatal(err)
	}
	mustNvmectl(t, nil, "write", addr, "-n", nsid, "--offset", offset, "--input", in)
	mustNvmectl(t, nil, "read", addr, "-n", nsid, "--offset", offset, "--size", "1M", "--output", out)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("%s namespace %s: 1 MiB at %s reads back different (QEMU drops DMA to unmapped IOVAs silently: check the DMAR log)", addr, nsid, offset)
	}
	mustNvmectl(t, nil, "compare", addr, "-n", nsid, "--offset", offset, "--input", in)
	data[12345] ^= 0xff
	if _, errs, code := runNvmectl(t, data, "compare", addr, "-n", nsid, "--offset", offset); code != 1 || !strings.Contains(errs, "differs") {
		t.Errorf("compare of changed data: exit %d, %q", code, errs)
	}
}

func TestNvmectlReadWrite(t *testing.T) {
	addr := testDevice(t)
	roundTrip(t, addr, "1", "2M")
	mustNvmectl(t, nil, "write-zeroes", addr, "-n", "1", "--offset", "2M", "--size", "64K")
	if z := mustNvmectl(t, nil, "read", addr, "-n", "1", "--offset", "2M", "--size", "64K"); z != string(make([]byte, 64<<10)) {
		t.Error("blocks are not zero after write-zeroes")
	}
	mustNvmectl(t, nil, "trim", addr, "-n", "1", "--offset", "4M", "--size", "1M")
	mustNvmectl(t, nil, "flush", addr, "-n", "1")
}

// TestNvmectlSplitTransfers round-trips through the controller that moves at most 16 KiB per
// command (mdts=2), so nvmectl's 1 MiB is many commands.
func TestNvmectlSplitTransfers(t *testing.T) {
	roundTrip(t, testDeviceBySerial(t, "mdts2"), "1", "0")
}

// TestNvmectl4KNamespace uses namespace 2 of the lbaf controller (4096-byte blocks).
func TestNvmectl4KNamespace(t *testing.T) {
	addr := testDeviceBySerial(t, "lbaf")
	ns := jsonObject(t, mustNvmectl(t, nil, "id-ns", addr, "-n", "2", "--json"))
	lbafs := ns["lbafs"].([]any)
	inUse := jsonInt(t, ns, "flbas") & 0xf
	if ds := lbafs[inUse].(map[string]any)["ds"].(json.Number).String(); ds != "12" {
		t.Errorf("namespace 2 format in use has ds %s, want 12 (4096-byte blocks)", ds)
	}
	roundTrip(t, addr, "2", "1M")
	if _, errs, code := runNvmectl(t, nil, "read", addr, "-n", "2", "--offset", "512", "--size", "4K"); code != 2 || !strings.Contains(errs, "4096-byte block size") {
		t.Errorf("512-byte offset on a 4 KiB namespace: exit %d, %q", code, errs)
	}
}

func TestNvmectlBadInput(t *testing.T) {
	addr := testDevice(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"read", addr, "-n", "0", "--lba", "0", "--count", "1"}, 2, "-n NSID"},
		{[]string{"read", addr, "-n", "1", "--lba", "999999999999", "--count", "1"}, 2, "past the end of namespace 1"},
		{[]string{"read", addr, "-n", "1", "--offset", "100", "--count", "1"}, 2, "not a multiple"},
		{[]string{"read", "0000:00:1f.7", "-n", "1", "--lba", "0", "--count", "1"}, 1, "no such PCI device"},
		{[]string{"id-ns", addr, "-n", "99"}, 1, "namespace 99"},
		{[]string{"perf", addr, "-q", "1000000", "-w", "randread", "-t", "1"}, 2, "above the controller's limit"},
		{[]string{"perf", addr, "-q", "8", "-w", "bogus", "-t", "1"}, 2, "unknown workload"},
		{[]string{"format", addr, "-n", "1", "--lbaf", "0"}, 2, "--force"},
	} {
		_, errs, code := runNvmectl(t, nil, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("nvmectl %s: exit %d, stderr %q; want %d and %q", strings.Join(tc.args, " "), code, errs, tc.code, tc.want)
		}
	}
}

func TestNvmectlPerf(t *testing.T) {
	addr := testDevice(t)
	var r struct {
		Total struct {
			IOs    uint64  `json:"ios"`
			IOPS   float64 `json:"iops"`
			Errors uint64  `json:"errors"`
			Lat    struct {
				Min, P50, P99, Max float64
			} `json:"latency"`
		} `json:"total"`
		Jobs []struct {
			Doorbells struct {
				SQ  uint64 `json:"sq_doorbells"`
				Bad uint64 `json:"bad_cqes"`
			} `json:"doorbells"`
		} `json:"jobs"`
	}
	out := mustNvmectl(t, nil, "perf", addr, "-n", "1", "-q", "16", "-o", "4K", "-w", "randread", "-t", "1", "--json")
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	l := r.Total.Lat
	if r.Total.IOs == 0 || r.Total.IOPS <= 0 || r.Total.Errors != 0 || !(l.Min <= l.P50 && l.P50 <= l.P99 && l.P99 <= l.Max) {
		t.Errorf("perf total %+v", r.Total)
	}
	if len(r.Jobs) != 1 || r.Jobs[0].Doorbells.SQ == 0 || r.Jobs[0].Doorbells.Bad != 0 {
		t.Errorf("perf jobs %+v", r.Jobs)
	}
}

// TestNvmectlPerfOneQueue: a controller with a single I/O queue pair (QEMU max_ioqpairs=1)
// still runs perf -j 1, and -j 2 is refused with the limit named.
func TestNvmectlPerfOneQueue(t *testing.T) {
	addr := testDeviceBySerial(t, "oneq")
	out := mustNvmectl(t, nil, "perf", addr, "-q", "8", "-o", "4K", "-w", "randread", "-t", "0.5")
	if !strings.Contains(out, "queue 1") || !strings.Contains(out, "0 errors") {
		t.Errorf("perf on the one-queue controller:\n%s", out)
	}
	if _, errs, code := runNvmectl(t, nil, "perf", addr, "-q", "8", "-w", "randread", "-t", "0.5", "-j", "2"); code != 2 || !strings.Contains(errs, "granted 1 I/O queue pairs") {
		t.Errorf("perf -j 2 on the one-queue controller: exit %d, %q", code, errs)
	}
}

// TestNvmectlBindUnbind moves a controller the kernel's nvme driver holds (NVMEPOLL_KERNEL_DEVICES,
// guest.sh --nvme-kernel) to vfio-pci with nvmectl bind, uses it, and gives it back with unbind.
func TestNvmectlBindUnbind(t *testing.T) {
	testDevice(t)
	devs, err := parseDeviceList(os.Getenv("NVMEPOLL_KERNEL_DEVICES"))
	if err != nil {
		t.Fatalf("NVMEPOLL_KERNEL_DEVICES: %v", err)
	}
	var addr string
	for _, a := range devs {
		addr = a
		break
	}
	if addr == "" {
		t.Skip("no controller on the kernel nvme driver (guest.sh --nvme-kernel SERIAL)")
	}
	driver := func() string {
		l, _ := os.Readlink(filepath.Join(sysPCI, addr, "driver"))
		return filepath.Base(l)
	}
	if out := mustNvmectl(t, nil, "bind", addr); !strings.Contains(out, "nvme -> vfio-pci") || driver() != "vfio-pci" {
		t.Fatalf("bind %s: %q, driver now %q", addr, out, driver())
	}
	defer func() {
		if driver() != "nvme" {
			runNvmectl(t, nil, "unbind", addr)
		}
	}()
	if out := mustNvmectl(t, nil, "bind", addr); !strings.Contains(out, "already on vfio-pci") {
		t.Errorf("second bind %s: %q, want it to change nothing", addr, out)
	}
	mustNvmectl(t, nil, "id-ctrl", addr)
	if out := mustNvmectl(t, nil, "unbind", addr); !strings.Contains(out, "vfio-pci -> nvme") || driver() != "nvme" {
		t.Errorf("unbind %s: %q, driver now %q", addr, out, driver())
	}
	if _, errs, code := runNvmectl(t, nil, "id-ctrl", addr); code != 1 || !strings.Contains(errs, "nvmectl bind "+addr) {
		t.Errorf("id-ctrl on the kernel's controller: exit %d, %q; want 1 and the bind command", code, errs)
	}
}

// TestNvmectlBindRefusesMounted mounts a file system on a kernel-held controller's namespace
// and checks that nvmectl bind refuses to take the controller, naming the mount.
func TestNvmectlBindRefusesMounted(t *testing.T) {
	testDevice(t)
	devs, _ := parseDeviceList(os.Getenv("NVMEPOLL_KERNEL_DEVICES"))
	var addr string
	for _, a := range devs {
		addr = a
		break
	}
	if addr == "" {
		t.Skip("no controller on the kernel nvme driver (guest.sh --nvme-kernel SERIAL)")
	}
	blks, _ := filepath.Glob(filepath.Join(sysPCI, addr, "nvme", "nvme*", "nvme*n1"))
	if len(blks) == 0 {
		t.Skipf("%s has no namespace block device", addr)
	}
	blk := "/dev/" + filepath.Base(blks[0])
	mkfs, err := exec.LookPath("mke2fs")
	if err != nil {
		t.Skip("no mke2fs to make a file system with")
	}
	if out, err := exec.Command(mkfs, "-q", blk).CombinedOutput(); err != nil {
		t.Skipf("mke2fs %s: %v %s", blk, err, out)
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", blk, dir).CombinedOutput(); err != nil {
		t.Skipf("mount %s: %v %s (no ext2/ext4 in this kernel?)", blk, err, out)
	}
	defer exec.Command("umount", dir).Run()
	_, errs, code := runNvmectl(t, nil, "bind", addr)
	if code != 1 || !strings.Contains(errs, blk+" is mounted on "+dir) {
		t.Errorf("bind of a controller with a mounted namespace: exit %d, %q", code, errs)
	}
	if l, _ := os.Readlink(filepath.Join(sysPCI, addr, "driver")); filepath.Base(l) != "nvme" {
		t.Errorf("the refused controller is on %q now, want it left on nvme", filepath.Base(l))
	}
}
