package main

import (
	"fmt"
	"strings"

	"github.com/nvmepoll/nvmepoll/vfio/pci"
)

func cmdBind(e *env, args []string) error {
	fs := newFlags("bind")
	all := fs.Bool("all", false, "bind every NVMe controller not in use (mounted, swap or held disks are skipped, as SPDK's setup.sh does)")
	pos, err := parse(e, "bind", fs, args)
	if err != nil {
		return err
	}
	if *all == (len(pos) > 0) {
		return usagef("give PCI addresses or --all (not both)")
	}
	sys := sysfs()
	addrs, err := normalize(pos)
	if err != nil {
		return err
	}
	if *all {
		fns, err := sys.NVMe()
		if err != nil {
			return fmt.Errorf("listing PCI devices in %s: %w", sys.Root(), err)
		}
		for _, f := range fns {
			addrs = append(addrs, f.Addr)
		}
		if len(addrs) == 0 {
			fmt.Fprintln(e.stdout, "no NVMe controllers found")
			return nil
		}
	}
	var failed []string
	for _, addr := range addrs {
		if err := bindOne(e, sys, addr, *all); err != nil {
			fmt.Fprintf(e.stderr, "nvmectl bind: %v\n", err)
			failed = append(failed, addr)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d controllers not bound: %s", len(failed), len(addrs), strings.Join(failed, " "))
	}
	return nil
}

// bindOne hands addr to vfio-pci unless its disks are in use. With skipBusy (bind --all) an
// in-use controller is reported and skipped, not an error.
func bindOne(e *env, sys *pci.Sysfs, addr string, skipBusy bool) error {
	f, err := sys.Function(addr)
	if err != nil {
		return fmt.Errorf("%s: %w (run 'nvmectl list' to see the NVMe controllers)", addr, err)
	}
	if f.Class != pci.ClassNVMe {
		return fmt.Errorf("%s is not an NVMe controller (class 0x%06x, %s %s); refusing to bind it", addr, f.Class, f.VendorName, f.DeviceName)
	}
	if f.Driver != pci.DriverVFIO {
		why, err := inUse(sys.Root(), f.Addr)
		if err != nil {
			return fmt.Errorf("%s: %w", addr, err)
		}
		if why != "" {
			if skipBusy {
				fmt.Fprintf(e.stdout, "%s: skipped, in use: %s\n", f.Addr, why)
				return nil
			}
			return fmt.Errorf("%s: refusing to take the controller from the kernel: %s; unmount (or release) it first", f.Addr, why)
		}
	}
	b, err := sys.Bind(f.Addr)
	if err != nil {
		return err
	}
	report(e, b)
	return nil
}

func cmdUnbind(e *env, args []string) error {
	fs := newFlags("unbind")
	pos, err := parse(e, "unbind", fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("give the PCI addresses of the controllers to give back to the nvme driver")
	}
	addrs, err := normalize(pos)
	if err != nil {
		return err
	}
	sys := sysfs()
	var failed []string
	for _, addr := range addrs {
		f, err := sys.Function(addr)
		if err == nil && f.Class != pci.ClassNVMe {
			err = fmt.Errorf("%s is not an NVMe controller (class 0x%06x); refusing to rebind it", addr, f.Class)
		}
		var b pci.Binding
		if err == nil {
			b, err = sys.Unbind(addr)
		}
		if err != nil {
			fmt.Fprintf(e.stderr, "nvmectl unbind: %v\n", err)
			failed = append(failed, addr)
			continue
		}
		report(e, b)
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d controllers not unbound: %s", len(failed), len(addrs), strings.Join(failed, " "))
	}
	return nil
}

// normalize turns each argument into a full PCI address; a malformed one is a usage error.
func normalize(args []string) ([]string, error) {
	out := make([]string, 0, len(args))
	for _, a := range args {
		addr, err := pci.ParseAddr(a)
		if err != nil {
			return nil, usagef("%q is not a PCI address (want 0000:00:03.0 or 00:03.0)", a)
		}
		out = append(out, addr)
	}
	return out, nil
}

// report says what a bind or unbind did, like setup.sh: "0000:00:03.0 (1b36 0010): nvme -> vfio-pci".
func report(e *env, b pci.Binding) {
	from := b.From
	if from == "" {
		from = "no driver"
	}
	if len(b.Steps) == 0 {
		fmt.Fprintf(e.stdout, "%s: already on %s\n", b.Addr, b.To)
		return
	}
	fmt.Fprintf(e.stdout, "%s: %s -> %s (%s)\n", b.Addr, from, b.To, strings.Join(b.Steps, ", "))
}
