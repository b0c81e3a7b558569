#!/usr/bin/env bash
# test.sh runs every check CI runs, on a fresh machine too (it installs what it needs):
#
#   1. gofmt -l     no unformatted Go files
#   2. go vet ./...
#   3. hwtest       builds ./hwtest's test binary and runs it with -test.v in a QEMU guest
#                   (scripts/guest.sh) against emulated NVMe controllers bound to vfio-pci; fails
#                   if the guest run fails, if no test passed, or if every test skipped
#   4. bench        a short run of the hot-path benchmarks (nvme BenchmarkHotPath QD1/QD32 against
#                   a zero-work completer); fails if any allocates (docs/PERFORMANCE.md)
#   5. go test -race ./...   last, so its closing lines close the output
#
# Every stage runs even when an earlier one failed; the exit status is 1 if any failed.
#
# Usage: bash scripts/test.sh [-run REGEXP]   (-run is passed to the hwtest binary)
# Environment: NVMEPOLL_GUEST_TIMEOUT (seconds for the guest run, default 1800),
# HWTEST_FLAGS (extra flags for the hwtest binary, e.g. "-test.run TestFoo -test.count 2").
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh

hwflags=(${HWTEST_FLAGS:-})
if [[ ${1:-} == -run ]]; then
	[[ $# -ge 2 ]] || { echo "test.sh: -run needs a regexp" >&2; exit 2; }
	hwflags+=(-test.run "$2")
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/nvmepoll-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

t0=$SECONDS
failed=()
summary=()
# stage NAME COMMAND...: run one stage, record its verdict and wall time.
stage() {
	local name=$1 start=$SECONDS rc=0
	shift
	echo
	echo "==> $name"
	"$@" || rc=$?
	local took=$((SECONDS - start))
	if [[ $rc == 0 ]]; then
		summary+=("$(printf '%-8s ok    %4ds' "$name" "$took")")
	else
		summary+=("$(printf '%-8s FAIL  %4ds' "$name" "$took")")
		failed+=("$name")
	fi
	echo "==> $name: $([[ $rc == 0 ]] && echo ok || echo "FAIL (status $rc)") in ${took}s"
}

check_gofmt() {
	local files bad
	# With no file arguments gofmt reads stdin and passes, so a git failure must not look clean.
	files=$(git ls-files --cached --others --exclude-standard '*.go') || { echo "git ls-files failed: cannot list the Go files to check"; return 1; }
	[[ -n $files ]] || { echo "git ls-files found no Go files to check"; return 1; }
	bad=$(gofmt -l $files) || { echo "gofmt -l failed"; return 1; }
	[[ -z $bad ]] && return 0
	echo "gofmt -l: these files need gofmt -w:"
	echo "$bad"
	return 1
}

# go test -race needs cgo, which needs a C compiler.
ensure_cc() {
	command -v gcc >/dev/null && return 0
	echo "installing gcc for go test -race"
	DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc libc6-dev </dev/null
}

run_hwtest() {
	CGO_ENABLED=0 go test -c -o "$tmp/hwtest.test" ./hwtest || { echo "building the hwtest binary failed"; return 1; }
	# hwtest/nvmectl_test.go runs the real binary against the guest's controllers.
	build_nvmectl "$tmp" || { echo "building nvmectl failed"; return 1; }
	# hwtest/crosscheck_test.go compares nvmectl's Identify JSON with nvme-cli's on the kernel driver.
	local nvme_cli=()
	nvme_cli_args nvme_cli || { echo "shipping nvme-cli into the guest failed"; return 1; }
	local rc=0
	bash scripts/guest.sh --timeout "${NVMEPOLL_GUEST_TIMEOUT:-1800}" --mem 2048 \
		"${guest_topology[@]}" --env NVMEPOLL_REQUIRE_DEVICE=1 \
		--file "$tmp/hwtest.test" --file "$tmp/nvmectl" "${nvme_cli[@]}" -- \
		hwtest.test -test.v -test.count=1 -test.timeout=25m "${hwflags[@]+"${hwflags[@]}"}" 2>&1 | tee "$tmp/hwtest.out"
	rc=${PIPESTATUS[0]}
	# Count the last run only: guest.sh reruns the command once if QEMU itself crashed.
	awk '/^==== guest.sh: QEMU crashed/ { n = 0; delete l } { l[n++] = $0 } END { for (i = 0; i < n; i++) print l[i] }' \
		"$tmp/hwtest.out" >"$tmp/hwtest.last"
	local pass fail skip
	pass=$(grep -cE '^ *--- PASS' "$tmp/hwtest.last")
	fail=$(grep -cE '^ *--- FAIL' "$tmp/hwtest.last")
	skip=$(grep -cE '^ *--- SKIP' "$tmp/hwtest.last")
	echo "hwtest in the guest: $pass passed, $fail failed, $skip skipped (tests and subtests)"
	if [[ $rc != 0 ]]; then
		echo "hwtest: the guest run failed with status $rc"
		return 1
	fi
	if [[ $pass == 0 ]]; then
		echo "hwtest: no test passed in the guest (ran none, or all skipped): the hardware tests did not run"
		return 1
	fi
	if [[ $fail != 0 ]]; then
		echo "hwtest: $fail failures reported although the binary exited 0"
		return 1
	fi
}

# The hot path must not allocate: a short benchmark run (not a timing: CI machines are noisy)
# whose allocs/op must all be 0.
run_bench_smoke() {
	go test -run='^$' -bench='HotPath/QD(1|32)$' -benchtime=2000x -benchmem ./nvme/ | tee "$tmp/bench.out" || return 1
	awk '/^BenchmarkHotPath/ { n++; for (i = 1; i < NF; i++) if ($(i+1) == "allocs/op" && $i != 0) { print "hot path allocates: " $0; bad = 1 } }
		END { if (n < 2) { print "bench: expected BenchmarkHotPath QD1 and QD32 results, got " n + 0; exit 1 } exit bad }' "$tmp/bench.out"
}

stage gofmt check_gofmt
stage vet go vet ./...
stage hwtest run_hwtest
stage bench run_bench_smoke
stage cc ensure_cc

echo
echo "==> summary so far (wall time):"
printf '    %s\n' "${summary[@]}"
echo "==> go test -race ./... (from +$((SECONDS - t0))s) runs last so that its closing lines end this"
echo "    output; it prints its own per-package times. The exit status also covers the stages"
echo "    above${failed[*]:+ (failed: ${failed[*]})}."
echo
go test -race ./... || failed+=("go-test")
[[ ${#failed[@]} == 0 ]]
