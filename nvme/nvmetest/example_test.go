package nvmetest_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/nvmepoll/nvmepoll/nvme/nvmetest"
)

// Example brings the model up by hand, as a driver does, and sends one
// Identify Controller command through the admin queue.
func Example() {
	c := nvmetest.NewController(nil, nvmetest.Config{})
	defer c.Close()

	// Admin queues of 4 entries, in DMA memory.
	mem := c.DMA()
	sq, _ := mem.Alloc(4 * 64)
	cq, _ := mem.Alloc(4 * 16)
	c.Write32(0x24, 3<<16|3) // AQA
	c.Write32(0x28, uint32(sq.IOVA))
	c.Write32(0x2c, uint32(sq.IOVA>>32))
	c.Write32(0x30, uint32(cq.IOVA))
	c.Write32(0x34, uint32(cq.IOVA>>32))
	c.Write32(0x14, 1|6<<16|4<<20) // CC: EN, IOSQES 6, IOCQES 4
	for c.Read32(0x1c)&1 == 0 {    // CSTS.RDY
		time.Sleep(time.Millisecond)
	}

	// Identify Controller (CNS 1) into a 4 KiB buffer, then ring the SQ 0
	// tail doorbell.
	id, _ := mem.Alloc(4096)
	cmd := nvmetest.Command{Opcode: nvmetest.OpIdentify, CID: 7, PRP1: id.IOVA, CDW10: 1}
	cmd.Encode(sq.Bytes[0:64])
	db, _ := c.Doorbell(0x1000)
	db.Ring(1)

	// Poll the CQE's status word for phase 1, then read the rest.
	dw3 := (*uint32)(unsafe.Pointer(&cq.Bytes[12]))
	for atomic.LoadUint32(dw3)>>16&1 == 0 {
		time.Sleep(time.Millisecond)
	}
	e := nvmetest.DecodeCompletion(cq.Bytes[0:16])
	c.Write32(0x1004, 1) // CQ 0 head doorbell

	fmt.Printf("cid %d status %v\n", e.CID, e.Status)
	fmt.Printf("model %q serial %q\n", strings.TrimSpace(string(id.Bytes[24:64])), strings.TrimSpace(string(id.Bytes[4:24])))
	fmt.Println("DMA faults:", c.DMAFaults())
	// Output:
	// cid 7 status sct 0 sc 0x00
	// model "nvmepoll model" serial "nvmetest-0001"
	// DMA faults: 0
}

// ExampleController_FailLBA makes reads of LBAs 100-107 fail with an
// unrecovered read error, as a dying disk would.
func ExampleController_FailLBA() {
	c := nvmetest.NewController(nil, nvmetest.Config{Inline: true})
	defer c.Close()
	f := c.FailLBA(1, 100, 8, nvmetest.OpRead, nvmetest.StatusUnrecoveredRead|nvmetest.StatusDNR)

	// ... drive reads through the driver; those touching 100-107 fail ...

	fmt.Println(f.Hits(), nvmetest.StatusUnrecoveredRead|nvmetest.StatusDNR)
	// Output: 0 sct 2 sc 0x81 dnr
}
