// Package hwtest holds the tests that need a real NVMe controller bound to vfio-pci.
//
// They run in CI against QEMU's emulated NVMe controller (PCI 1b36:0010) behind an emulated
// Intel IOMMU, in a throwaway guest that scripts/guest.sh boots under TCG. The usual way to run
// them is the repository's test command, which builds this package's test binary and runs it in
// the guest:
//
//	bash scripts/test.sh
//
// or, for this package alone:
//
//	CGO_ENABLED=0 go test -c -o /tmp/hwtest.test ./hwtest
//	bash scripts/guest.sh --file /tmp/hwtest.test -- hwtest.test -test.v
//
// Against a controller on your own machine, bind it to vfio-pci first (this detaches it from
// the kernel: everything on it is at the mercy of the tests, so use a disk you can wipe):
//
//	NVMEPOLL_TEST_DEVICE=0000:01:00.0 go test -v ./hwtest
//
// Environment:
//
//	NVMEPOLL_TEST_DEVICE     PCI address of the controller the tests may use. Unset: every test
//	                         skips with "no test device". Set but absent from
//	                         /sys/bus/pci/devices: the tests fail, so a broken set-up cannot hide
//	                         behind skips.
//	NVMEPOLL_TEST_DEVICES    every vfio-bound controller as serial=address,serial=address (set by
//	                         scripts/guest.sh; tests that need a controller started with special
//	                         QEMU properties find it by serial).
//	NVMEPOLL_KERNEL_DEVICES  controllers left to the kernel nvme driver, same format, for
//	                         cross-checks.
//	NVMEPOLL_REQUIRE_DEVICE  non-empty: a test that would skip for want of NVMEPOLL_TEST_DEVICE
//	                         fails instead (scripts/test.sh sets it in the guest).
//	NVMEPOLL_GUEST           "qemu" inside scripts/guest.sh's guest; tests of QEMU-specific facts
//	                         (vendor ID, default properties) only insist on them then.
//
// The package has no non-test code besides this file.
package hwtest
