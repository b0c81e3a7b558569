package vfio

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// configDevice is a Device whose config space is a file holding cfg.
func configDevice(t *testing.T, cfg []byte) *Device {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "config"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.Write(cfg); err != nil {
		t.Fatal(err)
	}
	return &Device{addr: "0000:00:03.0", fd: int(f.Fd()), config: regionInfo{Size: uint64(len(cfg))}}
}

// The MSI-X table is found by walking the capability list, as QEMU's NVMe
// lays it out: power management at 0x40, then MSI-X at 0x50 with its table
// at BAR 0 offset 0x2000. A malformed list is an error, never a hang.
func TestMSIXTableLocation(t *testing.T) {
	base := func() []byte {
		cfg := make([]byte, 256)
		cfg[pciStatus] = pciStatusCapList
		cfg[pciCapPointer] = 0x40
		cfg[0x40], cfg[0x41] = 0x01, 0x50 // PM, next MSI-X
		cfg[0x50], cfg[0x51] = pciCapIDMSIX, 0
		cfg[0x54], cfg[0x55] = 0x00, 0x20 // table offset 0x2000, BIR 0
		return cfg
	}
	bar, off, err := configDevice(t, base()).msixTableLocked()
	if err != nil || bar != 0 || off != 0x2000 {
		t.Errorf("MSI-X table at BAR %d offset %#x (%v), want BAR 0 offset 0x2000", bar, off, err)
	}

	cfg := base()
	cfg[0x54] = 0x02 // BIR 2 in the low bits, offset still 0x2000
	if bar, off, err := configDevice(t, cfg).msixTableLocked(); err != nil || bar != 2 || off != 0x2000 {
		t.Errorf("BIR 2: got BAR %d offset %#x (%v)", bar, off, err)
	}

	for name, edit := range map[string]func([]byte){
		"no capability list": func(c []byte) { c[pciStatus] = 0 },
		"no MSI-X":           func(c []byte) { c[0x41] = 0 },
		"a loop":             func(c []byte) { c[0x41] = 0x40 },
	} {
		cfg := base()
		edit(cfg)
		if _, _, err := configDevice(t, cfg).msixTableLocked(); err == nil || !strings.Contains(err.Error(), "0000:00:03.0") {
			t.Errorf("%s: err = %v, want an error naming the device", name, err)
		}
	}
}
