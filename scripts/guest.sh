#!/usr/bin/env bash
# guest.sh boots a throwaway QEMU guest with emulated NVMe controllers bound to vfio-pci, runs one
# command in it, and exits with that command's exit status. CI runs hwtest/ this way; so can you.
#
# The guest: Debian bookworm's 6.1 cloud kernel, QEMU q35 under TCG (never KVM: nested KVM fails
# on these machines), an emulated Intel IOMMU (intel_iommu=on), and a busybox initramfs whose
# /init (scripts/guest-init.sh) loads the vfio modules, binds the controllers to vfio-pci, runs
# the command in /payload, and powers off. Boots in a few seconds.
#
# Usage:
#   scripts/guest.sh [options] [--] command [args...]
#
#   scripts/guest.sh -- sh -c 'ls -l /dev/vfio; echo $NVMEPOLL_TEST_DEVICE'
#   scripts/guest.sh --file /tmp/hwtest.test -- hwtest.test -test.v
#   scripts/guest.sh --nvme small,mdts=2 --nvme oneq,max_ioqpairs=1 -- ...
#   scripts/guest.sh --disk ns512=64M --disk ns4k=64M \
#       --qemu-arg -device --qemu-arg nvme,id=c0,serial=multins \
#       --qemu-arg -device --qemu-arg nvme-ns,bus=c0,drive=ns512,nsid=1,logical_block_size=512 \
#       --qemu-arg -device --qemu-arg nvme-ns,bus=c0,drive=ns4k,nsid=2,logical_block_size=4096,physical_block_size=4096 \
#       -- ...
#   scripts/guest.sh --qemu-arg -drive --qemu-arg \
#       if=none,id=bad,driver=blkdebug,config=@TMP@/bad.conf,image.driver=raw,image.file.filename=@TMP@/bad.img ...
#
# Options:
#   --nvme SERIAL[,PROP=VAL...]  add a controller with serial SERIAL, its own zeroed disk (namespace 1)
#                                and any extra `-device nvme` properties (mdts=2, max_ioqpairs=1, ...).
#                                Without any controller option, one `--nvme nvmepoll0` is added.
#   --nvme-kernel SERIAL[,...]   same, but the controller is left to the kernel's nvme driver
#                                (/dev/nvmeXnY), for cross-checks; implies --kernel-nvme.
#   --kernel-nvme                keep the kernel's built-in nvme driver (by default it is disabled
#                                with initcall_blacklist so it never touches the test controllers).
#   --disk-size SIZE             size of the disks --nvme creates (default 64M, as truncate -s takes it).
#   --disk ID=SIZE               create an empty raw image @TMP@/ID.img and `-drive if=none,id=ID` for it.
#   --qemu-arg ARG               one extra argument for qemu (repeat for each word). @TMP@ becomes the
#                                run's temporary directory. A `-device nvme,...` given here is handled
#                                like --nvme: it gets an addr= if it has none, its serial= is exported
#                                (such a device must sit on the root bus, pcie.0, the default).
#   --file PATH[:NAME]           copy PATH into the guest's /payload (as NAME). /payload is on PATH.
#   --env NAME=VALUE             set an environment variable for the command.
#   --module NAME                also load kernel module NAME (and its dependencies) in the guest.
#   --append ARGS                extra kernel command line.
#   --mem MIB                    guest memory (default 1024).
#   --cpus N                     guest CPUs (default 2).
#   --timeout SECONDS            bound on the whole guest run, boot included (default 900, or
#                                $NVMEPOLL_GUEST_TIMEOUT). The guest is killed when it is exceeded.
#                                A boot that has not reached /init within $NVMEPOLL_BOOT_TIMEOUT s
#                                (default 180) counts as hung, is killed and is booted once more.
#   --verbose                    print the guest console (kernel log, set-up) even on success.
#   --keep                       keep the temporary directory (console.log, initrd, disks) and say where.
#
# In the guest the command runs as root, in /payload, with no stdin, and with:
#   NVMEPOLL_TEST_DEVICE     PCI address of the first vfio-bound controller, e.g. 0000:00:03.0
#   NVMEPOLL_TEST_DEVICES    every vfio-bound controller, in option order: serial=addr,serial=addr
#   NVMEPOLL_KERNEL_DEVICES  controllers left to the kernel nvme driver, same format
# Controllers without an explicit addr= get 0000:00:03.0, 0000:00:04.0, ... in the order given.
# The command's stdout and stderr are streamed to this script's stdout as it runs.
#
# Exit status: the command's; 124 when the guest run timed out; 125 when the runner or the guest
# set-up failed (the guest console is printed then, as on any failure).
#
# The first run on a machine installs qemu-system-x86 and cpio with apt-get if missing, downloads
# Debian's linux-image-6.1.0-NN-cloud-amd64 (the one linux-image-cloud-amd64 depends on) and
# busybox-static with `apt-get download`, and caches them in $NVMEPOLL_CACHE (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/nvmepoll). Later runs need no network. Set NVMEPOLL_KERNEL_PKG to
# pin another kernel package. Only one guest runs at a time per machine (flock on
# /tmp/nvmepoll-guest.lock): the machines have 2 cores and TCG is CPU-bound.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${NVMEPOLL_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/nvmepoll}

