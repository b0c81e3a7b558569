#!/bin/sh
# demo-guest.sh is the demo itself, run INSIDE the QEMU guest (busybox sh) by scripts/demo.sh:
# nvmectl lists the controllers, binds one to vfio-pci, identifies it, writes a random 1 MiB
# file to it and reads it back (sha256sums must match), shows the SMART log, runs a 5 second
# polled benchmark, gives the controller back to the kernel's nvme driver and checks that the
# kernel reads the same 1 MiB from /dev/nvmeXn1. It exits 0 only if every step worked.
#
# Needs in /payload (on PATH): nvmectl and this script; the guest must keep the kernel's nvme
# driver (guest.sh --kernel-nvme) for the last step. Environment:
#   NVMEPOLL_TEST_DEVICE  the controller to use (set by the guest init: the first vfio-bound one)
#   DEMO_PERF_SECONDS     benchmark length (default 5)
# The demo writes its file to the first MiB of namespace 1. The benchmark stays above 8 MiB, and
# writes (randrw) only when the controller's serial starts with nvmepoll-demo, the throwaway
# controller demo.sh starts; otherwise it only reads.
set -eu

dev=${NVMEPOLL_TEST_DEVICE:?NVMEPOLL_TEST_DEVICE is not set: run this in the guest (scripts/demo.sh)}
secs=${DEMO_PERF_SECONDS:-5}
tmp=${TMPDIR:-/tmp}
step=0

heading() {
	step=$((step + 1))
	echo
	echo "==> $step. $*"
}

# Echo each command before running it, so the transcript reads like a tutorial.
show() {
	echo "\$ $*"
	"$@"
}

heading "every NVMe controller in the guest"
show nvmectl list

heading "hand $dev to vfio-pci (already done by the guest's init: bind is idempotent)"
show nvmectl bind "$dev"

heading "identify the controller from user space"
show nvmectl id-ctrl "$dev"
sn=$(nvmectl id-ctrl "$dev" | sed -n 's/^sn *: *//p' | sed 's/ *$//')

heading "write a random 1 MiB file to namespace 1 at byte 0, read it back, compare"
echo "\$ head -c 1048576 /dev/urandom >$tmp/demo.in"
head -c 1048576 /dev/urandom >"$tmp/demo.in"
show nvmectl write "$dev" -n 1 --offset 0 --input "$tmp/demo.in"
show nvmectl read "$dev" -n 1 --offset 0 --size 1M --output "$tmp/demo.out"
in_sum=$(sha256sum <"$tmp/demo.in" | cut -d' ' -f1)
out_sum=$(sha256sum <"$tmp/demo.out" | cut -d' ' -f1)
echo "written:  $in_sum"
echo "read:     $out_sum"
if [ "$in_sum" != "$out_sum" ]; then
	echo "demo: FAILED: the data read back differs from the data written" >&2
	exit 1
fi
echo "match"
show nvmectl compare "$dev" -n 1 --offset 0 --input "$tmp/demo.in"

heading "SMART / Health log (the counters include the I/O above)"
show nvmectl smart-log "$dev"

case $sn in
nvmepoll-demo*) workload="-w randrw --mix 70" ;;
*) workload="-w randread" ;;
esac
heading "$secs second polled benchmark: 4 KiB, queue depth 32, from byte 8 MiB on (the file stays intact)"
# shellcheck disable=SC2086 # $workload is two or four words on purpose
show nvmectl perf "$dev" -n 1 -q 32 -o 4K $workload -t "$secs" --offset 8M

heading "give $dev back to the kernel's nvme driver, which must read the same 1 MiB"
show nvmectl unbind "$dev"
# The kernel probes asynchronously: wait for the namespace's block device.
blk=""
n=0
while [ -z "$blk" ] && [ $n -lt 100 ]; do
	blk=$(ls -d /sys/bus/pci/devices/"$dev"/nvme/nvme*/nvme*n1 2>/dev/null | head -n1)
	[ -n "$blk" ] || sleep 0.1
	n=$((n + 1))
done
if [ -z "$blk" ]; then
	echo "demo: FAILED: the kernel nvme driver made no block device for $dev within 10 s (run the guest with --kernel-nvme)" >&2
	exit 1
fi
blk=/dev/${blk##*/}
echo "\$ head -c 1048576 $blk | sha256sum"
kernel_sum=$(head -c 1048576 "$blk" | sha256sum | cut -d' ' -f1)
echo "kernel:   $kernel_sum"
if [ "$kernel_sum" != "$in_sum" ]; then
	echo "demo: FAILED: the kernel's nvme driver reads different data from $blk" >&2
	exit 1
fi
echo "match: what nvmepoll wrote from user space, the kernel driver reads"

echo
echo "demo: every step worked"
