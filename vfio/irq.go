package vfio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/nvmepoll/nvmepoll/vfio/mmio"
	"golang.org/x/sys/unix"
)

// MSI-X through VFIO: each vector the process wants signals its own
// eventfd (VFIO_DEVICE_SET_IRQS with VFIO_IRQ_SET_DATA_EVENTFD). The
// kernel the tests run on (6.1) cannot grow the MSI-X vector set once it is
// enabled, so the first Interrupt enables every vector the device has, with
// no eventfd (-1) behind the ones nobody asked for, and later calls attach
// an eventfd to one vector at a time.

// MSIXVectors returns how many MSI-X vectors the device has
// (VFIO_DEVICE_GET_IRQ_INFO); 0 if it has no MSI-X or VFIO cannot signal
// it through an eventfd.
func (d *Device) MSIXVectors() (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, d.errClosed()
	}
	return d.msixVectors()
}

func (d *Device) msixVectors() (int, error) {
	if d.info.NumIRQs <= VFIO_PCI_MSIX_IRQ_INDEX {
		return 0, nil
	}
	info := IRQInfo{Argsz: uint32(unsafe.Sizeof(IRQInfo{})), Index: VFIO_PCI_MSIX_IRQ_INDEX}
	if _, err := ioctl(d.fd, VFIO_DEVICE_GET_IRQ_INFO, unsafe.Pointer(&info), 0); err != nil {
		return 0, fmt.Errorf("vfio: %s: MSI-X: %w", d.addr, err)
	}
	if info.Flags&VFIO_IRQ_INFO_EVENTFD == 0 {
		return 0, nil
	}
	return int(info.Count), nil
}

// setIRQs runs VFIO_DEVICE_SET_IRQS on the MSI-X index with fds (nil: the
// DATA_NONE form that disables them all).
func (d *Device) setIRQs(start int, fds []int32) error {
	buf := irqSetBuf(start, fds)
	_, err := ioctl(d.fd, VFIO_DEVICE_SET_IRQS, unsafe.Pointer(&buf[0]), 0)
	return err
}

// irqSetBuf lays out struct vfio_irq_set with its data[] of eventfds.
func irqSetBuf(start int, fds []int32) []byte {
	buf := make([]byte, IRQSetSize+4*len(fds))
	hdr := (*IRQSet)(unsafe.Pointer(&buf[0]))
	hdr.Argsz = uint32(len(buf))
	hdr.Index = VFIO_PCI_MSIX_IRQ_INDEX
	hdr.Start = uint32(start)
	hdr.Count = uint32(len(fds))
	hdr.Flags = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD
	if fds == nil {
		hdr.Flags = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE
	}
	for i, fd := range fds {
		binary.NativeEndian.PutUint32(buf[IRQSetSize+4*i:], uint32(fd))
	}
	return buf
}

// Interrupt attaches a new eventfd to MSI-X vector v and returns it. The
// first call enables MSI-X on the device. Close the Interrupt to detach it;
// Device.Close disables MSI-X and closes the eventfds still attached.
func (d *Device) Interrupt(v int) (*Interrupt, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, d.errClosed()
	}
	if d.msix == nil {
		n, err := d.msixVectors()
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, &hintError{msg: fmt.Sprintf("vfio: %s has no MSI-X vectors VFIO can signal through an eventfd", d.addr), sentinel: ErrUnsupported}
		}
		none := make([]int32, n)
		for i := range none {
			none[i] = -1
		}
		if err := d.setIRQs(0, none); err != nil {
			return nil, fmt.Errorf("vfio: %s: enabling %d MSI-X vectors: %w (in a QEMU guest the emulated IOMMU needs intremap=on)", d.addr, n, err)
		}
		d.msix = make([]*Interrupt, n)
	}
	if v < 0 || v >= len(d.msix) {
		return nil, fmt.Errorf("vfio: %s: MSI-X vector %d does not exist (0..%d)", d.addr, v, len(d.msix)-1)
	}
	if d.msix[v] != nil {
		return nil, fmt.Errorf("vfio: %s: MSI-X vector %d already has an eventfd", d.addr, v)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("vfio: %s: eventfd for MSI-X vector %d: %w", d.addr, v, err)
	}
	if err := d.setIRQs(v, []int32{int32(efd)}); err != nil {
		unix.Close(efd)
		return nil, fmt.Errorf("vfio: %s: attaching an eventfd to MSI-X vector %d: %w", d.addr, v, err)
	}
	irq := &Interrupt{d: d, vector: v, fd: efd}
	// The kernel unmasked the vector when it attached the eventfd; remember
	// the rest of its Vector Control word so Mask and Unmask preserve it.
	if ctl, err := d.msixControlLocked(v); err == nil {
		irq.ctl = ctl
		irq.ctl0 = mmio.Load32(irq.ctl) &^ 1
	}
	d.msix[v] = irq
	return irq, nil
}

