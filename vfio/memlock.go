package vfio

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// memlock is what the RLIMIT_MEMLOCK check needs to know about the process.
type memlock struct {
	limit  uint64 // soft RLIMIT_MEMLOCK in bytes; unix.RLIM_INFINITY for none
	locked uint64 // bytes already counted against it (VmLck)
	capIPC bool   // CAP_IPC_LOCK in the effective set: the limit does not apply
}

// readMemlock is currentMemlock; tests replace it to fake a limit.
var readMemlock = currentMemlock

// currentMemlock reads the limit, what is locked already and whether the
// process is exempt. If VmLck cannot be read, fallback (what this package
// has locked itself) stands in for it.
func currentMemlock(fallback uint64) (memlock, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		return memlock{}, fmt.Errorf("vfio: reading RLIMIT_MEMLOCK: %w", err)
	}
	m := memlock{limit: lim.Cur, locked: fallback, capIPC: hasCapIPCLock()}
	if v, ok := vmLck(); ok {
		m.locked = v
	}
	return m, nil
}

// check says whether add more bytes of DMA memory can be mapped. Each byte
// counts twice against RLIMIT_MEMLOCK: dma.MapHost locks it with mlock, and
// VFIO's type1 IOMMU adds the pages it pins to the same locked_vm counter.
func (m memlock) check(add uint64) error {
	if m.capIPC || m.limit == unix.RLIM_INFINITY {
		return nil
	}
	need := m.locked + 2*add
	if add > math.MaxUint64/2 || need < m.locked {
		need = math.MaxUint64 // no limit is that high
	}
	if need <= m.limit {
		return nil
	}
	return &hintError{
		msg: fmt.Sprintf("vfio: mapping %d bytes for DMA needs RLIMIT_MEMLOCK of at least %d bytes (%d KiB: %d already locked, plus the buffer twice, "+
			"once locked by mlock and once pinned by VFIO), but the limit is %d bytes (%d KiB): "+
			"raise it with `ulimit -l %d` (or `ulimit -l unlimited`) in the shell, LimitMEMLOCK=infinity in a systemd unit, or run as root",
			add, need, kib(need), m.locked, m.limit, m.limit/1024, kib(need)),
		sentinel: ErrMemlock,
	}
}

// kib is n in KiB, rounded up (without overflowing near 2^64).
func kib(n uint64) uint64 { return n/1024 + min(n%1024, 1) }

// vmLck returns the bytes this process has locked, from /proc/self/status.
func vmLck() (uint64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	return parseVmLck(b)
}

func parseVmLck(status []byte) (uint64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) == 3 && string(f[0]) == "VmLck:" && string(f[2]) == "kB" {
			n, err := strconv.ParseUint(string(f[1]), 10, 64)
			return n * 1024, err == nil
		}
	}
	return 0, false
}

// hasCapIPCLock reports whether CAP_IPC_LOCK is in the effective set.
func hasCapIPCLock() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[unix.CAP_IPC_LOCK/32].Effective&(1<<(unix.CAP_IPC_LOCK%32)) != 0
}
