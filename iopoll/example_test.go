package iopoll_test

import (
	"context"
	"fmt"
	"unsafe"

	"github.com/nvmepoll/nvmepoll/iopoll"
)

// A toy device whose requests all finish by the next poll, to show the
// pieces: a request type embedding iopoll.Request, a Completer that calls
// Complete, a deliver callback, Poll with min and max, and Close draining
// the rest.
func Example() {
	type read struct {
		iopoll.Request // first field, so deliver can convert back
		lba            int
	}
	var issued []*iopoll.Request // what the "hardware" is working on
	var ring *iopoll.Ring
	device := iopoll.CompleterFunc(func(max int) (int, error) {
		n := min(max, len(issued))
		for _, q := range issued[:n] {
			ring.Complete(q)
		}
		issued = issued[n:]
		return n, nil
	})
	ring = iopoll.New(device, func(batch []*iopoll.Request) {
		for _, q := range batch {
			fmt.Println("read of lba", (*read)(unsafe.Pointer(q)).lba, "done")
		}
	})

	reads := make([]read, 3)
	for i := range reads {
		reads[i].lba = i * 8
		issued = append(issued, &reads[i].Request) // issue to the device,
		ring.Submitted(&reads[i].Request)          // then hand to the ring
	}
	n, err := ring.Poll(1, 2) // at least one, at most two
	fmt.Println("Poll delivered", n, err)
	if err := ring.Close(context.Background()); err != nil {
		fmt.Println(err)
	}
	fmt.Println("in flight after Close:", ring.Inflight())
	// Output:
	// read of lba 0 done
	// read of lba 8 done
	// Poll delivered 2 <nil>
	// read of lba 16 done
	// in flight after Close: 0
}
