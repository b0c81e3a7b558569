// Package pci finds NVMe controllers in sysfs and moves them between the
// kernel's nvme driver and vfio-pci.
//
// Everything goes through a Sysfs whose root is a parameter (default /sys),
// so tests run against a fake tree in a temporary directory. The package
// reads the few sysfs files it needs itself: u-root's pkg/pci bus reader
// only scans the fixed /sys/bus/pci/devices, so it is used only to parse
// one device directory (pci.OnePCI, which takes any directory) and for
// vendor and device names (pci.Lookup).
package pci

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	upci "github.com/u-root/u-root/pkg/pci"
)

// ClassNVMe is the PCI class code of an NVM Express controller: mass storage
// (0x01), non-volatile memory (0x08), NVMe programming interface (0x02).
const ClassNVMe = 0x010802

// Driver names this package binds to.
const (
	DriverVFIO = "vfio-pci"
	DriverNVMe = "nvme"
)

var (
	// ErrBadAddress means a string is not a PCI address.
	ErrBadAddress = errors.New("not a PCI address")
	// ErrNoDevice means no PCI function has the address.
	ErrNoDevice = errors.New("no such PCI device")
	// ErrNoIOMMUGroup means the function has no IOMMU group, which almost
	// always means the IOMMU is off.
	ErrNoIOMMUGroup = errors.New("no IOMMU group")
)

// ParseAddr normalizes a PCI address: "0000:00:03.0" and the short
// "00:03.0" (domain 0) both give "0000:00:03.0". Hex digits may be upper
// case. The error wraps ErrBadAddress.
func ParseAddr(s string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("pci: %q: %w (%s; want domain:bus:device.function like 0000:00:03.0, or bus:device.function like 00:03.0)", s, ErrBadAddress, why)
	}
	parts := strings.Split(s, ":")
	domain := "0"
	switch len(parts) {
	case 2:
	case 3:
		domain, parts = parts[0], parts[1:]
	default:
		return bad("wrong number of colons")
	}
	devfn := strings.Split(parts[1], ".")
	if len(devfn) != 2 {
		return bad("no .function")
	}
	fields := []struct {
		name   string
		s      string
		digits int
		max    uint64
	}{
		{"domain", domain, 8, 0xffffffff},
		{"bus", parts[0], 2, 0xff},
		{"device", devfn[0], 2, 0x1f},
		{"function", devfn[1], 1, 7},
	}
	var v [4]uint64
	for i, f := range fields {
		if f.s == "" || len(f.s) > f.digits {
			return bad(fmt.Sprintf("%s %q must be 1 to %d hex digits", f.name, f.s, f.digits))
		}
		n, err := strconv.ParseUint(f.s, 16, 32)
		if err != nil || n > f.max {
			return bad(fmt.Sprintf("%s %q is not hex up to %#x", f.name, f.s, f.max))
		}
		v[i] = n
	}
	return fmt.Sprintf("%04x:%02x:%02x.%x", v[0], v[1], v[2], v[3]), nil
}

// Function is one PCI function as sysfs describes it.
type Function struct {
	Addr       string // normalized, "0000:00:03.0"
	Vendor     uint16
	Device     uint16
	VendorName string // from the pci.ids table; the hex id when unknown
	DeviceName string
	Class      uint32 // 24-bit class code, ClassNVMe for NVMe
	// Driver is the bound driver's name: "nvme", "vfio-pci", or "" for none.
	Driver string
	// Override is driver_override: the only driver the kernel will bind
	// on the next probe, or "" for any.
	Override string
	// IOMMUGroup is the IOMMU group number, or -1 when there is none.
	IOMMUGroup int
}

func (f Function) String() string {
	drv := f.Driver
	if drv == "" {
		drv = "no driver"
	}
	grp := "no IOMMU group"
	if f.IOMMUGroup >= 0 {
		grp = fmt.Sprintf("IOMMU group %d", f.IOMMUGroup)
	}
	return fmt.Sprintf("%s %04x:%04x %s %s (%s, %s)", f.Addr, f.Vendor, f.Device, f.VendorName, f.DeviceName, drv, grp)
}