die() {
	echo "guest.sh: $*" >&2
	exit 125
}
say() { echo "guest.sh: $*" >&2; }

usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
	exit "${1:-0}"
}

# ---- options ----------------------------------------------------------------------------------

mem=1024
cpus=2
timeout_s=${NVMEPOLL_GUEST_TIMEOUT:-900}
disk_size=64M
verbose=0
keep=0
kernel_nvme=0
append=""
ctrls=()      # "role serial props" for --nvme / --nvme-kernel
disks=()      # "id=size"
qargs=()      # raw qemu args
files=()      # "path:name"
envs=()       # "NAME=VALUE"
modules=(vfio vfio_iommu_type1 vfio-pci)
order=()      # controllers in option order: "c:I" (ctrls[I]) or "q:J" (qargs[J], a -device nvme)

need_arg() { [[ $# -ge 2 ]] || die "$1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
	case $1 in
	--nvme | --nvme-kernel)
		need_arg "$@"
		role=vfio
		[[ $1 == --nvme-kernel ]] && role=kernel && kernel_nvme=1
		serial=${2%%,*}
		props=""
		[[ $2 == *,* ]] && props=${2#*,}
		[[ $serial =~ ^[A-Za-z0-9_.-]{1,20}$ ]] ||
			die "$1 $2: serial '$serial' must be 1-20 characters of [A-Za-z0-9_.-] (it names env entries and disk files)"
		order+=("c:${#ctrls[@]}")
		ctrls+=("$role $serial $props")
		shift 2
		;;
	--kernel-nvme) kernel_nvme=1; shift ;;
	--disk-size) need_arg "$@"; disk_size=$2; shift 2 ;;
	--disk)
		need_arg "$@"
		[[ $2 =~ ^[A-Za-z0-9_-]+=[0-9]+[KMG]?$ ]] || die "--disk $2: want ID=SIZE, e.g. ns4k=64M"
		disks+=("$2")
		shift 2
		;;
	--qemu-arg)
		need_arg "$@"
		[[ $2 =~ ^nvme(,|$) ]] && order+=("q:${#qargs[@]}")
		qargs+=("$2")
		shift 2
		;;
	--file)
		need_arg "$@"
		src=${2%%:*}
		name=$(basename "$src")
		[[ $2 == *:* ]] && name=${2#*:}
		[[ -f $src ]] || die "--file $2: $src is not a file"
		[[ $name != */* && -n $name ]] || die "--file $2: NAME must be a plain file name"
		files+=("$src:$name")
		shift 2
		;;
	--env)
		need_arg "$@"
		[[ $2 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env $2: want NAME=VALUE"
		envs+=("$2")
		shift 2
		;;
	--module) need_arg "$@"; modules+=("$2"); shift 2 ;;
	--append) need_arg "$@"; append+=" $2"; shift 2 ;;
	--mem) need_arg "$@"; mem=$2; shift 2 ;;
	--cpus) need_arg "$@"; cpus=$2; shift 2 ;;
	--timeout) need_arg "$@"; timeout_s=$2; shift 2 ;;
	--verbose) verbose=1; shift ;;
	--keep) keep=1; shift ;;
	-h | --help) usage 0 ;;
	--) shift; break ;;
	-*) die "unknown option $1 (see --help)" ;;
	*) break ;;
	esac
done
[[ $# -gt 0 ]] || die "no command given (see --help)"
[[ $mem =~ ^[0-9]+$ && $cpus =~ ^[0-9]+$ && $timeout_s =~ ^[0-9]+$ ]] ||
	die "--mem, --cpus and --timeout take whole numbers (got $mem, $cpus, $timeout_s)"

# ---- host tools -------------------------------------------------------------------------------

apt_updated=0
apt_update() {
	if [[ $apt_updated == 0 ]]; then
		say "apt-get update"
		DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null >&2 || die "apt-get update failed"
		apt_updated=1
	fi
}

ensure_tools() {
	local missing=()
	command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
	command -v cpio >/dev/null || missing+=(cpio)
	command -v dpkg-deb >/dev/null || missing+=(dpkg)
	command -v flock >/dev/null || missing+=(util-linux)
	[[ ${#missing[@]} -eq 0 ]] && return
	[[ $(id -u) == 0 ]] || die "missing ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}"
	apt_update
	say "installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null >&2 ||
		die "apt-get install ${missing[*]} failed"
}

# download_deb PKG DIR: `apt-get download` PKG into DIR; fails (without dying) so that callers
# can refresh the package lists and try again.
download_deb() {
	(cd "$2" && apt-get download -q -o APT::Sandbox::User=root "$1" </dev/null >&2) && ls "$2"/*.deb >/dev/null 2>&1
}

# kernel_pkg prints the concrete bookworm 6.1 cloud kernel package: the one the meta package
# depends on. Backports' 6.12 packages do not match the pattern.
kernel_pkg() {
	if [[ -n ${NVMEPOLL_KERNEL_PKG:-} ]]; then
		echo "$NVMEPOLL_KERNEL_PKG"
		return
	fi
	local re='linux-image-6\.1\.0-[0-9]+-cloud-amd64'
	local pkg
	pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | grep -oE "Depends: $re\$" | cut -d' ' -f2 | sort -V | tail -n1 || true)
	if [[ -z $pkg ]]; then
		apt_update
		pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | grep -oE "Depends: $re\$" | cut -d' ' -f2 | sort -V | tail -n1 || true)
	fi
	[[ -n $pkg ]] || die "linux-image-cloud-amd64 depends on no linux-image-6.1.0-NN-cloud-amd64 (apt-cache depends linux-image-cloud-amd64)"
	echo "$pkg"
}

# ensure_kernel sets kdir to a cache directory holding vmlinuz and lib/modules/<version>/.
# A complete download is marked by the file "ok"; a cached kernel is used without asking apt.
ensure_kernel() {
	local current=$cache/kernel/current
	if [[ -z ${NVMEPOLL_KERNEL_PKG:-} && -f $current && -f $cache/kernel/$(cat "$current")/ok ]]; then
		kdir=$cache/kernel/$(cat "$current")
		return
	fi
	local pkg
	pkg=$(kernel_pkg)
	kdir=$cache/kernel/$pkg
	if [[ ! -f $kdir/ok ]]; then
		say "downloading $pkg (once; cached in $cache)"
		local t
		t=$(mktemp -d "$cache/kernel/.dl.XXXXXX")
		if ! download_deb "$pkg" "$t"; then
			# Stale package lists: the archive may have moved on to a newer kernel ABI.
			apt_update
			pkg=$(kernel_pkg)
			kdir=$cache/kernel/$pkg
			download_deb "$pkg" "$t" || die "apt-get download $pkg failed"
		fi
		dpkg-deb -x "$t"/*.deb "$t/x" || die "dpkg-deb -x $pkg failed"
		rm -rf "$kdir"
		mkdir -p "$kdir"
		cp "$t"/x/boot/vmlinuz-* "$kdir/vmlinuz" || die "$pkg has no /boot/vmlinuz-*"
		mkdir -p "$kdir/lib"
		mv "$t/x/lib/modules" "$kdir/lib/modules" || die "$pkg has no /lib/modules"
		rm -rf "$t"
		touch "$kdir/ok"
	fi
	[[ -n ${NVMEPOLL_KERNEL_PKG:-} ]] || echo "$pkg" >"$cache/kernel/current"
}

# ensure_busybox sets busybox to a cached static busybox binary from Debian's busybox-static.
# It is downloaded rather than installed: busybox-static conflicts with the busybox package.
ensure_busybox() {
	busybox=$cache/busybox/busybox
	[[ -x $busybox ]] && return
	say "downloading busybox-static (once)"
	mkdir -p "$cache/busybox"
	local t
	t=$(mktemp -d "$cache/busybox/.dl.XXXXXX")
	if ! download_deb busybox-static "$t"; then
		apt_update
		download_deb busybox-static "$t" || die "apt-get download busybox-static failed"
	fi
	dpkg-deb -x "$t"/*.deb "$t/x" || die "dpkg-deb -x busybox-static failed"
	[[ -x $t/x/bin/busybox ]] || die "busybox-static has no /bin/busybox"
	mv "$t/x/bin/busybox" "$busybox"
	rm -rf "$t"
}

# module_order NAMES... prints the module files (relative to the modules dir) to insmod, each
# after its dependencies. The package has no modules.dep (depmod runs at install), so the
# dependencies come from each .ko's own modinfo "depends=" string. Built-in modules are skipped.
module_order() {
	local mdir=$1
	shift
	declare -A path=() done=()
	local f n
	while IFS= read -r f; do
		n=$(basename "$f" .ko)
		path[${n//-/_}]=$f
	done < <(cd "$mdir" && find kernel -name '*.ko')
	local builtin=" "
	[[ -f $mdir/modules.builtin ]] && builtin+=$(sed 's#.*/##; s#\.ko$##; s#-#_#g' "$mdir/modules.builtin" | tr '\n' ' ')
	visit() {
		local m=${1//-/_} d deps
		[[ -n ${done[$m]:-} ]] && return
		done[$m]=1
		if [[ -z ${path[$m]:-} ]]; then
			[[ $builtin == *" $m "* ]] && return
			die "kernel module $1 is neither in the kernel package nor built in"
		fi
		deps=$(tr '\0' '\n' <"$mdir/${path[$m]}" | sed -n 's/^depends=//p' | head -n1)
		for d in ${deps//,/ }; do visit "$d"; done
		echo "${path[$m]}"
	}
	for n in "$@"; do visit "$n"; done
}

# shell_quote ARGS... prints ARGS as one POSIX sh command line.
shell_quote() {
	local a out=""
	for a in "$@"; do
		out+=" '${a//\'/\'\\\'\'}'"
	done
	echo "${out# }"
}

# ---- set-up ----------------------------------------------------------------------------------

ensure_tools
mkdir -p "$cache/kernel"
# Several engineers share a machine: one downloader at a time.
exec 8>"$cache/.lock"
flock -w 600 8 || die "waited 600 s for $cache/.lock"
rm -rf "$cache"/kernel/.dl.* "$cache"/busybox/.dl.* # left by an interrupted download
ensure_kernel
ensure_busybox
flock -u 8
exec 8>&-

kver=$(ls "$kdir/lib/modules" | head -n1)
mdir=$kdir/lib/modules/$kver

tmp=$(mktemp -d "${TMPDIR:-/tmp}/nvmepoll-guest.XXXXXX")
qemu_pid=""
cleanup() {
	if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then
		kill "$qemu_pid" 2>/dev/null || true
	fi
	if [[ $keep == 1 ]]; then
		say "kept $tmp"
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Controllers. Raw `-device nvme,...` qemu args get the same treatment as --nvme. Addresses are
# given out in option order, skipping any addr= the raw args fix.
if [[ ${#order[@]} -eq 0 ]]; then
	order=("c:0")
	ctrls=("vfio nvmepoll0 ")
fi

used_slots=" "
for a in "${qargs[@]+"${qargs[@]}"}"; do
	if [[ $a =~ ^nvme,(.*,)?addr=(0x)?([0-9a-fA-F]+)(\.0)?(,|$) ]]; then
		used_slots+="$((16#${BASH_REMATCH[3]})) "
	fi
done
next_slot=3
declare -A slot_of=()
devices="" # lines "role serial address" for the guest, in option order
for o in "${order[@]}"; do
	if [[ $o == c:* ]]; then
		read -r role serial _ <<<"${ctrls[${o#c:}]}"
	else
		a=${qargs[${o#q:}]}
		role=vfio
		serial=$(sed -n 's/.*\(^\|,\)serial=\([^,]*\).*/\2/p' <<<"$a")
		[[ -n $serial ]] || die "--qemu-arg $a: an nvme device needs serial= (it names the controller in the guest)"
	fi
	if [[ $o == q:* && $a =~ ,addr=(0x)?([0-9a-fA-F]+) ]]; then
		slot=$((16#${BASH_REMATCH[2]}))
	else
		while [[ $used_slots == *" $next_slot "* ]]; do next_slot=$((next_slot + 1)); done
		[[ $next_slot -le 31 ]] || die "more than 29 PCI devices on pcie.0"
		used_slots+="$next_slot "
		slot=$next_slot
		slot_of[$o]=$slot
	fi
	devices+=$(printf '%s %s 0000:00:%02x.0' "$role" "$serial" "$slot")$'\n'
done

qemu_dev=()
for i in "${!ctrls[@]}"; do
	read -r role serial props <<<"${ctrls[$i]}"
	truncate -s "$disk_size" "$tmp/$serial.img" 2>/dev/null || die "--disk-size $disk_size: truncate failed"
	qemu_dev+=(-drive "if=none,id=nvmepoll-disk$i,format=raw,file=$tmp/$serial.img"
		-device "nvme,serial=$serial,drive=nvmepoll-disk$i,addr=$(printf '0x%x' "${slot_of[c:$i]}")${props:+,$props}")
done
for d in "${disks[@]+"${disks[@]}"}"; do
	truncate -s "${d#*=}" "$tmp/${d%%=*}.img"
	qemu_dev+=(-drive "if=none,id=${d%%=*},format=raw,file=$tmp/${d%%=*}.img")
done
for j in "${!qargs[@]}"; do
	a=${qargs[$j]//@TMP@/$tmp}
	[[ -n ${slot_of[q:$j]:-} ]] && a+=",addr=$(printf '0x%x' "${slot_of[q:$j]}")"
	qemu_dev+=("$a")
done
dups=$(awk '{print $2}' <<<"$devices" | sort | uniq -d | tr '\n' ' ')
[[ -z ${dups// /} ]] || die "two controllers with serial ${dups% }: serials name the controllers in the guest, so they must differ"

# Initramfs: busybox, the modules in load order, /init, and the payload. Uncompressed: the
# kernel unpacks it faster than TCG would decompress it.
root=$tmp/root
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,run,payload,etc/nvmepoll,lib/modules}
cp "$busybox" "$root/bin/busybox"
cp "$here/guest-init.sh" "$root/init"
chmod 755 "$root/init" "$root/bin/busybox"
: >"$root/etc/nvmepoll/modules"
order=$(module_order "$mdir" "${modules[@]}")
for m in $order; do
	cp "$mdir/$m" "$root/lib/modules/"
	basename "$m" >>"$root/etc/nvmepoll/modules"
done
printf '%s' "$devices" >"$root/etc/nvmepoll/devices"
for f in "${files[@]+"${files[@]}"}"; do
	cp "${f%%:*}" "$root/payload/${f#*:}"
	chmod +x "$root/payload/${f#*:}" 2>/dev/null || true
done
: >"$root/etc/nvmepoll/env"
for e in "${envs[@]+"${envs[@]}"}"; do
	echo "export ${e%%=*}=$(shell_quote "${e#*=}")" >>"$root/etc/nvmepoll/env"
done
shell_quote "$@" >"$root/etc/nvmepoll/command"
# The exit marker carries a per-run nonce so no payload output can fake it.
marker="nvmepoll-guest-exit-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n'):"
echo "$marker" >"$root/etc/nvmepoll/marker"
(cd "$root" && find . | cpio -o -H newc -R 0:0 --quiet) >"$tmp/initrd" || die "cpio failed"

# no_timer_check: under TCG on a busy host the kernel's boot-time check that the timer interrupt
# arrives through the (remapped) IO-APIC can time out and panic; the timer works regardless.
cmdline="console=ttyS0 intel_iommu=on no_timer_check panic=-1 loglevel=7 rdinit=/init$append"
[[ $kernel_nvme == 1 ]] || cmdline+=" initcall_blacklist=nvme_init"

# ---- run ---------------------------------------------------------------------------------------

exec 9>/tmp/nvmepoll-guest.lock
if ! flock -n 9; then
	say "another nvmepoll guest is running on this machine; waiting for it (at most $timeout_s s)"
	flock -w "$timeout_s" 9 || die "waited $timeout_s s for /tmp/nvmepoll-guest.lock"
fi

# How long a boot may take to reach /init before it counts as hung (NVMEPOLL_BOOT_TIMEOUT).
boot_limit=${NVMEPOLL_BOOT_TIMEOUT:-180}

# boot runs the guest once, streaming the command's output; sets qemu_rc.
boot() {
	: >"$tmp/payload.log"
	: >"$tmp/console.log"
	# ttyS0 is the console (kernel log, init's set-up log); ttyS1 carries only the command's output.
	timeout -k 10 "$timeout_s" qemu-system-x86_64 \
		-accel tcg -M q35 -cpu qemu64 -smp "$cpus" -m "$mem" \
		-nodefaults -display none -no-reboot \
		-device intel-iommu,intremap=on \
		-kernel "$kdir/vmlinuz" -initrd "$tmp/initrd" -append "$cmdline" \
		-serial "file:$tmp/console.log" -serial "file:$tmp/payload.log" \
		"${qemu_dev[@]}" </dev/null >"$tmp/qemu.out" 2>&1 9>&- &
	qemu_pid=$!
	# A TCG guest can also hang early in boot (seen once: console silent at 2 s for 13 minutes on
	# an idle host). /init normally runs within seconds, so a boot that has not reached it by
	# $boot_limit s is killed and, like a boot panic, retried once below.
	rm -f "$tmp/boot-hung"
	(
		for ((i = 0; i < boot_limit; i++)); do
			sleep 1
			kill -0 "$qemu_pid" 2>/dev/null || exit 0
			grep -q 'nvmepoll-init: running' "$tmp/console.log" && exit 0
		done
		echo "no /init after $boot_limit s" >"$tmp/boot-hung"
		kill "$qemu_pid" 2>/dev/null
	) 9>&- &
	local watchdog=$!
	# Drop serial CRs and the exit marker. The marker may follow output that did not end in a
	# newline, so it is matched anywhere on a line.
	tail -n +1 -F --pid="$qemu_pid" "$tmp/payload.log" 2>/dev/null |
		sed -u -e 's/\r$//' -e "/^$marker [0-9]*\$/d" -e "s/$marker [0-9]*\$//" || true
	qemu_rc=0
	wait "$qemu_pid" || qemu_rc=$?
	qemu_pid=""
	kill "$watchdog" 2>/dev/null || true
	wait "$watchdog" 2>/dev/null || true
}

start=$SECONDS
boot
# A guest that died before /init started the command (a kernel panic while booting: on a loaded
# host TCG can be slow enough for the kernel's boot-time timer checks to fail) is booted once
# more; a failure after that point is the command's or the set-up's and is never retried.
if [[ -f $tmp/boot-hung ]]; then
	say "the guest hung while booting ($(cat "$tmp/boot-hung")); booting it once more"
	tail -n 5 "$tmp/console.log" | tr -d '\r' >&2 || true
	cp "$tmp/console.log" "$tmp/console.first.log"
	boot
elif [[ $qemu_rc == 0 && ! -s $tmp/payload.log ]] && ! grep -q 'nvmepoll-init: running' "$tmp/console.log"; then
	say "the guest died while booting, before the command started; booting it once more"
	grep -aE 'Kernel panic|not syncing' "$tmp/console.log" | tr -d '\r' >&2 || true
	cp "$tmp/console.log" "$tmp/console.first.log"
	boot
fi
# QEMU 7.2 itself crashes now and then (SIGSEGV during vfio open/close cycles or a function
# reset under I/O, about 1 in 20-50 runs of those tests, not reproducible; twice in a row once).
# That is QEMU's failure, not the command's: run the whole command again on fresh disks, up to
# twice. A crash the guest's command triggers every time still fails.
crashes=0
while [[ $qemu_rc == 139 || $qemu_rc == 134 ]] && ((crashes < 2)); do
	crashes=$((crashes + 1))
	say "QEMU crashed (exit status $qemu_rc: killed by signal $((qemu_rc - 128))) while the command ran;"
	say "this is a QEMU bug, not a test verdict: running the command once more from a fresh boot and fresh disks"
	echo "==== guest.sh: QEMU crashed; the command's output below is from a fresh run ===="
	cp "$tmp/console.log" "$tmp/console.crash$crashes.log"
	for f in "$tmp"/*.img; do
		[[ -f $f ]] || continue
		size=$(stat -c %s "$f")
		truncate -s 0 "$f" && truncate -s "$size" "$f"
	done
	boot
done
flock -u 9
elapsed=$((SECONDS - start))

status=$(tr -d '\r' <"$tmp/payload.log" | grep -ao "$marker [0-9]*\$" | tail -n1 | cut -d' ' -f2 || true)
why=""
if [[ -f $tmp/boot-hung ]]; then
	why="guest hung while booting, twice ($(cat "$tmp/boot-hung"); NVMEPOLL_BOOT_TIMEOUT raises the bound)"
	status=125
elif [[ $qemu_rc == 124 || $qemu_rc == 137 ]]; then
	why="guest did not finish within $timeout_s s (--timeout); killed"
	status=124
elif [[ $qemu_rc != 0 ]]; then
	why="qemu exited with status $qemu_rc"
	status=125
elif [[ -z $status ]]; then
	why="guest stopped without reporting the command's exit status (kernel panic or init failure?)"
	status=125
fi

show_console() {
	echo "---- guest console ($tmp/console.log) ----"
	# A DMAR fault storm can make it long: the start (boot, IOMMU set-up) and the end matter.
	local n
	n=$(wc -l <"$tmp/console.log")
	if [[ $n -le 2000 ]]; then
		tr -d '\r' <"$tmp/console.log"
	else
		head -n 300 "$tmp/console.log" | tr -d '\r'
		echo "... $((n - 1300)) lines left out (--keep keeps the whole log) ..."
		tail -n 1000 "$tmp/console.log" | tr -d '\r'
	fi
	if [[ -s $tmp/qemu.out ]]; then
		echo "---- qemu ----"
		cat "$tmp/qemu.out"
	fi
	echo "---- end of guest console ----"
}
if [[ -n $why ]]; then
	show_console >&2
	say "$why after ${elapsed}s"
elif [[ $status != 0 ]]; then
	show_console >&2
	say "command exited with status $status (guest ran ${elapsed}s)"
else
	[[ $verbose == 1 ]] && show_console >&2
	say "command exited with status 0 (guest ran ${elapsed}s)"
fi
exit "$status"
