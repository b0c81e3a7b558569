package nvme

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A caller waiting in GetContext on an empty pool is woken by Close with
// ErrClosed rather than left waiting for a Put that will never come.
func TestPoolCloseWakesWaiter(t *testing.T) {
	p, err := NewPool(&mmapAlloc{}, 1, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Get(); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := p.GetContext(context.Background())
		got <- err
	}()
	time.Sleep(10 * time.Millisecond) // let it block (the result is the same if it has not yet)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("GetContext woken by Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("GetContext still waiting 5 s after Close")
	}
}

func TestPool(t *testing.T) {
	a := &mmapAlloc{}
	p, err := NewPool(a, 3, 5000)
	if err != nil {
		t.Fatal(err)
	}
	if p.BufferSize() != 8192 || p.Len() != 3 {
		t.Fatalf("pool of 3 x 5000 bytes: %d buffers of %d, want 3 of 8192 (page rounded)", p.Len(), p.BufferSize())
	}
	seen := map[uint64]bool{}
	var bufs [3]struct{ iova uint64 }
	for i := range bufs {
		b, err := p.Get()
		if err != nil {
			t.Fatalf("Get %d: %v", i, err)
		}
		if b.Len() != 8192 || b.IOVA%4096 != 0 || seen[b.IOVA] {
			t.Fatalf("Get %d: %d bytes at %#x; want a distinct page-aligned 8192-byte buffer", i, b.Len(), b.IOVA)
		}
		seen[b.IOVA] = true
		bufs[i].iova = b.IOVA
		b.Bytes[0] = byte(i) // writable
	}
	if _, err := p.Get(); !errors.Is(err, ErrPoolEmpty) {
		t.Fatalf("Get from an empty pool: %v, want ErrPoolEmpty", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := p.GetContext(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GetContext from an empty pool: %v, want the deadline", err)
	}
	b := p.mem.Slice(8192, 8192)
	if err := p.Put(b); err != nil {
		t.Fatal(err)
	}
	if err := p.Put(b); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("double Put: %v, want ErrInvalidArgument", err)
	}
	if err := p.Put(p.mem.Slice(100, 8)); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Put of a foreign buffer: %v, want ErrInvalidArgument", err)
	}
	if got, err := p.GetContext(context.Background()); err != nil || got.IOVA != b.IOVA {
		t.Errorf("GetContext after Put: %#x, %v; want the buffer put back", got.IOVA, err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if a.live != 0 {
		t.Errorf("%d DMA buffers still mapped after Close", a.live)
	}
	// A buffer handed out now would point at unmapped memory.
	if _, err := p.Get(); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if _, err := p.GetContext(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("GetContext after Close: %v, want ErrClosed", err)
	}
	if _, err := NewPool(a, 0, 4096); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("pool of 0 buffers: %v, want ErrInvalidArgument", err)
	}
}
