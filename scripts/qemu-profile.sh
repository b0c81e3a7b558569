#!/usr/bin/env bash
# qemu-profile.sh shows where an `nvmectl perf` run's time goes on the host: QEMU's threads' CPU
# use, system calls and context switches per I/O, counted with `perf stat` while the guest runs
# the same controller bench.sh uses (null-co, 2 vCPUs, one boot). docs/PERFORMANCE.md ("Where the
# time goes now") quotes it. QEMU's main thread runs the emulated NVMe controller (its bottom
# halves and doorbell notifications); the other busy thread is the vCPU that runs nvmectl.
# Not part of CI. Needs perf on the host (apt-get install linux-perf) and root.
#
# Usage: bash scripts/qemu-profile.sh [-q DEPTH] [-t SECONDS] [-- extra nvmectl perf flags]
#   bash scripts/qemu-profile.sh -q 1
#   bash scripts/qemu-profile.sh -q 32 -- --no-shadow
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
depth=1 secs=14
while [[ $# -gt 0 ]]; do
	case $1 in
	-q) depth=$2; shift 2 ;;
	-t) secs=$2; shift 2 ;;
	--) shift; break ;;
	*) echo "qemu-profile.sh: unknown option $1 (see the usage at the top of the script)" >&2; exit 2 ;;
	esac
done
command -v perf >/dev/null || { echo "qemu-profile.sh: perf is missing: apt-get install linux-perf" >&2; exit 2; }
((secs >= 8)) || { echo "qemu-profile.sh: -t $secs: give at least 8 seconds (3 s warm-up, 3 s counted)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
build_nvmectl "$tmp"
cat >"$tmp/profile-guest.sh" <<GUEST
#!/bin/sh
echo PROFILE START
nvmectl perf "\$NVMEPOLL_TEST_DEVICE" -n 1 -q $depth -o 4K -w randread -t $secs $*
GUEST

bash scripts/guest.sh --kernel-nvme --cpus 2 --mem 2048 --timeout 600 --append nvme.poll_queues=1 \
	--qemu-arg -blockdev --qemu-arg driver=null-co,node-name=nvm,size=4294967296 \
	--qemu-arg -device --qemu-arg nvme,serial=nvmepoll-bench,drive=nvm \
	--file "$tmp/nvmectl" --file "$tmp/profile-guest.sh" -- profile-guest.sh >"$tmp/guest.out" 2>&1 &
guest=$!
for _ in $(seq 600); do
	grep -q 'PROFILE START' "$tmp/guest.out" 2>/dev/null && break
	sleep 0.2
done
sleep 3 # perf's warm-up: queue creation, calibration
qemu=$(pgrep -n -f 'qemu-system-x86_64 ') || { echo "qemu-profile.sh: no QEMU process" >&2; exit 1; }
tids=$(ls /proc/"$qemu"/task | paste -sd,)
# Each thread's utime+stime (clock ticks) around the count, as top computes CPU %: under a
# paravirtualised host perf's task-clock can read lower than the scheduler's accounting.
cputicks() { for t in /proc/"$qemu"/task/*; do echo "${t##*/} $(awk '{ print $14 + $15 }' "$t/stat")"; done; }
cputicks >"$tmp/ticks0"
perf stat --per-thread -x, -t "$tids" -o "$tmp/stat.csv" \
	-e task-clock,context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_ppoll,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_futex \
	-- sleep 3
cputicks >"$tmp/ticks1"
wait "$guest"
tr -d '\r' <"$tmp/guest.out" | sed -n '/namespace 1:/,$p'

iops=$(tr -d '\r' <"$tmp/guest.out" | awk '/^total/ { print $2 }')
python3 - "$tmp/stat.csv" "$iops" "$qemu" "$tmp/ticks0" "$tmp/ticks1" "$(getconf CLK_TCK)" <<'PY'
import csv, sys
path, iops, main = sys.argv[1], float(sys.argv[2]), sys.argv[3]
def ticks(f):
    return {l.split()[0]: int(l.split()[1]) for l in open(f) if l.strip()}
t0, t1, hz = ticks(sys.argv[4]), ticks(sys.argv[5]), int(sys.argv[6])
rows = {}
for r in csv.reader(l for l in open(path) if l.strip() and not l.startswith("#")):
    # --per-thread -x,: thread, value, unit, event, ...
    thread, value, event = r[0], r[1], r[3]
    tid = thread.rsplit("-", 1)[-1]
    try:
        rows.setdefault(tid, {})[event] = float(value)
    except ValueError:
        pass
print(f"\n{iops:.0f} IOPS; per I/O over the 3 s counted (QEMU pid {main}); CPU % from perf's task-clock")
print("and (/proc) from the threads' utime+stime over about the same 3 s:")
print(f"{'thread':>16} {'CPU %':>7} {'(/proc)':>7} {'syscalls':>9} {'ppoll':>7} {'read':>7} {'write':>7} {'futex':>7} {'ctx sw':>7}")
n = iops * 3
for tid, e in sorted(rows.items(), key=lambda kv: -kv[1].get("task-clock", 0)):
    cpu = e.get("task-clock", 0) / 30  # msec over 3 s, as % of one core
    if cpu < 1:
        continue
    name = "main (device)" if tid == main else f"thread {tid}"
    per = lambda k: e.get(k, 0) / n
    proc = 100 * (t1.get(tid, 0) - t0.get(tid, 0)) / hz / 3
    print(f"{name:>16} {cpu:7.1f} {proc:7.1f} {per('raw_syscalls:sys_enter'):9.2f} {per('syscalls:sys_enter_ppoll'):7.2f} "
          f"{per('syscalls:sys_enter_read'):7.2f} {per('syscalls:sys_enter_write'):7.2f} {per('syscalls:sys_enter_futex'):7.2f} "
          f"{per('context-switches'):7.2f}")
PY
