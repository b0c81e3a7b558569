# lib.sh: helpers shared by scripts/test.sh and scripts/demo.sh (sourced, not run).

# Go lives in /usr/local/go on these machines; CI's PATH may not have it.
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
	export PATH=$PATH:/usr/local/go/bin
fi
command -v go >/dev/null || {
	echo "$(basename "$0"): go not found (want Go 1.26 on PATH or in /usr/local/go)" >&2
	exit 1
}

# The controllers every guest run starts, in one place so tests can rely on them by serial
# (testDeviceBySerial in hwtest/harness_test.go):
#   nvmepoll0  plain controller, one 64 MiB namespace with 512 B blocks (NVMEPOLL_TEST_DEVICE)
#   mdts2      MDTS=2: at most 4 pages per command, so transfers must be split
#   oneq       max_ioqpairs=1: a single I/O queue pair
#   lbaf       no disk of its own; namespace 1 with 512 B blocks, namespace 2 with 4 KiB blocks
#   kernel0    left on the kernel's nvme driver (NVMEPOLL_KERNEL_DEVICES): bind/unbind and
#              cross-checks against the kernel; it keeps the kernel driver registered, so the
#              driver also probes the others at boot before /init hands them to vfio-pci
guest_topology=(
	--nvme nvmepoll0
	--nvme mdts2,mdts=2
	--nvme oneq,max_ioqpairs=1
	--disk lbaf512=32M --disk lbaf4k=32M
	--qemu-arg -device --qemu-arg nvme,id=lbaf,serial=lbaf
	--qemu-arg -device --qemu-arg nvme-ns,bus=lbaf,drive=lbaf512,nsid=1,logical_block_size=512,physical_block_size=512
	--qemu-arg -device --qemu-arg nvme-ns,bus=lbaf,drive=lbaf4k,nsid=2,logical_block_size=4096,physical_block_size=4096
	--nvme-kernel kernel0
	# blkdebug: EIO on reads at sector 2048 and writes at 4096 (hwtest TestReliabilityMediaErrors)
	--qemu-arg -blockdev --qemu-arg '{"driver":"raw","node-name":"bdbg","file":{"driver":"blkdebug","inject-error":[{"event":"read_aio","errno":5,"sector":2048},{"event":"write_aio","errno":5,"sector":4096}],"image":{"driver":"null-co","size":67108864,"read-zeroes":true}}}'
	--qemu-arg -device --qemu-arg nvme,serial=blkdebug,drive=bdbg
)

# build_nvmectl DIR builds a static nvmectl (the guest has no libc) into DIR/nvmectl.
build_nvmectl() {
	CGO_ENABLED=0 go build -o "$1/nvmectl" ./cmd/nvmectl
}

# nvme_cli_args appends to the array named by $1 the guest.sh options that ship Debian's nvme-cli
# into the guest for hwtest/crosscheck_test.go: the binary and every shared library ldd lists
# (the busybox initramfs has no libc), and NVMEPOLL_NVME_CLI, the command prefix that runs it
# through the copied loader. Installs nvme-cli with apt-get if it is missing (CI is a fresh machine).
nvme_cli_args() {
	local -n out=$1
	local nvme=/usr/sbin/nvme lib loader=
	if [[ ! -x $nvme ]]; then
		echo "installing nvme-cli for the kernel cross-check"
		DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nvme-cli </dev/null || return 1
	fi
	out+=(--file "$nvme:nvme")
	# ldd prints "name => /path (addr)" for libraries and "/path (addr)" for the loader.
	for lib in $(ldd "$nvme" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
		out+=(--file "$lib:$(basename "$lib")")
		[[ $lib == */ld-linux* ]] && loader=$(basename "$lib")
	done
	[[ -n $loader ]] || { echo "nvme_cli_args: ldd $nvme names no ld-linux loader" >&2; return 1; }
	out+=(--env "NVMEPOLL_NVME_CLI=/payload/$loader --library-path /payload /payload/nvme")
}
