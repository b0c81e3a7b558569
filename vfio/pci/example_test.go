package pci_test

import (
	"fmt"

	"github.com/nvmepoll/nvmepoll/vfio/pci"
)

func ExampleParseAddr() {
	for _, s := range []string{"00:03.0", "0000:3B:00.1", "00:03"} {
		addr, err := pci.ParseAddr(s)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Println(addr)
	}
	// Output:
	// 0000:00:03.0
	// 0000:3b:00.1
	// error: pci: "00:03": not a PCI address (no .function; want domain:bus:device.function like 0000:00:03.0, or bus:device.function like 00:03.0)
}
