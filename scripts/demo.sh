#!/usr/bin/env bash
# demo.sh shows nvmepoll driving an NVMe controller from userspace: it boots the QEMU guest
# (scripts/guest.sh: emulated NVMe behind an emulated IOMMU, bound to vfio-pci) and runs
# `nvmectl id-ctrl $NVMEPOLL_TEST_DEVICE` in it. Works on a fresh machine: the first run installs
# QEMU and downloads the guest kernel (cached afterwards).
#
# Usage: bash scripts/demo.sh [nvmectl arguments...]
#   bash scripts/demo.sh                      # nvmectl id-ctrl <device>
#   bash scripts/demo.sh smart-log --json     # any nvmectl subcommand; the device follows it
# Until cmd/nvmectl exists it prints what the guest bound instead.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

tmp=$(mktemp -d "${TMPDIR:-/tmp}/nvmepoll-demo.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

[[ $# -gt 0 ]] || set -- id-ctrl
if ls cmd/nvmectl/*.go >/dev/null 2>&1; then
	echo "==> building nvmectl"
	CGO_ENABLED=0 go build -o "$tmp/nvmectl" ./cmd/nvmectl
	echo "==> booting the guest to run nvmectl $1 on its vfio-bound controller"
	# "$@" reach the guest's sh as its positional parameters.
	bash scripts/guest.sh "${guest_topology[@]}" --file "$tmp/nvmectl" -- \
		sh -c '
			# The device goes right after the subcommand; list, bind and unbind take none.
			sub=$1; shift
			case $sub in
			list | bind | unbind) set -x; nvmectl "$sub" "$@" ;;
			*) set -x; nvmectl "$sub" "$NVMEPOLL_TEST_DEVICE" "$@" ;;
			esac' nvmectl "$@"
	exit
fi

echo "==> cmd/nvmectl does not exist yet; showing the controller the guest bound to vfio-pci"
bash scripts/guest.sh "${guest_topology[@]}" -- sh -c '
	d=/sys/bus/pci/devices/$NVMEPOLL_TEST_DEVICE
	echo "NVMEPOLL_TEST_DEVICE=$NVMEPOLL_TEST_DEVICE: PCI $(cat $d/vendor):$(cat $d/device) class $(cat $d/class)"
	echo "driver $(basename $(readlink $d/driver)), IOMMU group $(basename $(readlink $d/iommu_group))"
	echo "all vfio-bound controllers: $NVMEPOLL_TEST_DEVICES"
	ls -l /dev/vfio'