// disableMSIX detaches every vector and closes their eventfds. d.mu is held.
func (d *Device) disableMSIX() error {
	if d.msix == nil {
		return nil
	}
	var errs []error
	if err := d.setIRQs(0, nil); err != nil {
		errs = append(errs, fmt.Errorf("vfio: %s: disabling MSI-X: %w", d.addr, err))
	}
	for v, irq := range d.msix {
		if irq != nil {
			errs = append(errs, irq.closeFD())
			d.msix[v] = nil
		}
	}
	d.msix = nil
	return errors.Join(errs...)
}

// Interrupt is one MSI-X vector's eventfd: the kernel adds 1 to its counter
// each time the device signals the vector. It implements iopoll.Interrupt.
type Interrupt struct {
	d      *Device
	vector int
	fd     int
	count  atomic.Uint64 // signals read from the counter so far
	closed atomic.Bool

	ctl  *uint32 // the entry's Vector Control word in the mapped BAR (msix.go); nil if unmapped
	ctl0 uint32  // its value with the mask bit clear
}

// Vector is the MSI-X vector number.
func (i *Interrupt) Vector() int { return i.vector }

// Count is how many times the device signalled the vector, as far as
// Clear and Wait have read the eventfd.
func (i *Interrupt) Count() uint64 { return i.count.Load() }

// Clear reads the eventfd counter to zero without blocking.
func (i *Interrupt) Clear() error {
	var b [8]byte
	n, err := unix.Read(i.fd, b[:])
	switch {
	case err == unix.EAGAIN:
		return nil
	case err != nil:
		return fmt.Errorf("vfio: reading the eventfd of MSI-X vector %d: %w", i.vector, err)
	case n == 8:
		i.count.Add(binary.NativeEndian.Uint64(b[:]))
	}
	return nil
}

// Wait blocks until the vector is signalled or timeout passes, and reports
// whether it was. It leaves the counter for Clear.
func (i *Interrupt) Wait(timeout time.Duration) (bool, error) {
	ts := unix.NsecToTimespec(int64(timeout))
	fds := []unix.PollFd{{Fd: int32(i.fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Ppoll(fds, &ts, nil)
		if err == unix.EINTR {
			// Go's preemption signals interrupt the wait; the timeout
			// starts over, which only matters for the rare lost interrupt.
			continue
		}
		if err != nil {
			return false, fmt.Errorf("vfio: waiting on MSI-X vector %d: %w", i.vector, err)
		}
		return n > 0, nil
	}
}

// Close detaches the eventfd from its vector and closes it. It is safe to
// call more than once, and after Device.Close.
func (i *Interrupt) Close() error {
	d := i.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if i.closed.Load() {
		return nil
	}
	var err error
	if !d.closed && d.msix != nil && d.msix[i.vector] == i {
		err = d.setIRQs(i.vector, []int32{-1})
		d.msix[i.vector] = nil
	}
	return errors.Join(err, i.closeFD())
}

func (i *Interrupt) closeFD() error {
	if i.closed.Swap(true) {
		return nil
	}
	if err := unix.Close(i.fd); err != nil {
		return fmt.Errorf("vfio: closing the eventfd of MSI-X vector %d: %w", i.vector, err)
	}
	return nil
}
