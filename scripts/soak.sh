#!/usr/bin/env bash
# soak.sh runs the data integrity workload (nvmectl perf --verify) in a QEMU guest for a long time
# on every I/O queue pair of a controller, and fails on any mismatch or I/O error. Not part of CI
# (scripts/test.sh): a soak takes minutes. docs/RELIABILITY.md records its figures.
#
# Usage: bash scripts/soak.sh [SECONDS [QUEUES]]     (default 120 s on 4 queue pairs)
#
# The controller is started with max_ioqpairs=QUEUES, so -j QUEUES is all of them. Extra nvmectl
# perf flags can be given in SOAK_FLAGS (e.g. SOAK_FLAGS="-o 16k --mix 30").
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."
. scripts/lib.sh

secs=${1:-120}
queues=${2:-4}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
build_nvmectl "$tmp"
echo "soak: ${secs} s of perf --verify on ${queues} queue pairs; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
# shellcheck disable=SC2086
bash scripts/guest.sh --timeout $((secs + 600)) --mem 1024 --disk-size 256M \
	--nvme soak,max_ioqpairs="$queues" --file "$tmp/nvmectl" -- \
	nvmectl perf "0000:00:03.0" --verify --force -q 32 -o 4k -j "$queues" -t "$secs" ${SOAK_FLAGS:-}
