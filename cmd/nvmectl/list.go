package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nvmepoll/nvmepoll/nvme"
	"github.com/nvmepoll/nvmepoll/vfio/pci"
)

// listEntry is one controller in `nvmectl list`. JSON keys follow nvme-cli's list where it has
// one (ModelNumber, SerialNumber, Firmware); the PCI ones are ours.
type listEntry struct {
	Address      string   `json:"Address"`
	VendorID     string   `json:"VendorID"`
	DeviceID     string   `json:"DeviceID"`
	Vendor       string   `json:"Vendor"`
	Device       string   `json:"Device"`
	Driver       string   `json:"Driver"`
	IOMMUGroup   int      `json:"IOMMUGroup"`
	BlockDevices []string `json:"BlockDevices,omitempty"`
	ModelNumber  string   `json:"ModelNumber,omitempty"`
	SerialNumber string   `json:"SerialNumber,omitempty"`
	Firmware     string   `json:"Firmware,omitempty"`
	Namespaces   []listNS `json:"Namespaces,omitempty"`
	Error        string   `json:"Error,omitempty"`
}

type listNS struct {
	NSID         uint32 `json:"NameSpace"`
	Blocks       uint64 `json:"Blocks"`
	SectorSize   int    `json:"SectorSize"`
	PhysicalSize uint64 `json:"PhysicalSize"`
}

