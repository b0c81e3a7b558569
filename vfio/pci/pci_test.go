package pci

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0000:00:03.0":  "0000:00:03.0",
		"00:03.0":       "0000:00:03.0",
		"0000:3B:00.1":  "0000:3b:00.1",
		"1:2:3.4":       "0001:02:03.4",
		"10000:e1:1f.7": "10000:e1:1f.7", // VMD domains have five digits
	} {
		got, err := ParseAddr(in)
		if err != nil || got != want {
			t.Errorf("ParseAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "00:03", "03.0", "0000:00:03.8", "0000:00:20.0", "0000:100:03.0",
		"0000:00:03.0.1", "zz:03.0", "0000:00:03.0 ", "a:b:c:d.0", "0000:00:-3.0", "0000:00:+3.0"} {
		if got, err := ParseAddr(in); !errors.Is(err, ErrBadAddress) {
			t.Errorf("ParseAddr(%q) = %q, %v; want ErrBadAddress", in, got, err)
		}
	}
	_, err := ParseAddr("00:03")
	if err == nil || !strings.Contains(err.Error(), "like 0000:00:03.0") {
		t.Errorf("error %q does not show the expected form", err)
	}
}

// fakeSys is a sysfs tree in a temporary directory plus a fake kernel that
// reacts to writes the way the PCI core does.
type fakeSys struct {
	t      *testing.T
	root   string
	s      *Sysfs
	writes []string // "path-under-root=data"
	probes []string // modules loaded
	// refuse makes probing leave the device unbound, as when the
	// driver's probe fails.
	refuse bool
}

func newFakeSys(t *testing.T) *fakeSys {
	root := t.TempDir()
	f := &fakeSys{t: t, root: root}
	f.mkdir("bus/pci/devices")
	f.mkdir("bus/pci/drivers/nvme")
	f.file("bus/pci/drivers/nvme/unbind", "")
	f.file("bus/pci/drivers_probe", "")
	f.s = New(root)
	f.s.write = f.write
	f.s.modprobe = f.modprobe
	return f
}

func (f *fakeSys) path(rel string) string { return filepath.Join(f.root, rel) }

func (f *fakeSys) mkdir(rel string) {
	if err := os.MkdirAll(f.path(rel), 0o755); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeSys) file(rel, data string) {
	f.mkdir(filepath.Dir(rel))
	if err := os.WriteFile(f.path(rel), []byte(data), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeSys) symlink(rel, target string) {
	os.Remove(f.path(rel))
	if err := os.Symlink(f.path(target), f.path(rel)); err != nil {
		f.t.Fatal(err)
	}
}

// device adds a function; driver "" leaves it unbound, group < 0 gives it
// no IOMMU group.
func (f *fakeSys) device(addr string, vendor, device uint16, class uint32, driver string, group int) {
	d := "bus/pci/devices/" + addr
	f.file(d+"/vendor", sprintf("0x%04x\n", vendor))
	f.file(d+"/device", sprintf("0x%04x\n", device))
	f.file(d+"/class", sprintf("0x%06x\n", class))
	f.file(d+"/irq", "11\n")
	f.file(d+"/resource", "0x00000000febf0000 0x00000000febf3fff 0x0000000000140204\n0x0000000000000000 0x0000000000000000 0x0000000000000000\n")
	f.file(d+"/driver_override", "(null)\n")
	if driver != "" {
		f.symlink(d+"/driver", "bus/pci/drivers/"+driver)
	}
	if group >= 0 {
		g := sprintf("kernel/iommu_groups/%d", group)
		f.mkdir(g + "/devices")
		f.symlink(g+"/devices/"+addr, d)
		f.symlink(d+"/iommu_group", g)
	}
}

// write is the fake kernel: it performs the write on the tree (through the
// real writer, so a missing attribute fails as it would in sysfs) and then
// does what the PCI core would.
func (f *fakeSys) write(path, data string) error {
	rel, _ := filepath.Rel(f.root, path)
	f.writes = append(f.writes, rel+"="+data)
	if err := writeFile(path, data); err != nil {
		return err
	}
	// A sysfs store replaces the value; a regular file keeps the old tail.
	os.Truncate(path, int64(len(data)))
	switch {
	case strings.HasSuffix(rel, "/unbind"):
		os.Remove(f.path("bus/pci/devices/" + data + "/driver"))
	case rel == "bus/pci/drivers_probe":
		if f.refuse {
			return nil
		}
		dev := "bus/pci/devices/" + data
		b, _ := os.ReadFile(f.path(dev + "/driver_override"))
		drv := strings.TrimSpace(string(b))
		if drv == "" {
			drv = DriverNVMe // the only driver in the fake that matches class 0x010802
		}
		if _, err := os.Stat(f.path("bus/pci/drivers/" + drv)); err == nil {
			f.symlink(dev+"/driver", "bus/pci/drivers/"+drv)
		}
	}
	return nil
}

func (f *fakeSys) modprobe(module string) error {
	f.probes = append(f.probes, module)
	f.mkdir("bus/pci/drivers/" + module)
	f.file("bus/pci/drivers/"+module+"/unbind", "")
	return nil
}

func sprintf(format string, a ...any) string { return fmt.Sprintf(format, a...) }

func TestNVMeList(t *testing.T) {
	f := newFakeSys(t)
	f.device("0000:00:04.0", 0x1b36, 0x0010, ClassNVMe, "", 4)
	f.device("0000:00:03.0", 0x1b36, 0x0010, ClassNVMe, "nvme", 3)
	f.device("0000:00:02.0", 0x8086, 0x100e, 0x020000, "e1000", 2) // a NIC: not listed
	f.device("0000:00:05.0", 0x144d, 0xa808, ClassNVMe, "", -1)
	f.mkdir("bus/pci/drivers/vfio-pci")
	f.symlink("bus/pci/devices/0000:00:04.0/driver", "bus/pci/drivers/vfio-pci")

	got, err := f.s.NVMe()
	if err != nil {
		t.Fatal(err)
	}
	want := []Function{
		{Addr: "0000:00:03.0", Vendor: 0x1b36, Device: 0x0010, Class: ClassNVMe, Driver: "nvme", IOMMUGroup: 3},
		{Addr: "0000:00:04.0", Vendor: 0x1b36, Device: 0x0010, Class: ClassNVMe, Driver: "vfio-pci", IOMMUGroup: 4},
		{Addr: "0000:00:05.0", Vendor: 0x144d, Device: 0xa808, Class: ClassNVMe, Driver: "", IOMMUGroup: -1},
	}
	if diff := cmp.Diff(want, got, cmpIgnoreNames); diff != "" {
		t.Errorf("NVMe() (-want +got):\n%s", diff)
	}
	// Names come from the pci.ids table.
	if len(got) > 0 && (got[0].VendorName != "Red Hat, Inc." || !strings.Contains(got[0].DeviceName, "NVM")) {
		t.Errorf("names of 1b36:0010 = %q / %q, want Red Hat's QEMU NVM Express Controller", got[0].VendorName, got[0].DeviceName)
	}
}

var cmpIgnoreNames = cmp.FilterPath(func(p cmp.Path) bool {
	s := p.String()
	return s == "VendorName" || s == "DeviceName"
}, cmp.Ignore())

func TestFunctionErrors(t *testing.T) {
	f := newFakeSys(t)
	_, err := f.s.Function("00:09.0")
	if !errors.Is(err, ErrNoDevice) {
		t.Fatalf("Function of a missing address: %v, want ErrNoDevice", err)
	}
	if !strings.Contains(err.Error(), "0000:00:09.0") {
		t.Errorf("error %q does not name the normalized address", err)
	}
	if _, err := f.s.Function("nonsense"); !errors.Is(err, ErrBadAddress) {
		t.Errorf("Function(nonsense): %v, want ErrBadAddress", err)
	}
}

func TestGroup(t *testing.T) {
	f := newFakeSys(t)
	f.device("0000:00:03.0", 0x1b36, 0x0010, ClassNVMe, "vfio-pci", 7)
	f.device("0000:00:03.1", 0x8086, 0x100e, 0x020000, "e1000", 7)
	f.device("0000:00:04.0", 0x1b36, 0x0010, ClassNVMe, "nvme", 8)
	got, err := f.s.Group(7)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, g := range got {
		addrs = append(addrs, g.Addr+" "+g.Driver)
	}
	if diff := cmp.Diff([]string{"0000:00:03.0 vfio-pci", "0000:00:03.1 e1000"}, addrs); diff != "" {
		t.Errorf("Group(7) (-want +got):\n%s", diff)
	}
}

func TestBindUnbind(t *testing.T) {
	f := newFakeSys(t)
	f.device("0000:00:03.0", 0x1b36, 0x0010, ClassNVMe, "nvme", 3)

	// vfio-pci is not loaded yet: Bind loads it, then moves the device.
	b, err := f.s.Bind("00:03.0")
	if err != nil {
		t.Fatal(err)
	}
	wantWrites := []string{
		"bus/pci/devices/0000:00:03.0/driver_override=vfio-pci",
		"bus/pci/devices/0000:00:03.0/driver/unbind=0000:00:03.0",
		"bus/pci/drivers_probe=0000:00:03.0",
	}
	if diff := cmp.Diff(wantWrites, f.writes); diff != "" {
		t.Errorf("Bind writes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"vfio-pci"}, f.probes); diff != "" {
		t.Errorf("modules loaded (-want +got):\n%s", diff)
	}
	if b.From != "nvme" || b.To != "vfio-pci" {
		t.Errorf("Binding = %+v, want nvme -> vfio-pci", b)
	}
	if got, want := b.String(), "0000:00:03.0: nvme -> vfio-pci (modprobe vfio-pci; set driver_override to vfio-pci; unbound from nvme; probed)"; got != want {
		t.Errorf("Binding.String() = %q\nwant                %q", got, want)
	}

	// Again: nothing to do.
	f.writes = nil
	b, err = f.s.Bind("0000:00:03.0")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.writes) != 0 || len(b.Steps) != 0 {
		t.Errorf("second Bind wrote %v, steps %v; want nothing", f.writes, b.Steps)
	}
	if got, want := b.String(), "0000:00:03.0: already bound to vfio-pci"; got != want {
		t.Errorf("second Bind reports %q, want %q", got, want)
	}

	// Back to nvme.
	b, err = f.s.Unbind("0000:00:03.0")
	if err != nil {
		t.Fatal(err)
	}
	wantWrites = []string{
		"bus/pci/devices/0000:00:03.0/driver_override=\n",
		"bus/pci/devices/0000:00:03.0/driver/unbind=0000:00:03.0",
		"bus/pci/drivers_probe=0000:00:03.0",
	}
	if diff := cmp.Diff(wantWrites, f.writes); diff != "" {
		t.Errorf("Unbind writes (-want +got):\n%s", diff)
	}
	if b.From != "vfio-pci" || b.To != "nvme" {
		t.Errorf("Unbind = %+v, want vfio-pci -> nvme", b)
	}
	fn, err := f.s.Function("0000:00:03.0")
	if err != nil {
		t.Fatal(err)
	}
	if fn.Driver != "nvme" || fn.Override != "" {
		t.Errorf("after Unbind: driver %q, override %q; want nvme and none", fn.Driver, fn.Override)
	}

	f.writes = nil
	if b, err := f.s.Unbind("0000:00:03.0"); err != nil || len(f.writes) != 0 {
		t.Errorf("second Unbind: %v, %v, wrote %v; want nothing done", b, err, f.writes)
	}
}

// An unbound device needs no unbind write.
func TestBindUnboundDevice(t *testing.T) {
	f := newFakeSys(t)
	f.mkdir("bus/pci/drivers/vfio-pci")
	f.device("0000:00:03.0", 0x1b36, 0x0010, ClassNVMe, "", 3)
	if _, err := f.s.Bind("0000:00:03.0"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"bus/pci/devices/0000:00:03.0/driver_override=vfio-pci",
		"bus/pci/drivers_probe=0000:00:03.0",
	}
	if diff := cmp.Diff(want, f.writes); diff != "" {
		t.Errorf("writes (-want +got):\n%s", diff)
	}
	if len(f.probes) != 0 {
		t.Errorf("loaded %v although vfio-pci was there", f.probes)
	}
}

func TestBindErrors(t *testing.T) {
	f := newFakeSys(t)
	f.device("0000:00:05.0", 0x1b36, 0x0010, ClassNVMe, "nvme", -1)
	_, err := f.s.Bind("0000:00:05.0")
	if !errors.Is(err, ErrNoIOMMUGroup) {
		t.Fatalf("Bind without IOMMU group: %v, want ErrNoIOMMUGroup", err)
	}
	if !strings.Contains(err.Error(), "intel_iommu=on") {
		t.Errorf("error %q does not say how to turn the IOMMU on", err)
	}
	if len(f.writes) != 0 {
		t.Errorf("Bind without IOMMU group wrote %v", f.writes)
	}

	if _, err := f.s.Bind("0000:00:09.0"); !errors.Is(err, ErrNoDevice) {
		t.Errorf("Bind of a missing device: %v, want ErrNoDevice", err)
	}

	// The driver's probe fails: Bind says so instead of claiming success.
	f.device("0000:00:03.0", 0x1b36, 0x0010, ClassNVMe, "nvme", 3)
	f.refuse = true
	_, err = f.s.Bind("0000:00:03.0")
	if err == nil || !strings.Contains(err.Error(), "is on no driver after probing, not vfio-pci") {
		t.Errorf("Bind with a failing probe: %v", err)
	}
}
