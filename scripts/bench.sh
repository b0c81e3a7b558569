#!/usr/bin/env bash
# bench.sh compares nvmepoll with the kernel's nvme driver on one emulated controller, in one
# QEMU guest boot (scripts/guest.sh), and prints medians and ratios. docs/PERFORMANCE.md has the
# results and how to read them.
#
# The guest: 2 vCPUs (TCG), the kernel nvme driver kept and booted with nvme.poll_queues=1, one
# QEMU NVMe controller backed by the null-co block driver (no data is stored: the device's cost
# is the emulated controller's, not a disk image's). scripts/bench-guest.sh runs in it: each
# configuration BENCH_REPS times, interleaved, the controller rebound between drivers:
#   kernel-polled       fio ioengine=io_uring direct=1 hipri=1 (checks queue/io_poll is 1)
#   kernel-irq          the same with hipri=0
#   kernel-polled-cpu0  kernel-polled with fio confined to CPU 0 (cpus_allowed=0), randread only
#   kernel-polled-lean  kernel-polled with fio timing by the TSC (clocksource=cpu, gtod_reduce=1),
#                       randread only: fio's clock reads trap under the guest's HPET clocksource
#   nvmepoll-shadow-on  nvmectl perf (shadow doorbells, the default; one CPU per queue pair, perf's
#                       default placement, as SPDK perf's core mask)
#   nvmepoll-shadow-off nvmectl perf --no-shadow
#   ...-linger3us       randread QD32 with --linger 3us (reap until the CQ is quiet 3 µs, then
#                       resubmit with one doorbell)
# for 4 KiB randread QD1, randread QD32 and randwrite QD32, plus randread QD32 with two
# submitters (fio numjobs=2 / nvmectl perf -j 2, on CPUs 0-1 and both on CPU 0) for scaling.
# Every row gets its ratio to kernel-polled (fio as the issue specifies it) and, where measured,
# to kernel-polled-cpu0 (/kernel-p0) and kernel-polled-lean (/lean).
#
# Usage: bash scripts/bench.sh [--out FILE]
#   --out FILE   also keep the raw guest output in FILE
# Environment: BENCH_SECONDS (per run, default 4), BENCH_REPS (default 3), BENCH_CPUS (guest vCPUs,
# default 2), BENCH_GOMAXPROCS (GOMAXPROCS for nvmectl in the guest; default: the Go runtime's).
# Needs fio on the host (it is copied into the guest with its libraries): apt-get install fio.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=""
if [[ ${1:-} == --out ]]; then
	out=${2:?--out needs a file}
fi

fio_bin=$(command -v fio || true)
if [[ -z $fio_bin ]]; then
	[[ $(id -u) == 0 ]] || { echo "bench.sh: fio is missing: sudo apt-get install fio" >&2; exit 2; }
	# A fresh machine has no package lists yet: update first, as guest.sh does for QEMU.
	DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends fio </dev/null >&2
	fio_bin=$(command -v fio)
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/nvmepoll-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
CGO_ENABLED=0 go build -o "$tmp/nvmectl" ./cmd/nvmectl

# fio and every library it links, the loader (ld-linux-x86-64.so.2) included: the guest is a
# busybox initramfs, and bench-guest.sh runs fio through the loader with --library-path /payload.
files=(--file "$tmp/nvmectl" --file scripts/bench-guest.sh --file "$fio_bin:fio")
while read -r lib; do
	files+=(--file "$lib")
done < <(ldd "$fio_bin" | awk '/=> \//{ print $3 } /^\t\//{ print $1 }' | sort -u)

echo "bench.sh: host load before the run: $(uptime)"
bash scripts/guest.sh --kernel-nvme --cpus "${BENCH_CPUS:-2}" --mem 2048 --timeout 3600 \
	--append nvme.poll_queues=1 \
	--qemu-arg -blockdev --qemu-arg driver=null-co,node-name=nvm,size=4294967296 \
	--qemu-arg -device --qemu-arg nvme,serial=nvmepoll-bench,drive=nvm \
	--env "BENCH_SECONDS=${BENCH_SECONDS:-4}" --env "BENCH_REPS=${BENCH_REPS:-3}" \
	${BENCH_GOMAXPROCS:+--env "GOMAXPROCS=$BENCH_GOMAXPROCS"} \
	"${files[@]}" -- bench-guest.sh | tee "$tmp/raw.txt"
echo "bench.sh: host load after the run: $(uptime)"
[[ -z $out ]] || cp "$tmp/raw.txt" "$out"

# Medians per configuration, then each one's ratio to kernel-polled with the same workload.
tr -d '\r' <"$tmp/raw.txt" | grep '^RESULT ' | awk '
function median(key,    n, i, j, t, a) {
	n = split(vals[key], a, " ")
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
	for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
	w = f["workload"] " QD" f["qd"] " x" f["jobs"]
	key = w SUBSEP f["driver"]
	if (!(key in vals)) { order[++nk] = key }
	vals[key] = vals[key] " " f["iops"]
	runs[key] = runs[key] " " f["iops"]
	if (f["mmio_per_io"] != "-") mmio[key] = mmio[key] " " f["mmio_per_io"]
}
END {
	printf "\n%-22s %-25s %12s %10s %10s %10s %14s   %s\n", "workload", "driver", "median IOPS", "/kernel-p", "/kernel-p0", "/lean", "MMIO db/IO", "runs (IOPS)"
	for (k = 1; k <= nk; k++) { key = order[k]; med[key] = median(key) }
	for (k = 1; k <= nk; k++) {
		key = order[k]; split(key, p, SUBSEP)
		base = (p[1] SUBSEP "kernel-polled")
		ratio = (base in med && med[base] > 0) ? sprintf("%.2fx", med[key] / med[base]) : "-"
		base0 = (p[1] SUBSEP "kernel-polled-cpu0")
		ratio0 = (base0 in med && med[base0] > 0) ? sprintf("%.2fx", med[key] / med[base0]) : "-"
		basel = (p[1] SUBSEP "kernel-polled-lean")
		ratiol = (basel in med && med[basel] > 0) ? sprintf("%.2fx", med[key] / med[basel]) : "-"
		m = "-"
		if (key in mmio) { vals[key "m"] = mmio[key]; m = sprintf("%.3f", median(key "m")) }
		printf "%-22s %-25s %12.0f %10s %10s %10s %14s  %s\n", p[1], p[2], med[key], ratio, ratio0, ratiol, m, runs[key]
	}
}'
