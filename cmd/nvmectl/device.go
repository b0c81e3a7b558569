package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nvmepoll/nvmepoll/nvme"
	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
	"github.com/nvmepoll/nvmepoll/vfio/pci"
)

// All device opening is here: a command names a device and gets back an enabled controller.

// defaultSimSize is the namespace size of "sim" without a size.
const defaultSimSize = 64 << 20

// sysfs is where PCI state is read and changed. NVMECTL_SYSFS points it at a fake tree for tests.
func sysfs() *pci.Sysfs { return pci.New(os.Getenv("NVMECTL_SYSFS")) }

// newSim makes the device behind "sim:SIZE". Tests replace it to keep one model (and its data)
// across several run calls.
var newSim = func(size int64) (nvme.Device, error) {
	return nvmetest.New(nvmetest.Config{
		Namespaces: []nvmetest.NamespaceConfig{{Blocks: uint64(size) / 512}},
		// Commands run inside the doorbell write: no worker goroutine, cheap and deterministic.
		Inline: true,
	})
}

// device is an opened controller.
type device struct {
	name string // as the user gave it, normalized: "sim:64MiB" or "0000:00:03.0"
	sim  bool
	ctrl *nvme.Controller
}

func (d *device) Close() error { return d.ctrl.Close() }

// namespace returns namespace nsid, refusing 0 with a message that says what to give.
func (d *device) namespace(nsid uint32) (*nvme.Namespace, error) {
	if nsid == 0 {
		return nil, usagef("namespace id 0 is not valid: give -n NSID (namespaces of %s: %s)", d.name, d.nsList())
	}
	ns, err := d.ctrl.Namespace(nsid)
	if err != nil {
		return nil, fmt.Errorf("%s: namespace %d: %w (active namespaces: %s)", d.name, nsid, err, d.nsList())
	}
	return ns, nil
}

func (d *device) nsList() string {
	ids, err := d.ctrl.ActiveNamespaces(context.Background())
	if err != nil {
		return "unknown, " + err.Error()
	}
	if len(ids) == 0 {
		return "none"
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, ", ")
}

// isSim reports whether spec names the model controller.
func isSim(spec string) bool { return spec == "sim" || strings.HasPrefix(spec, "sim:") }

// openDevice opens the controller named by spec: "sim", "sim:SIZE" or a PCI address of a
// vfio-bound NVMe controller. Malformed names are usage errors; a device that is missing, not
// NVMe or on the wrong driver is a failure whose message gives the fix.
func openDevice(spec string, opts *nvme.Options) (*device, error) {
	if isSim(spec) {
		size := int64(defaultSimSize)
		if s, ok := strings.CutPrefix(spec, "sim:"); ok {
			n, err := parseSize(s)
			if err != nil {
				return nil, usagef("device %q: %v", spec, err)
			}
			if n < 4096 || n%4096 != 0 {
				return nil, usagef("device %q: the simulated namespace must be a positive multiple of 4 KiB", spec)
			}
			size = n
		}
		dev, err := newSim(size)
		if err != nil {
			return nil, fmt.Errorf("creating the simulated controller: %w", err)
		}
		ctrl, err := nvme.Open(dev, opts)
		if err != nil {
			return nil, fmt.Errorf("bringing up the simulated controller: %w", err)
		}
		return &device{name: "sim:" + formatSize(size), sim: true, ctrl: ctrl}, nil
	}

	addr, err := pci.ParseAddr(spec)
	if err != nil {
		return nil, usagef("device %q is neither a PCI address (0000:00:03.0 or 00:03.0) nor sim[:SIZE]", spec)
	}
	if err := checkVFIOBound(addr); err != nil {
		return nil, err
	}
	// OpenPCI's errors name the address and the fix (vfio's "bind it first", RLIMIT_MEMLOCK...).
	ctrl, err := nvme.OpenPCI(addr, opts)
	if err != nil {
		return nil, err
	}
	return &device{name: addr, ctrl: ctrl}, nil
}

// checkVFIOBound explains what is wrong with addr before VFIO would fail less clearly.
func checkVFIOBound(addr string) error {
	f, err := sysfs().Function(addr)
	if errors.Is(err, pci.ErrNoDevice) {
		return fmt.Errorf("%s: no such PCI device (run 'nvmectl list' to see the NVMe controllers)", addr)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	if f.Class != pci.ClassNVMe {
		return fmt.Errorf("%s is not an NVMe controller: class 0x%06x (%s %s); run 'nvmectl list' to see the NVMe controllers",
			addr, f.Class, f.VendorName, f.DeviceName)
	}
	switch f.Driver {
	case pci.DriverVFIO:
		return nil
	case "":
		return fmt.Errorf("%s is bound to no driver; run 'nvmectl bind %s' to hand it to vfio-pci", addr, addr)
	default:
		return fmt.Errorf("%s is bound to the kernel's %s driver, not vfio-pci; run 'nvmectl bind %s' first (it refuses while the disk is mounted)",
			addr, f.Driver, addr)
	}
}

// withDevice opens spec, runs f and closes the device, reporting a failed close.
func withDevice(spec string, opts *nvme.Options, f func(d *device) error) error {
	d, err := openDevice(spec, opts)
	if err != nil {
		return err
	}
	err = f(d)
	if cerr := d.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("%s: closing: %w", d.name, cerr)
	}
	return err
}

// ctxTimeout is the bound on one admin step of a command.
func ctxTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}
