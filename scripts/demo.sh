#!/usr/bin/env bash
# demo.sh shows nvmepoll driving an NVMe controller from user space. It boots the QEMU guest
# (scripts/guest.sh: an emulated NVMe controller behind an emulated IOMMU) and runs
# scripts/demo-guest.sh in it: nvmectl binds the controller to vfio-pci, identifies it, writes
# 1 MiB and reads it back, shows the SMART log, runs a short polled benchmark, and hands the
# controller back to the kernel's nvme driver, which must read the same 1 MiB. Works on a fresh
# machine: the first run installs QEMU and downloads the guest kernel (cached afterwards).
#
# Usage:
#   bash scripts/demo.sh                       # the whole demo (scripts/demo-guest.sh)
#   bash scripts/demo.sh id-ctrl               # one nvmectl subcommand against the guest's
#   bash scripts/demo.sh smart-log --json      #   controllers (the device follows the subcommand)
# Environment: DEMO_PERF_SECONDS (benchmark length, default 5).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

tmp=$(mktemp -d "${TMPDIR:-/tmp}/nvmepoll-demo.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "==> building nvmectl"
build_nvmectl "$tmp"

if [[ $# -eq 0 ]]; then
	echo "==> booting the guest and running scripts/demo-guest.sh in it"
	# A throwaway controller (serial nvmepoll-demo*: the benchmark may write to it), with the
	# kernel's nvme driver kept for the last step.
	status=0
	bash scripts/guest.sh --kernel-nvme --nvme nvmepoll-demo --disk-size 64M \
		--env "DEMO_PERF_SECONDS=${DEMO_PERF_SECONDS:-5}" \
		--file "$tmp/nvmectl" --file scripts/demo-guest.sh -- demo-guest.sh || status=$?
	exit $status
fi

echo "==> booting the guest to run nvmectl $1 on its vfio-bound controller"
# "$@" reach the guest's sh as its positional parameters.
bash scripts/guest.sh "${guest_topology[@]}" --file "$tmp/nvmectl" -- sh -c '
	# The device goes right after the subcommand; list, bind and unbind take none.
	sub=$1; shift
	case $sub in
	list | bind | unbind) set -x; nvmectl "$sub" "$@" ;;
	*) set -x; nvmectl "$sub" "$NVMEPOLL_TEST_DEVICE" "$@" ;;
	esac' nvmectl "$@"
