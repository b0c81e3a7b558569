#!/usr/bin/env bash
# idle-bench.sh measures what the completion modes (nvmectl perf --mode poll|interrupt|adaptive)
# cost and give, in one QEMU guest boot (scripts/guest.sh, 2 vCPUs under TCG, one emulated NVMe
# controller with a 64 MiB image). Not part of CI: it takes about 2 minutes of guest time.
# docs/PERFORMANCE.md ("Adaptive polling") has the results and how to read them.
#
#   idle    perf -w randread -q 1 --rate 1 -t $IDLE_SECONDS, each mode: a queue pair open and
#           almost nothing in flight. cpu_pct is the process's user+system time over wall time
#           (getrusage), % of one core. Target: < 1% for interrupt and adaptive, ~100% for poll.
#   qd1     perf -w randread -q 1 -t $RUN_SECONDS, poll and adaptive alternated $REPS times:
#           IOPS (target: adaptive within 10% of poll); also adaptive with --window-max 1ms.
#   bursty  perf -w randread -q 1 --rate 1000 -t $RUN_SECONDS, each mode: one I/O every 1 ms,
#           p50/p99 latency and CPU per I/O side by side.
#
# Usage: bash scripts/idle-bench.sh [--out FILE]   (FILE keeps the raw JSON lines)
# Environment: IDLE_SECONDS (default 10), RUN_SECONDS (default 5), REPS (default 2).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
out=""
if [[ ${1:-} == --out ]]; then
	out=${2:?--out needs a file}
fi
idle=${IDLE_SECONDS:-10} run=${RUN_SECONDS:-5} reps=${REPS:-2}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
build_nvmectl "$tmp"

# The guest side: one JSON line per run, prefixed with its label.
cat >"$tmp/idle-guest.sh" <<GUEST
#!/bin/sh
dev=\$NVMEPOLL_TEST_DEVICE
one() { # label, perf args...
	label=\$1; shift
	printf 'RESULT %s ' "\$label"
	nvmectl perf "\$dev" -w randread -q 1 --json "\$@" | tr -d '\n'
	echo
}
args() { # mode label -> perf flags (adaptive-1ms: the window capped at 1 ms instead of 256 µs)
	case \$1 in
	adaptive-1ms) echo --mode adaptive --window-max 1ms ;;
	*) echo --mode \$1 ;;
	esac
}
for m in poll interrupt adaptive; do one idle-\$m --rate 1 -t $idle --mode \$m; done
i=0
while [ \$i -lt $reps ]; do
	for m in poll adaptive adaptive-1ms; do one qd1-\$m -t $run \$(args \$m); done
	i=\$((i + 1))
done
for m in poll interrupt adaptive adaptive-1ms; do one bursty-\$m --rate 1000 -t $run \$(args \$m); done
GUEST
chmod +x "$tmp/idle-guest.sh"

echo "host load before: $(cut -d' ' -f1-3 /proc/loadavg)"
bash scripts/guest.sh --nvme nvmepoll0 --file "$tmp/nvmectl" --file "$tmp/idle-guest.sh" -- idle-guest.sh | tee "$tmp/raw"
echo "host load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
[[ -z $out ]] || cp "$tmp/raw" "$out"

python3 - "$tmp/raw" <<'PY'
import json, sys, statistics
runs = {}
for line in open(sys.argv[1]):
    if line.startswith("RESULT "):
        _, label, js = line.split(" ", 2)
        runs.setdefault(label, []).append(json.loads(js))
def get(label, f):
    return [f(r) for r in runs.get(label, [])]
print("\nidle (--rate 1): CPU % of one core")
for m in ("poll", "interrupt", "adaptive"):
    print(f"  {m:10s} {statistics.median(get('idle-'+m, lambda r: r['cpu_pct'])):6.1f}%")
print("\nsteady QD1 randread: IOPS (median of runs), CPU %")
qd = {}
for m in ("poll", "adaptive", "adaptive-1ms"):
    iops = get('qd1-'+m, lambda r: r['total']['iops'])
    qd[m] = statistics.median(iops)
    print(f"  {m:10s} {qd[m]:9.0f} IOPS (runs {iops}), CPU {statistics.median(get('qd1-'+m, lambda r: r['cpu_pct'])):.1f}%")
print(f"  adaptive / poll = {qd['adaptive']/qd['poll']:.3f}, adaptive-1ms / poll = {qd['adaptive-1ms']/qd['poll']:.3f}")
print("\nbursty (--rate 1000, one I/O every 1 ms):")
print(f"  {'mode':12s} {'IOPS':>8s} {'p50 us':>8s} {'p99 us':>8s} {'CPU %':>7s} {'CPU us/IO':>10s}")
for m in ("poll", "interrupt", "adaptive", "adaptive-1ms"):
    r = runs['bursty-'+m][0]
    l = r['total']['latency']
    print(f"  {m:12s} {r['total']['iops']:8.0f} {l['p50']:8.1f} {l['p99']:8.1f} {r['cpu_pct']:7.1f} {r['cpu_us_per_io']:10.1f}")
PY
