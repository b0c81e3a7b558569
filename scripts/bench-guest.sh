#!/bin/sh
# bench-guest.sh runs INSIDE the QEMU guest (busybox sh), started by scripts/bench.sh: it measures
# one controller with the kernel's nvme driver through fio (io_uring, polled and interrupt-driven)
# and with nvmepoll (`nvmectl perf`, shadow doorbells on and off), rebinding the controller
# between the drivers in the same boot, and prints one line per run:
#
#   RESULT driver=kernel-polled workload=randread qd=1 jobs=1 rep=2 iops=12345.6 mmio_per_io=-
#
# Needs in /payload: nvmectl, fio and its shared libraries with the loader ld-linux-x86-64.so.2
# (fio runs through the loader, so nothing has to go to /lib). The guest must keep the kernel nvme
# driver (guest.sh --kernel-nvme) and have booted with nvme.poll_queues=1. Environment:
#   NVMEPOLL_TEST_DEVICE  the controller (set by the guest init: it starts bound to vfio-pci)
#   BENCH_SECONDS         length of one run (default 4)
#   BENCH_REPS            how many times each configuration runs (default 3)
set -eu

dev=${NVMEPOLL_TEST_DEVICE:?NVMEPOLL_TEST_DEVICE is not set: run this in the guest (scripts/bench.sh)}
secs=${BENCH_SECONDS:-4}
reps=${BENCH_REPS:-3}

fio() { /payload/ld-linux-x86-64.so.2 --library-path /payload /payload/fio "$@"; }

# to_kernel gives the controller to the kernel nvme driver and sets $blk to its namespace 1.
to_kernel() {
	nvmectl unbind "$dev" >/dev/null
	blk=""
	n=0
	while [ -z "$blk" ] && [ $n -lt 300 ]; do
		blk=$(ls -d /sys/bus/pci/devices/"$dev"/nvme/nvme*/nvme*n1 2>/dev/null | head -n1)
		[ -n "$blk" ] || sleep 0.1
		n=$((n + 1))
	done
	[ -n "$blk" ] || { echo "bench: the kernel made no block device for $dev within 30 s" >&2; exit 1; }
	blk=${blk##*/}
	# Polled I/O needs a poll queue: nvme.poll_queues=1 on the kernel command line.
	poll=$(cat /sys/block/"$blk"/queue/io_poll)
	[ "$poll" = 1 ] || { echo "bench: /sys/block/$blk/queue/io_poll is $poll, not 1 (boot with nvme.poll_queues=1)" >&2; exit 1; }
	blk=/dev/$blk
}

to_nvmepoll() { nvmectl bind "$dev" >/dev/null; }

# kernel_run MODE RW QD JOBS REP [CPUS]: one fio run; MODE polled (hipri=1), irq (hipri=0) or
# lean (polled, with fio's cheapest timing: the TSC and gtod_reduce, as perf times with RDTSC);
# with CPUS, fio runs there (cpus_allowed), as nvmectl perf does by default.
kernel_run() {
	hipri=0
	[ "$1" != irq ] && hipri=1
	driver=kernel-$1 pin=""
	[ "$1" = lean ] && driver=kernel-polled-lean pin="--clocksource=cpu --gtod_reduce=1"
	if [ -n "${6:-}" ]; then
		driver=$driver-cpu$6 pin="$pin --cpus_allowed=$6"
	fi
	# shellcheck disable=SC2086
	out=$(fio --name=bench --filename="$blk" --ioengine=io_uring --direct=1 --hipri=$hipri \
		--rw="$2" --bs=4k --iodepth="$3" --numjobs="$4" --group_reporting --time_based --runtime="$secs" \
		--norandommap --randrepeat=0 --output-format=terse --terse-version=3 $pin)
	# terse v3: field 8 is read IOPS, 49 write IOPS (summed over jobs with group_reporting).
	iops=$(echo "$out" | tail -n1 | awk -F';' '{ print $8 + $49 }')
	echo "RESULT driver=$driver workload=$2 qd=$3 jobs=$4 rep=$5 iops=$iops mmio_per_io=-"
}

# nvmepoll_run SHADOW RW QD JOBS REP [CPUS] [LINGER]: one nvmectl perf run; SHADOW on or off.
# perf runs on one CPU per queue pair by default; CPUS overrides that (--cpus). LINGER (e.g. 3us)
# keeps perf reaping until the CQ has been quiet that long before it resubmits (--linger).
nvmepoll_run() {
	flags="" driver=nvmepoll-shadow-$1
	[ "$1" = off ] && flags="--no-shadow"
	[ "$2" = randwrite ] && flags="$flags --force" # null-co: nothing is stored
	if [ -n "${6:-}" ]; then
		flags="$flags --cpus $6" driver=$driver-cpu$6
	fi
	if [ -n "${7:-}" ]; then
		flags="$flags --linger $7" driver=$driver-linger$7
	fi
	# shellcheck disable=SC2086
	out=$(nvmectl perf "$dev" -n 1 -q "$3" -j "$4" -o 4K -w "$2" -t "$secs" --json $flags)
	# The total comes last in the JSON: take the last iops and MMIO-per-I/O values.
	iops=$(echo "$out" | sed -n 's/.*"iops": *\([0-9.]*\).*/\1/p' | tail -n1)
	mmio=$(echo "$out" | sed -n 's/.*"mmio_writes_per_io": *\([0-9.]*\).*/\1/p' | tail -n1)
	echo "RESULT driver=$driver workload=$2 qd=$3 jobs=$4 rep=$5 iops=$iops mmio_per_io=$mmio"
}

echo "bench: controller $dev, $secs s per run, $reps repetitions, $(nproc) CPUs, kernel $(uname -r)"
echo "bench: kernel command line: $(cat /proc/cmdline)"
workloads="randread:1 randread:32 randwrite:32"
rep=1
while [ $rep -le "$reps" ]; do
	to_kernel
	for w in $workloads; do
		kernel_run polled "${w%%:*}" "${w##*:}" 1 $rep
		kernel_run irq "${w%%:*}" "${w##*:}" 1 $rep
	done
	# fio confined to one CPU, as nvmectl perf is: does placement help the kernel too?
	kernel_run polled randread 1 1 $rep 0
	kernel_run polled randread 32 1 $rep 0
	# fio's own clock reads are system calls under the guest's HPET clocksource: the kernel with
	# them out of the way.
	kernel_run lean randread 1 1 $rep
	kernel_run lean randread 32 1 $rep
	kernel_run polled randread 32 2 $rep # scaling: two submitters, one poll queue
	to_nvmepoll
	for w in $workloads; do
		nvmepoll_run on "${w%%:*}" "${w##*:}" 1 $rep
		nvmepoll_run off "${w%%:*}" "${w##*:}" 1 $rep
	done
	# One SQ doorbell per burst of completions: QEMU posts a batch's CQEs one by one under its
	# big lock, and a doorbell written mid-burst waits for the lock (docs/PERFORMANCE.md).
	nvmepoll_run on randread 32 1 $rep "" 3us
	nvmepoll_run off randread 32 1 $rep "" 3us
	nvmepoll_run on randread 32 2 $rep   # scaling: two queue pairs, one CPU each
	nvmepoll_run on randread 32 2 $rep 0 # two queue pairs sharing CPU 0
	rep=$((rep + 1))
done
# One human-readable nvmepoll run for the record: per-queue doorbell counters.
nvmectl perf "$dev" -n 1 -q 32 -o 4K -w randread -t "$secs"
echo "bench: done"
