package nvme

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nvmepoll/nvmepoll/vfio/dma"
)

// ErrPoolEmpty means every buffer of a Pool is in use. It is retryable: Put
// one back (or use GetContext, which waits).
var ErrPoolEmpty = errors.New("nvme: DMA buffer pool is empty")

// Pool is a set of equal-sized DMA buffers mapped once at set-up, like
// io_uring's fixed buffers: the I/O path takes and returns buffers and never
// maps memory. Get, GetContext and Put are safe for concurrent use and do not
// allocate.
type Pool struct {
	alloc dma.Allocator
	mem   dma.Buffer
	size  int
	free  chan int32    // indices of free buffers
	out   []atomic.Bool // out[i]: buffer i is handed out (catches double Put)

	// closed is set before the memory is unmapped: from then on Get hands
	// out nothing, since a buffer would point at memory no longer mapped.
	closed    atomic.Bool
	done      chan struct{} // closed with closed set, to wake GetContext
	closeOnce sync.Once
	closeErr  error
}

// NewPool maps count buffers of size bytes each (size is rounded up to the
// allocator's page size, so every buffer starts on a page).
func NewPool(a dma.Allocator, count, size int) (*Pool, error) {
	size, err := poolBufferSize(a.PageSize(), count, size)
	if err != nil {
		return nil, err
	}
	mem, err := a.Alloc(count * size)
	if err != nil {
		return nil, fmt.Errorf("mapping pool of %d buffers of %d bytes: %w", count, size, err)
	}
	p := &Pool{alloc: a, mem: mem, size: size, free: make(chan int32, count), out: make([]atomic.Bool, count),
		done: make(chan struct{})}
	for i := range count {
		p.free <- int32(i)
	}
	return p, nil
}

// poolBufferSize is the size of each buffer of a pool of count buffers of
// size bytes: size rounded up to the page. The pool maps count times that.
func poolBufferSize(page, count, size int) (int, error) {
	if count <= 0 || size <= 0 {
		return 0, fmt.Errorf("%w: pool of %d buffers of %d bytes", ErrInvalidArgument, count, size)
	}
	size = (size + page - 1) / page * page
	if size > (1<<40)/count {
		return 0, fmt.Errorf("%w: pool of %d buffers of %d bytes is too large", ErrInvalidArgument, count, size)
	}
	return size, nil
}

// NewPool maps a pool of count buffers of size bytes in memory this
// controller can reach. The controller closes it on Close if the caller has
// not; close it earlier to give the memory back.
func (c *Controller) NewPool(count, size int) (*Pool, error) {
	p, err := NewPool(c.dev.DMA(), count, size)
	if err != nil {
		return nil, fmt.Errorf("nvme: %w", err)
	}
	c.qpMu.Lock()
	c.pools = append(c.pools, p)
	c.qpMu.Unlock()
	return p, nil
}

// BufferSize is the size of every buffer in bytes.
func (p *Pool) BufferSize() int { return p.size }

// Len is the number of buffers in the pool.
func (p *Pool) Len() int { return len(p.out) }

// Available is the number of buffers not handed out right now.
func (p *Pool) Available() int { return len(p.free) }

// errPoolClosed is what Get and GetContext return once the pool is closed.
var errPoolClosed = fmt.Errorf("DMA buffer pool %w", ErrClosed)

// Get takes a free buffer, or fails at once with ErrPoolEmpty (or ErrClosed
// once the pool is closed).
func (p *Pool) Get() (dma.Buffer, error) {
	select {
	case i := <-p.free:
		return p.take(i)
	default:
		if p.closed.Load() {
			return dma.Buffer{}, errPoolClosed
		}
		return dma.Buffer{}, ErrPoolEmpty
	}
}

// GetContext takes a free buffer, waiting for one until ctx is done or the
// pool is closed.
func (p *Pool) GetContext(ctx context.Context) (dma.Buffer, error) {
	select {
	case i := <-p.free:
		return p.take(i)
	default:
	}
	select {
	case i := <-p.free:
		return p.take(i)
	case <-p.done:
		return dma.Buffer{}, errPoolClosed
	case <-ctx.Done():
		return dma.Buffer{}, fmt.Errorf("waiting for a DMA buffer (%d in pool, all in use): %w", len(p.out), ctx.Err())
	}
}

func (p *Pool) take(i int32) (dma.Buffer, error) {
	if p.closed.Load() {
		p.free <- i // give the index back; Put after Close stays harmless
		return dma.Buffer{}, errPoolClosed
	}
	p.out[i].Store(true)
	return p.mem.Slice(int(i)*p.size, p.size), nil
}

// Put returns a buffer from Get. Only the IOVA is looked at, so a buffer the
// caller re-sliced from its start is fine. Putting a buffer that is not from
// this pool, or putting one twice, is an error and changes nothing.
func (p *Pool) Put(b dma.Buffer) error {
	i, ok := p.index(b)
	if !ok {
		return fmt.Errorf("%w: buffer at IOVA %#x is not the start of a buffer of this pool (%d x %d bytes at %#x)",
			ErrInvalidArgument, b.IOVA, len(p.out), p.size, p.mem.IOVA)
	}
	if !p.out[i].CompareAndSwap(true, false) {
		return fmt.Errorf("%w: pool buffer %d (IOVA %#x) put back twice", ErrInvalidArgument, i, b.IOVA)
	}
	p.free <- int32(i)
	return nil
}

func (p *Pool) index(b dma.Buffer) (int, bool) {
	if b.IOVA < p.mem.IOVA {
		return 0, false
	}
	off := b.IOVA - p.mem.IOVA
	if off%uint64(p.size) != 0 || off >= uint64(len(p.out))*uint64(p.size) {
		return 0, false
	}
	return int(off / uint64(p.size)), true
}

// Close unmaps the pool's memory; Get and GetContext fail with ErrClosed
// from then on. Call it only once no command that uses a pool buffer is in
// flight (the controller may still be writing into it) and no caller still
// touches a buffer it took. Close is safe to call more than once.
func (p *Pool) Close() error {
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		close(p.done)
		p.closeErr = p.alloc.Free(p.mem)
	})
	return p.closeErr
}