func cmdList(e *env, args []string) error {
	fs := newFlags("list")
	asJSON := jsonFlags(fs)
	pos, err := parse(e, "list", fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("list takes no arguments, got %s", strings.Join(pos, " "))
	}
	sys := sysfs()
	fns, err := sys.NVMe()
	if err != nil {
		return fmt.Errorf("listing PCI devices in %s: %w", sys.Root(), err)
	}
	entries := make([]listEntry, 0, len(fns))
	for _, f := range fns {
		ent := listEntry{Address: f.Addr, VendorID: fmt.Sprintf("%04x", f.Vendor), DeviceID: fmt.Sprintf("%04x", f.Device),
			Vendor: f.VendorName, Device: f.DeviceName, Driver: f.Driver, IOMMUGroup: f.IOMMUGroup}
		if ent.Driver == "" {
			ent.Driver = "none"
		}
		ent.BlockDevices = blockDevices(sys.Root(), f.Addr)
		if f.Driver == pci.DriverVFIO {
			describe(&ent)
		}
		entries = append(entries, ent)
	}
	if *asJSON {
		return writeJSON(e.stdout, map[string]any{"Devices": entries})
	}
	if len(entries) == 0 {
		fmt.Fprintln(e.stdout, "no NVMe controllers (PCI class 0x010802) found")
		return nil
	}
	fmt.Fprintf(e.stdout, "%-13s %-9s %-9s %-6s %-20s %-24s %-9s %s\n", "Address", "Vendor", "Driver", "Group", "SN", "Model", "FW", "Namespaces")
	fmt.Fprintf(e.stdout, "%s\n", strings.Repeat("-", 110))
	for _, ent := range entries {
		group := "-"
		if ent.IOMMUGroup >= 0 {
			group = fmt.Sprint(ent.IOMMUGroup)
		}
		ns := strings.Join(ent.BlockDevices, ",")
		if len(ent.Namespaces) > 0 {
			var s []string
			for _, n := range ent.Namespaces {
				s = append(s, fmt.Sprintf("%d: %s (%d x %d B)", n.NSID, humanBytes(float64(n.PhysicalSize)), n.Blocks, n.SectorSize))
			}
			ns = strings.Join(s, "; ")
		}
		if ent.Error != "" {
			ns = strings.TrimSpace(ns + " (" + ent.Error + ")")
		}
		fmt.Fprintf(e.stdout, "%-13s %-9s %-9s %-6s %-20s %-24s %-9s %s\n", ent.Address, ent.VendorID+":"+ent.DeviceID, ent.Driver, group,
			dash(ent.SerialNumber), dash(ent.ModelNumber), dash(ent.Firmware), ns)
		fmt.Fprintf(e.stdout, "%-13s %s %s\n", "", ent.Vendor, ent.Device)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// describe opens a vfio-bound controller briefly for its identity and namespaces. A failure
// (the group is in use by another process, say) is noted in the entry, not fatal for list.
func describe(ent *listEntry) {
	d, err := openDevice(ent.Address, &nvme.Options{IOQueues: 1, SyncQueues: 1, AdminTimeout: 5 * time.Second})
	if err != nil {
		ent.Error = err.Error()
		return
	}
	defer d.Close()
	id := d.ctrl.Identify()
	ent.ModelNumber, ent.SerialNumber, ent.Firmware = id.MN, id.SN, id.FR
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ids, err := d.ctrl.ActiveNamespaces(ctx)
	if err != nil {
		ent.Error = "listing namespaces: " + err.Error()
		return
	}
	var failed []string
	for _, nsid := range ids {
		ns, err := d.ctrl.NamespaceContext(ctx, nsid)
		if err != nil {
			// Listed, not skipped: a namespace that vanishes from list is one the operator
			// would look for elsewhere.
			failed = append(failed, fmt.Sprintf("namespace %d: %v", nsid, err))
			continue
		}
		ent.Namespaces = append(ent.Namespaces, listNS{NSID: nsid, Blocks: ns.Blocks(), SectorSize: ns.BlockSize(), PhysicalSize: uint64(ns.Size())})
	}
	ent.Error = strings.Join(failed, "; ")
}

// blockDevices lists the kernel block devices (nvme0n1, ...) of the controller at addr, which
// exist only while it is on the nvme driver.
func blockDevices(root, addr string) []string {
	ctrls, _ := filepath.Glob(filepath.Join(root, "bus/pci/devices", addr, "nvme", "nvme*"))
	var out []string
	for _, c := range ctrls {
		nss, _ := filepath.Glob(filepath.Join(c, filepath.Base(c)+"n*"))
		for _, ns := range nss {
			out = append(out, filepath.Base(ns))
		}
	}
	// Namespaces may also appear as ngXnY char devices or under a multipath head (nvme0c0n1):
	// the head's name without the "cN" is the block device.
	sort.Strings(out)
	return out
}

// inUse says why the kernel's block devices of the controller at addr must not be taken away:
// mounted file systems, swap, or holders (device-mapper, md, ...). "" means free.
func inUse(root, addr string) (string, error) {
	devs := blockDevices(root, addr)
	if len(devs) == 0 {
		return "", nil
	}
	// Partitions count too: /sys/block/nvme0n1/nvme0n1p1 has its own holders.
	holders := map[string]string{} // device name -> its holders directory
	for _, d := range devs {
		holders[d] = filepath.Join(root, "block", d, "holders")
		parts, _ := filepath.Glob(filepath.Join(root, "block", d, d+"p*"))
		for _, p := range parts {
			holders[filepath.Base(p)] = filepath.Join(p, "holders")
		}
	}
	var reasons []string
	mounts, err := readMountSources(envOr("NVMECTL_MOUNTS", "/proc/mounts"))
	if err != nil {
		return "", err
	}
	swaps, _ := readMountSources(envOr("NVMECTL_SWAPS", "/proc/swaps")) // no swap file: no swap
	names := make([]string, 0, len(holders))
	for n := range holders {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, m := range mounts[n] {
			reasons = append(reasons, fmt.Sprintf("/dev/%s is mounted on %s", n, m))
		}
		if len(swaps[n]) > 0 {
			reasons = append(reasons, fmt.Sprintf("/dev/%s is in use as swap", n))
		}
		hs, _ := os.ReadDir(holders[n])
		for _, h := range hs {
			reasons = append(reasons, fmt.Sprintf("/dev/%s is held by %s", n, h.Name()))
		}
	}
	return strings.Join(reasons, "; "), nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// readMountSources maps a device name ("nvme0n1p1") to the mount points (second column) of
// /proc/mounts or /proc/swaps lines whose source is /dev/NAME.
func readMountSources(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s to check for mounted disks: %w", path, err)
	}
	defer f.Close()
	return parseMounts(f), nil
}

func parseMounts(r io.Reader) map[string][]string {
	out := map[string][]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		if name, ok := strings.CutPrefix(fs[0], "/dev/"); ok {
			out[name] = append(out[name], fs[1])
		}
	}
	return out
}
