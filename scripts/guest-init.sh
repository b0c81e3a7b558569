#!/bin/busybox sh
# /init of the nvmepoll test guest; scripts/guest.sh builds it into the initramfs.
#
# It mounts the pseudo file systems, loads the modules listed in /etc/nvmepoll/modules (already in
# load order), binds every controller listed in /etc/nvmepoll/devices ("role serial address") as
# asked (role vfio: vfio-pci; role kernel: the kernel nvme driver), exports their addresses, runs
# /etc/nvmepoll/command in /payload with its output on ttyS1, reports the exit status on ttyS1
# after the run's marker, and powers off. Set-up steps log to the console (ttyS0); a set-up
# failure reports status 125.
/bin/busybox --install -s /bin
export PATH=/payload:/bin
export HOME=/root TMPDIR=/tmp
# The command's output goes to a log file on the host, not to a terminal (the kernel says TERM=linux).
export TERM=dumb

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /root
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /dev/shm

out=/dev/ttyS1
marker=$(cat /etc/nvmepoll/marker)
# Raw: no \n -> \r\n mapping, no echo of what the host never sends.
stty -F $out raw -echo 2>/dev/null

log() { echo "nvmepoll-init: $*"; }

finish() {
	echo "$marker $1" >$out
	# stty waits for the UART to drain (TCSADRAIN) so the marker is not lost at power-off.
	stty -F $out raw 2>/dev/null
	sync
	poweroff -f
	sleep 10
}

fail() {
	log "FAILED: $*"
	echo "nvmepoll-init: guest set-up failed: $* (the console follows)" >$out
	finish 125
}

for m in $(cat /etc/nvmepoll/modules); do
	insmod /lib/modules/$m || fail "insmod $m"
done
log "modules loaded: $(cat /etc/nvmepoll/modules | tr '\n' ' ')"

nvme_ctrls=""
for d in /sys/bus/pci/devices/*; do
	[ "$(cat $d/class)" = 0x010802 ] && nvme_ctrls="$nvme_ctrls ${d##*/}"
done
log "NVMe controllers (class 0x010802):${nvme_ctrls:- none}"

vfio_list=""
kernel_list=""
first=""
while read -r role serial addr; do
	[ -n "$addr" ] || continue
	d=/sys/bus/pci/devices/$addr
	[ -e $d ] || fail "controller $serial: no PCI device $addr (found:${nvme_ctrls:- none})"
	[ "$(cat $d/class)" = 0x010802 ] || fail "controller $serial: $addr has class $(cat $d/class), not 0x010802 (NVMe)"
	case $role in
	vfio)
		echo vfio-pci >$d/driver_override
		[ -e $d/driver ] && echo $addr >$d/driver/unbind
		echo $addr >/sys/bus/pci/drivers_probe
		drv=$(readlink $d/driver)
		[ "${drv##*/}" = vfio-pci ] || fail "controller $serial ($addr): bound to '${drv##*/}', not vfio-pci"
		group=$(readlink $d/iommu_group)
		group=${group##*/}
		[ -n "$group" ] || fail "controller $serial ($addr): no IOMMU group (is intel_iommu=on working?)"
		n=0
		while [ ! -c /dev/vfio/$group ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
		[ -c /dev/vfio/$group ] || fail "controller $serial ($addr): no /dev/vfio/$group"
		log "controller $serial: $addr bound to vfio-pci, IOMMU group $group"
		vfio_list="$vfio_list,$serial=$addr"
		[ -n "$first" ] || first=$addr
		;;
	kernel)
		[ -e /sys/bus/pci/drivers/nvme ] || fail "controller $serial: the kernel nvme driver is not registered"
		# The driver probes asynchronously; wait for the namespace's block device.
		n=0
		while [ -z "$(ls -d $d/nvme/nvme*/nvme*n* 2>/dev/null)" ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
		ns=$(ls -d $d/nvme/nvme*/nvme*n* 2>/dev/null | head -n1)
		[ -n "$ns" ] || fail "controller $serial ($addr): the kernel nvme driver made no block device within 60 s"
		log "controller $serial: $addr on the kernel nvme driver, /dev/${ns##*/}"
		kernel_list="$kernel_list,$serial=$addr"
		;;
	*) fail "unknown role $role for $serial" ;;
	esac
done </etc/nvmepoll/devices

# Tests that check QEMU-specific facts (vendor 1b36) key on this.
export NVMEPOLL_GUEST=qemu
export NVMEPOLL_TEST_DEVICE=$first
export NVMEPOLL_TEST_DEVICES=${vfio_list#,}
export NVMEPOLL_KERNEL_DEVICES=${kernel_list#,}
. /etc/nvmepoll/env
log "NVMEPOLL_TEST_DEVICES=$NVMEPOLL_TEST_DEVICES NVMEPOLL_KERNEL_DEVICES=$NVMEPOLL_KERNEL_DEVICES"
log "running: $(cat /etc/nvmepoll/command)"

cd /payload
sh /etc/nvmepoll/command >$out 2>&1 </dev/null
status=$?
log "command exited with status $status"
finish $status
