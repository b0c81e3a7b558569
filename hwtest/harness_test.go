package hwtest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// The shared harness: every hardware test starts with testDevice(t) (or testDevices) and so
// skips cleanly on a machine without a controller and fails loudly on a broken set-up.

const sysPCI = "/sys/bus/pci/devices"

// testDevice returns the PCI address of the controller the tests may use, from
// NVMEPOLL_TEST_DEVICE. It skips the test when the variable is unset (fails it instead when
// NVMEPOLL_REQUIRE_DEVICE is set, as scripts/test.sh does in the guest) and fails it when the
// variable names a device that does not exist.
func testDevice(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("NVMEPOLL_TEST_DEVICE")
	if addr == "" {
		if os.Getenv("NVMEPOLL_REQUIRE_DEVICE") != "" {
			t.Fatal("NVMEPOLL_REQUIRE_DEVICE is set but NVMEPOLL_TEST_DEVICE is not: the guest set-up named no controller")
		}
		t.Skip("no test device: set NVMEPOLL_TEST_DEVICE=0000:00:03.0 (scripts/guest.sh runs these in a QEMU guest; see hwtest/doc.go)")
	}
	checkPCIDevice(t, "NVMEPOLL_TEST_DEVICE", addr)
	return addr
}

// testDevices returns the vfio-bound controllers by serial, from NVMEPOLL_TEST_DEVICES
// ("serial=addr,serial=addr"). It skips like testDevice when no device is named at all, and
// fails on a malformed list or a named device that does not exist.
func testDevices(t testing.TB) map[string]string {
	t.Helper()
	testDevice(t)
	devs, err := parseDeviceList(os.Getenv("NVMEPOLL_TEST_DEVICES"))
	if err != nil {
		t.Fatalf("NVMEPOLL_TEST_DEVICES: %v", err)
	}
	for serial, addr := range devs {
		checkPCIDevice(t, "NVMEPOLL_TEST_DEVICES "+serial, addr)
	}
	return devs
}

// testDeviceBySerial returns the address of the vfio-bound controller with the given serial.
// It skips when that controller was not started (a guest run without it, or real hardware), so
// tests that need QEMU properties such as mdts=2 name the controller they need.
func testDeviceBySerial(t testing.TB, serial string) string {
	t.Helper()
	addr, ok := testDevices(t)[serial]
	if !ok {
		t.Skipf("no controller with serial %q in NVMEPOLL_TEST_DEVICES=%q", serial, os.Getenv("NVMEPOLL_TEST_DEVICES"))
	}
	return addr
}

func checkPCIDevice(t testing.TB, from, addr string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(sysPCI, addr)); err != nil {
		t.Fatalf("%s=%s: no such PCI device (%v); want a full address like 0000:00:03.0", from, addr, err)
	}
}

// parseDeviceList parses "serial=addr,serial=addr". An empty string is an empty list.
func parseDeviceList(s string) (map[string]string, error) {
	devs := map[string]string{}
	if s == "" {
		return devs, nil
	}
	for _, kv := range strings.Split(s, ",") {
		serial, addr, ok := strings.Cut(kv, "=")
		if !ok || serial == "" || addr == "" {
			return nil, fmt.Errorf("entry %q in %q is not serial=address", kv, s)
		}
		if _, dup := devs[serial]; dup {
			return nil, fmt.Errorf("serial %q appears twice in %q", serial, s)
		}
		devs[serial] = addr
	}
	return devs, nil
}

// sysfsString reads a one-line sysfs attribute of a PCI device.
func sysfsString(t testing.TB, addr, attr string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sysPCI, addr, attr))
	if err != nil {
		t.Fatalf("reading %s of %s: %v", attr, addr, err)
	}
	return strings.TrimSpace(string(b))
}

// TestMain fails the run when the tests leave file descriptors open: every vfio.Device,
// container and group fd must be released by Close, or a long-running user leaks them.
func TestMain(m *testing.M) {
	// Open and close one pollable file first, so the runtime's netpoll descriptors (made on
	// first use, kept forever) exist before the "before" snapshot.
	if r, w, err := os.Pipe(); err == nil {
		r.Close()
		w.Close()
	}
	before := openFDs()
	code := m.Run()
	if code == 0 && before != nil {
		if leaked := newFDs(before, openFDs()); len(leaked) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: the tests left %d file descriptor(s) open: %s\n", len(leaked), strings.Join(leaked, ", "))
			code = 1
		}
	}
	os.Exit(code)
}