// Sysfs reads and changes PCI state under a sysfs root.
type Sysfs struct {
	root string
	// write and modprobe are the two ways this package changes the
	// system; tests replace them with a fake kernel.
	write    func(path, data string) error
	modprobe func(module string) error
}

// New returns a Sysfs rooted at root; "" means /sys.
func New(root string) *Sysfs {
	if root == "" {
		root = "/sys"
	}
	return &Sysfs{root: root, write: writeFile, modprobe: modprobe}
}

// Root is the sysfs mount point in use.
func (s *Sysfs) Root() string { return s.root }

func (s *Sysfs) devDir(addr string) string {
	return filepath.Join(s.root, "bus", "pci", "devices", addr)
}

func (s *Sysfs) driverDir(name string) string {
	return filepath.Join(s.root, "bus", "pci", "drivers", name)
}

// writeFile writes an existing sysfs attribute. It never creates files: a
// missing attribute is an error, not a new file.
func writeFile(path, data string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func modprobe(module string) error {
	out, err := exec.Command("modprobe", module).CombinedOutput()
	if err != nil {
		return fmt.Errorf("modprobe %s: %w: %s", module, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Function describes the function at addr (any accepted form). The error
// wraps ErrNoDevice when sysfs has no such device.
func (s *Sysfs) Function(addr string) (Function, error) {
	a, err := ParseAddr(addr)
	if err != nil {
		return Function{}, err
	}
	dir := s.devDir(a)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return Function{}, fmt.Errorf("pci: %s: %w (not in %s; list NVMe controllers with `nvmectl list`)", a, ErrNoDevice, filepath.Dir(dir))
	}
	p, err := upci.OnePCI(dir)
	if err != nil {
		return Function{}, fmt.Errorf("pci: reading %s: %w", dir, err)
	}
	f := Function{Addr: a, Vendor: p.Vendor, Device: p.Device, Class: p.Class, IOMMUGroup: -1}
	f.VendorName, f.DeviceName = upci.Lookup(upci.IDs, p.Vendor, p.Device)
	if l, err := os.Readlink(filepath.Join(dir, "driver")); err == nil {
		f.Driver = filepath.Base(l)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "driver_override")); err == nil {
		f.Override = strings.TrimSpace(string(b))
		if f.Override == "(null)" { // what the kernel prints for none
			f.Override = ""
		}
	}
	if l, err := os.Readlink(filepath.Join(dir, "iommu_group")); err == nil {
		if n, err := strconv.Atoi(filepath.Base(l)); err == nil {
			f.IOMMUGroup = n
		}
	}
	return f, nil
}

// List returns every PCI function for which keep returns true (all of them
// for a nil keep), sorted by address.
func (s *Sysfs) List(keep func(Function) bool) ([]Function, error) {
	ents, err := os.ReadDir(filepath.Join(s.root, "bus", "pci", "devices"))
	if err != nil {
		return nil, fmt.Errorf("pci: listing devices: %w", err)
	}
	var out []Function
	for _, e := range ents {
		f, err := s.Function(e.Name())
		if err != nil {
			// A device that vanished (hot unplug) or an entry
			// that is not an address is not worth failing for.
			continue
		}
		if keep == nil || keep(f) {
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out, nil
}

// NVMe lists the NVMe controllers (class 0x010802), whatever their driver.
func (s *Sysfs) NVMe() ([]Function, error) {
	return s.List(func(f Function) bool { return f.Class == ClassNVMe })
}

// Group lists the functions in IOMMU group n, sorted by address.
func (s *Sysfs) Group(n int) ([]Function, error) {
	dir := filepath.Join(s.root, "kernel", "iommu_groups", strconv.Itoa(n), "devices")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("pci: listing IOMMU group %d: %w", n, err)
	}
	var out []Function
	for _, e := range ents {
		f, err := s.Function(e.Name())
		if err != nil {
			continue
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out, nil
}

// Binding reports what Bind or Unbind did.
type Binding struct {
	Addr  string
	From  string   // driver before, "" for none
	To    string   // driver after
	Steps []string // each change made, in order; none when it was already done
}

func (b Binding) String() string {
	name := func(d string) string {
		if d == "" {
			return "no driver"
		}
		return d
	}
	if len(b.Steps) == 0 {
		return fmt.Sprintf("%s: already bound to %s", b.Addr, name(b.To))
	}
	return fmt.Sprintf("%s: %s -> %s (%s)", b.Addr, name(b.From), name(b.To), strings.Join(b.Steps, "; "))
}

// Bind hands the function at addr to vfio-pci: it loads vfio-pci if its
// driver directory is missing, sets driver_override so no other driver
// takes the device, unbinds the current driver and asks the kernel to
// probe again. A function already on vfio-pci is left alone. It refuses a
// function without an IOMMU group, which vfio-pci could not use anyway.
func (s *Sysfs) Bind(addr string) (Binding, error) {
	return s.rebind(addr, DriverVFIO, DriverVFIO)
}

// Unbind gives the function at addr back to the kernel's nvme driver:
// it clears driver_override, unbinds vfio-pci and probes again. A function
// already on nvme with no override is left alone.
func (s *Sysfs) Unbind(addr string) (Binding, error) {
	return s.rebind(addr, DriverNVMe, "")
}

// rebind moves addr to driver want, writing override to driver_override.
func (s *Sysfs) rebind(addr, want, override string) (Binding, error) {
	f, err := s.Function(addr)
	if err != nil {
		return Binding{}, err
	}
	b := Binding{Addr: f.Addr, From: f.Driver, To: f.Driver}
	if f.Driver == want && f.Override == override {
		return b, nil
	}
	if want == DriverVFIO && f.IOMMUGroup < 0 {
		return b, fmt.Errorf("pci: cannot bind %s to vfio-pci: %w (the IOMMU is off: boot with intel_iommu=on, or amd_iommu=on on AMD)", f.Addr, ErrNoIOMMUGroup)
	}
	if _, err := os.Stat(s.driverDir(want)); errors.Is(err, os.ErrNotExist) {
		if err := s.modprobe(want); err != nil {
			return b, fmt.Errorf("pci: loading driver %s for %s: %w", want, f.Addr, err)
		}
		b.Steps = append(b.Steps, "modprobe "+want)
		if _, err := os.Stat(s.driverDir(want)); err != nil {
			return b, fmt.Errorf("pci: driver %s is still not in %s after modprobe", want, filepath.Dir(s.driverDir(want)))
		}
	}
	dev := s.devDir(f.Addr)
	do := func(step, path, data string) error {
		if err := s.write(path, data); err != nil {
			return fmt.Errorf("pci: %s %s: writing %q to %s: %w", step, f.Addr, strings.TrimSpace(data), path, err)
		}
		b.Steps = append(b.Steps, step)
		return nil
	}
	if f.Override != override {
		// A lone newline clears the override; an empty write would
		// not reach the kernel at all.
		data, step := override, "set driver_override to "+override
		if override == "" {
			data, step = "\n", "cleared driver_override"
		}
		if err := do(step, filepath.Join(dev, "driver_override"), data); err != nil {
			return b, err
		}
	}
	if f.Driver != want {
		if f.Driver != "" {
			if err := do("unbound from "+f.Driver, filepath.Join(dev, "driver", "unbind"), f.Addr); err != nil {
				return b, err
			}
		}
		if err := do("probed", filepath.Join(s.root, "bus", "pci", "drivers_probe"), f.Addr); err != nil {
			return b, err
		}
	}
	after, err := s.Function(f.Addr)
	if err != nil {
		return b, err
	}
	b.To = after.Driver
	if after.Driver != want {
		got := after.Driver
		if got == "" {
			got = "no driver"
		}
		return b, fmt.Errorf("pci: %s is on %s after probing, not %s (the kernel log, dmesg, says why)", f.Addr, got, want)
	}
	return b, nil
}

// The same operations on /sys.
var system = New("/sys")

// Lookup describes the function at addr from /sys.
func Lookup(addr string) (Function, error) { return system.Function(addr) }

// NVMe lists the NVMe controllers in /sys.
func NVMe() ([]Function, error) { return system.NVMe() }

// Bind hands the function at addr to vfio-pci; see Sysfs.Bind.
func Bind(addr string) (Binding, error) { return system.Bind(addr) }

// Unbind gives the function at addr back to nvme; see Sysfs.Unbind.
func Unbind(addr string) (Binding, error) { return system.Unbind(addr) }
