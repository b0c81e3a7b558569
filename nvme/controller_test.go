package nvme

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nvmepoll/nvmepoll/queue"
	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// regDev is a register-only Device for bring-up paths the full model does
// not need to be involved in: a controller that never becomes ready, one
// that reports a fatal status, one that is gone. It processes no commands.
type regDev struct {
	mu       sync.Mutex
	cap      uint64
	cc, csts uint32
	onEnable func(d *regDev) // called when CC.EN goes 0 -> 1
	writes   []string        // register writes, "CC=0x..." style
	closed   int
	mem      mmapAlloc
}

func (d *regDev) Read32(off int) uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch off {
	case RegCAP:
		return uint32(d.cap)
	case RegCAP + 4:
		return uint32(d.cap >> 32)
	case RegVS:
		if d.cap == ^uint64(0) {
			return 0xffffffff
		}
		return uint32(MakeVS(1, 4, 0))
	case RegCC:
		return d.cc
	case RegCSTS:
		return d.csts
	}
	return 0
}

func (d *regDev) Write32(off int, v uint32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writes = append(d.writes, RegName(off))
	if off != RegCC {
		return
	}
	was := CC(d.cc).EN()
	d.cc = v
	switch {
	case !CC(v).EN():
		d.csts &^= 1 // RDY follows EN down at once
	case !was && d.onEnable != nil:
		d.onEnable(d)
	}
}

func (d *regDev) Doorbell(off int) (queue.Doorbell, error) {
	return queue.DoorbellFunc(func(uint32) {}), nil
}
func (d *regDev) DMA() dma.Allocator { return &d.mem }
func (d *regDev) Close() error       { d.closed++; return nil }

// mmapAlloc is a DMA allocator over anonymous mmap with IOVA = host address
// (no device reads it here).
type mmapAlloc struct{ live int }

func (a *mmapAlloc) Alloc(size int) (dma.Buffer, error) {
	n := (size + 4095) &^ 4095
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return dma.Buffer{}, err
	}
	a.live++
	return dma.Buffer{Bytes: b, IOVA: uint64(0x1000_0000 + a.live*0x100_0000)}, nil
}
func (a *mmapAlloc) Free(b dma.Buffer) error { a.live--; return unix.Munmap(b.Bytes) }
func (a *mmapAlloc) PageSize() int           { return 4096 }

// fastCAP is CAP as QEMU's emulated controller reports it, with TO = 1
// (500 ms) so timeouts are quick.
const fastCAP = uint64(0x7ff) | 1<<16 | 1<<24 | 1<<37 | 4<<52

func TestOpenNeverReady(t *testing.T) {
	d := &regDev{cap: fastCAP}
	start := time.Now()
	_, err := Open(d, nil)
	took := time.Since(start)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Open of a controller that never sets RDY: err = %v, want ErrTimeout", err)
	}
	if took < 500*time.Millisecond || took > 3*time.Second {
		t.Errorf("gave up after %v, want about CAP.TO = 500ms", took)
	}
	for _, want := range []string{"CSTS.RDY", "1", "500ms"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if d.closed != 1 || d.mem.live != 0 {
		t.Errorf("after failed Open: device closed %d times, %d DMA buffers still mapped; want 1 and 0", d.closed, d.mem.live)
	}
	// The admin queue registers were written before EN, ASQ/ACQ low half first.
	got := strings.Join(d.writes, " ")
	if !strings.Contains(got, "AQA ASQ ASQ+4 ACQ ACQ+4 CC CC") {
		t.Errorf("register writes %q: want AQA, ASQ low/high, ACQ low/high, then CC", got)
	}
}

func TestOpenControllerFatal(t *testing.T) {
	d := &regDev{cap: fastCAP, onEnable: func(d *regDev) { d.csts |= 2 }}
	start := time.Now()
	_, err := Open(d, nil)
	if !errors.Is(err, ErrControllerFatal) {
		t.Fatalf("err = %v, want ErrControllerFatal", err)
	}
	if time.Since(start) > 400*time.Millisecond {
		t.Errorf("CFS took %v to notice; it should not wait for CAP.TO", time.Since(start))
	}
}

func TestOpenDeviceGone(t *testing.T) {
	d := &regDev{cap: ^uint64(0)}
	if _, err := Open(d, nil); !errors.Is(err, ErrDeviceGone) {
		t.Fatalf("err = %v, want ErrDeviceGone", err)
	}
	if d.closed != 1 {
		t.Errorf("device closed %d times, want 1", d.closed)
	}
}

func TestOpenNoNVMCommandSet(t *testing.T) {
	d := &regDev{cap: fastCAP&^(1<<37) | 1<<44} // admin only
	if _, err := Open(d, nil); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("err = %v, want ErrNotSupported", err)
	}
}

func TestOpenDisablesFirst(t *testing.T) {
	// A controller left enabled (by a previous owner) is disabled and its
	// RDY awaited before the admin queue is touched.
	d := &regDev{cap: fastCAP, cc: 1, csts: 1}
	d.onEnable = func(d *regDev) {} // never ready again: Open times out
	Open(d, nil)
	if len(d.writes) < 2 || d.writes[0] != "CC" || d.writes[1] != "AQA" {
		t.Errorf("register writes %v: want CC (EN=0) before AQA", d.writes)
	}
}