// openFDs maps each open descriptor number to what it refers to; nil if /proc is unreadable.
func openFDs() map[string]string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	fds := map[string]string{}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the descriptor ReadDir itself used, now closed
		}
		fds[e.Name()] = target
	}
	return fds
}

func newFDs(before, after map[string]string) []string {
	var leaked []string
	for fd, target := range after {
		if before[fd] != target {
			leaked = append(leaked, fd+" -> "+target)
		}
	}
	sort.Strings(leaked)
	return leaked
}

func TestParseDeviceList(t *testing.T) {
	got, err := parseDeviceList("a=0000:00:03.0,mdts2=0000:00:04.0")
	if err != nil || len(got) != 2 || got["a"] != "0000:00:03.0" || got["mdts2"] != "0000:00:04.0" {
		t.Errorf("parseDeviceList: got %v, %v; want a and mdts2 at 00:03.0 and 00:04.0", got, err)
	}
	if got, err := parseDeviceList(""); err != nil || len(got) != 0 {
		t.Errorf("parseDeviceList(\"\"): got %v, %v; want an empty list", got, err)
	}
	for _, bad := range []string{"0000:00:03.0", "a=", "=0000:00:03.0", "a=1,a=2"} {
		if _, err := parseDeviceList(bad); err == nil {
			t.Errorf("parseDeviceList(%q): no error", bad)
		}
	}
}

// TestTestDevice checks the guest set-up the other hardware tests rely on: the named device is
// an NVMe controller, bound to vfio-pci, in an IOMMU group whose /dev/vfio node exists.
func TestTestDevice(t *testing.T) {
	addr := testDevice(t)

	if class := sysfsString(t, addr, "class"); class != "0x010802" {
		t.Errorf("%s: class %s, want 0x010802 (NVMe controller, NVM Express interface)", addr, class)
	}
	vendor := sysfsString(t, addr, "vendor")
	device := sysfsString(t, addr, "device")
	if os.Getenv("NVMEPOLL_GUEST") == "qemu" {
		if vendor != "0x1b36" || device != "0x0010" {
			t.Errorf("%s: PCI ID %s:%s, want QEMU's NVMe controller 0x1b36:0x0010", addr, vendor, device)
		}
	} else {
		t.Logf("%s: PCI ID %s:%s", addr, vendor, device)
	}

	driver, err := os.Readlink(filepath.Join(sysPCI, addr, "driver"))
	if err != nil {
		t.Fatalf("%s is bound to no driver (%v); bind it to vfio-pci", addr, err)
	}
	if filepath.Base(driver) != "vfio-pci" {
		t.Fatalf("%s is bound to %s, want vfio-pci", addr, filepath.Base(driver))
	}

	group, err := os.Readlink(filepath.Join(sysPCI, addr, "iommu_group"))
	if err != nil {
		t.Fatalf("%s has no IOMMU group (%v); is the IOMMU on (intel_iommu=on)?", addr, err)
	}
	for _, node := range []string{"/dev/vfio/vfio", "/dev/vfio/" + filepath.Base(group)} {
		fi, err := os.Stat(node)
		if err != nil {
			t.Errorf("%s: %v", addr, err)
			continue
		}
		if fi.Mode()&os.ModeCharDevice == 0 {
			t.Errorf("%s: %s is %v, want a character device", addr, node, fi.Mode())
		}
	}
}

// TestTestDevices checks that every controller the runner announced is a vfio-bound NVMe
// controller, and that NVMEPOLL_TEST_DEVICE is one of them.
func TestTestDevices(t *testing.T) {
	first := testDevice(t)
	devs := testDevices(t)
	if os.Getenv("NVMEPOLL_TEST_DEVICES") == "" {
		t.Skip("NVMEPOLL_TEST_DEVICES is not set")
	}
	found := false
	for serial, addr := range devs {
		found = found || addr == first
		if class := sysfsString(t, addr, "class"); class != "0x010802" {
			t.Errorf("controller %s (%s): class %s, want 0x010802", serial, addr, class)
		}
		if driver, err := os.Readlink(filepath.Join(sysPCI, addr, "driver")); err != nil || filepath.Base(driver) != "vfio-pci" {
			t.Errorf("controller %s (%s): driver %q (%v), want vfio-pci", serial, addr, filepath.Base(driver), err)
		}
	}
	if !found {
		t.Errorf("NVMEPOLL_TEST_DEVICE=%s is not in NVMEPOLL_TEST_DEVICES=%s", first, os.Getenv("NVMEPOLL_TEST_DEVICES"))
	}
}
