#!/bin/busybox sh
# /init of the hostvol test VM (see test/vm/README.md). run.sh puts it into
# the initramfs with:
#   /hostvol-vm/test.bin   the Go test binary
#   /hostvol-vm/modules    kernel modules to insmod, in load order, one a line
#   /hostvol-vm/args       the test binary's arguments, one a line
#   /hostvol-vm/pkg/       the package's testdata/, if it has one
# It runs the test binary as root with all capabilities, prints
# HOSTVOL-VM-EXIT=<exit status> (the line run.sh looks for) and powers off.
bb=/bin/busybox
$bb --install -s /bin # sh, insmod, cp, ...: behind the real tools in PATH
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp TMPDIR=/tmp USER=root LC_ALL=C

finish() {
	$bb sync
	echo "HOSTVOL-VM-EXIT=$1"
	$bb poweroff -f
	sleep 10 # poweroff -f does not return; if it does, init exits and the kernel panics (panic=-1: qemu exits)
	exit "$1"
}

$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
$bb mkdir -p /dev/pts /dev/shm
$bb mount -t tmpfs -o mode=1777,size=75% tmpfs /tmp
$bb mount -t tmpfs -o mode=755 tmpfs /run

while IFS= read -r ko; do
	[ -n "$ko" ] || continue
	if ! out=$($bb insmod "$ko" 2>&1); then
		echo "hostvol-vm: insmod $ko failed: $out"
		finish 125
	fi
done </hostvol-vm/modules
# devtmpfs makes /dev/loop-control when the loop module registers it; a
# kernel with loop built in but no devtmpfs node would still need it.
[ -e /dev/loop-control ] || $bb mknod /dev/loop-control c 10 237

set --
while IFS= read -r a; do
	set -- "$@" "$a"
done </hostvol-vm/args

$bb mkdir -p /tmp/pkg
[ -d /hostvol-vm/pkg ] && $bb cp -a /hostvol-vm/pkg/. /tmp/pkg/
cd /tmp/pkg || finish 125

echo "hostvol-vm: guest ready: kernel $($bb uname -r), uptime $($bb cut -d' ' -f1 /proc/uptime)s, running the test binary $*"
HOSTVOL_IN_VM=1 HOSTVOL_REQUIRE_ROOT_TESTS=1 /hostvol-vm/test.bin "$@"
rc=$?
echo "hostvol-vm: test binary exited $rc at uptime $($bb cut -d' ' -f1 /proc/uptime)s"
if [ "$rc" -ne 0 ]; then
	$bb dmesg | $bb tail -n 40 | $bb sed 's/^/dmesg: /'
fi
finish "$rc"
