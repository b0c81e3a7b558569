package vfio

import (
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestIRQSetLayout(t *testing.T) {
	b := irqSetBuf(3, []int32{7, -1})
	le := binary.NativeEndian
	want := []uint32{28, VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, VFIO_PCI_MSIX_IRQ_INDEX, 3, 2, 7, 0xffffffff}
	if len(b) != 4*len(want) {
		t.Fatalf("vfio_irq_set with 2 eventfds is %d bytes, want %d", len(b), 4*len(want))
	}
	for i, w := range want {
		if got := le.Uint32(b[4*i:]); got != w {
			t.Errorf("word %d = %#x, want %#x", i, got, w)
		}
	}
	// The disable form: no data, DATA_NONE, count 0.
	b = irqSetBuf(0, nil)
	if len(b) != IRQSetSize || le.Uint32(b[4:]) != VFIO_IRQ_SET_ACTION_TRIGGER|VFIO_IRQ_SET_DATA_NONE || le.Uint32(b[16:]) != 0 {
		t.Errorf("disable form = % x", b)
	}
}

// The eventfd side of Interrupt, with the test writing the counter as the
// kernel does when the device signals the vector.
func TestInterruptEventfd(t *testing.T) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	irq := &Interrupt{d: &Device{closed: true}, vector: 5, fd: fd}
	defer irq.Close()
	signal := func() {
		var b [8]byte
		binary.NativeEndian.PutUint64(b[:], 1)
		if _, err := unix.Write(fd, b[:]); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := irq.Wait(time.Millisecond); got || err != nil {
		t.Fatalf("Wait on a quiet vector = %v, %v, want a timeout", got, err)
	}
	signal()
	signal()
	if got, err := irq.Wait(time.Second); !got || err != nil {
		t.Fatalf("Wait after a signal = %v, %v, want true", got, err)
	}
	if err := irq.Clear(); err != nil {
		t.Fatal(err)
	}
	if irq.Count() != 2 {
		t.Errorf("Count = %d after two signals, want 2", irq.Count())
	}
	if got, _ := irq.Wait(time.Millisecond); got {
		t.Error("Wait reported a signal after Clear consumed it")
	}
	if err := irq.Clear(); err != nil {
		t.Errorf("Clear with nothing pending: %v", err)
	}
	go func() { time.Sleep(5 * time.Millisecond); signal() }()
	start := time.Now()
	if got, _ := irq.Wait(10 * time.Second); !got || time.Since(start) > 5*time.Second {
		t.Errorf("Wait did not wake on a signal from another goroutine (%v, %v)", got, time.Since(start))
	}
	if err := irq.Close(); err != nil {
		t.Fatal(err)
	}
	// Closed: the fd is gone (no leak), and a second Close is fine.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
		t.Errorf("eventfd %d still open after Close", fd)
	}
	if err := irq.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
