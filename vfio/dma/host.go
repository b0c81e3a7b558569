package dma

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// MapHost maps size bytes (rounded up to the page size) of anonymous memory
// outside the Go heap, populated and locked so the pages stay put while a
// device reaches them. Locked pages count against RLIMIT_MEMLOCK; when the
// kernel says ENOMEM or EAGAIN the error says so, with the current limit.
func MapHost(size int) ([]byte, error) {
	if size <= 0 {
		return nil, fmt.Errorf("dma: cannot map %d bytes", size)
	}
	page := unix.Getpagesize()
	size = (size + page - 1) &^ (page - 1)
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("dma: mmap of %d bytes: %w", size, err)
	}
	if err := unix.Mlock(mem); err != nil {
		unix.Munmap(mem)
		var lim unix.Rlimit
		unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim)
		return nil, fmt.Errorf("dma: locking %d bytes: %w (RLIMIT_MEMLOCK is %d bytes; raise it with ulimit -l or run as root)", size, err, lim.Cur)
	}
	return mem, nil
}

// UnmapHost releases memory from MapHost.
func UnmapHost(mem []byte) error {
	if err := unix.Munmap(mem); err != nil {
		return fmt.Errorf("dma: munmap of %d bytes: %w", len(mem), err)
	}
	return nil
}
