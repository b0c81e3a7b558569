package nvme_test

import (
	"bytes"
	"context"
	"fmt"

	"github.com/nvmepoll/nvmepoll/nvme"
	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
)

// Bring up a controller (here the in-process model; nvme.OpenPCI for a
// VFIO-bound SSD), then write and read a namespace through io.WriterAt and
// io.ReaderAt.
func Example() {
	model := nvmetest.NewController(nil, nvmetest.Config{ModelNumber: "example"})
	c, err := nvme.Open(model, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ns, err := c.Namespace(1)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s: namespace 1 has %d blocks of %d bytes\n", c.Identify().MN, ns.Blocks(), ns.BlockSize())

	data := bytes.Repeat([]byte("hello, nvme! "), 320)[:4096]
	if _, err := ns.WriteAt(data, 8192); err != nil {
		fmt.Println(err)
		return
	}
	got := make([]byte, 4096)
	if _, err := ns.ReadAt(got, 8192); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(bytes.Equal(got, data))

	// Bad input says what was wrong with which numbers.
	err = ns.ReadBlocks(context.Background(), ns.Blocks()-4, make([]byte, 4096))
	fmt.Println(err)
	// Output:
	// example: namespace 1 has 131072 blocks of 512 bytes
	// true
	// nvme: invalid argument: lba 131068+8 is past the end of namespace 1 (131072 blocks)
}

// Submit reads asynchronously on a queue pair of your own, with buffers
// from a pre-mapped pool, and reap the completions by polling. A queue pair
// belongs to one goroutine at a time; the hot path allocates nothing.
func ExampleQueuePair_Submit() {
	model := nvmetest.NewController(nil, nvmetest.Config{})
	c, _ := nvme.Open(model, nil)
	defer c.Close()
	ns, _ := c.Namespace(1)
	qp, err := c.NewQueuePair(64)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer qp.Close()
	pool, _ := c.NewPool(8, 4096)

	done := 0
	reqs := make([]nvme.Request, 8)
	for i := range reqs {
		buf, _ := pool.Get()
		reqs[i] = nvme.Request{
			Opcode: nvme.NVMRead, Namespace: ns, LBA: uint64(i * 8), Buf: buf,
			Done: func(r *nvme.Request) {
				if r.Err == nil {
					done++
				}
			},
		}
		if err := qp.Submit(&reqs[i]); err != nil {
			fmt.Println(err)
			return
		}
	}
	for done < len(reqs) {
		if _, err := qp.Poll(1, len(reqs)); err != nil {
			fmt.Println(err)
			return
		}
	}
	fmt.Println(done, "reads completed")
	// Output:
	// 8 reads completed
}
