#!/usr/bin/env bash
# Runs a Go test package inside a throwaway qemu VM booting Debian's stock
# kernel, as root with every capability. See test/vm/README.md.
#
#   test/vm/run.sh PKG [test binary args...]
#   test/vm/run.sh ./test/vmtests -test.run TestOnlineExt4Grow -test.v
#
# Exit status: the guest test binary's (0 = pass); 124 = timeout; 125 = the
# harness failed (setup error, or the guest never printed its exit status).
#
# Environment:
#   HOSTVOL_VM_CACHE    kernel and busybox cache (default /var/cache/hostvol-vm)
#   HOSTVOL_VM_TIMEOUT  seconds before qemu is killed (default 300)
#   HOSTVOL_VM_MEM      guest memory in MiB (default 1024)
#   HOSTVOL_VM_SMP      guest CPUs (default 2)
#   HOSTVOL_VM_MODULES  extra kernel modules to load (names; dependencies follow)
#   HOSTVOL_VM_TOOLS    extra host commands to copy in, with their libraries
#   HOSTVOL_VM_KEEP=1   keep the work directory (initramfs, console log)
set -euo pipefail

usage() {
	sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 125
}
[ $# -ge 1 ] || usage
case $1 in -h | --help) usage ;; esac
PKG=$1
shift

CACHE=${HOSTVOL_VM_CACHE:-/var/cache/hostvol-vm}
TIMEOUT=${HOSTVOL_VM_TIMEOUT:-300}
MEM=${HOSTVOL_VM_MEM:-1024}
SMP=${HOSTVOL_VM_SMP:-2}
GO=${GO:-go}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Kernel modules the tests need; their dependencies are resolved from the
# kernel's modules.dep. crc32c_generic first: libcrc32c (xfs) only
# soft-depends on a crc32c implementation.
MODULES="crc32c_generic loop ext4 xfs quota_v2 ${HOSTVOL_VM_MODULES:-}"
# Host commands copied in with their shared libraries. util-linux mount and
# umount: k8s.io/mount-utils execs them; blkid (-p -o export) and blockdev
# too, for resizing. They win over busybox's applets by PATH order.
TOOLS="mount umount losetup blkid blockdev findmnt
	mke2fs mkfs.ext4 e2fsck resize2fs tune2fs dumpe2fs
	mkfs.xfs xfs_growfs xfs_quota xfs_io xfs_repair ${HOSTVOL_VM_TOOLS:-}"

log() { echo "vm: $*" >&2; }
die() {
	echo "vm: error: $*" >&2
	exit 125
}
t0=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }

# --- host packages -----------------------------------------------------------

# ensure_cmds "cmd=package ...": installs the packages of missing commands
# (root only, from the host's Debian mirrors).
ensure_cmds() {
	local pair cmd missing=()
	for pair in "$@"; do
		cmd=${pair%%=*}
		PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${pair#*=}")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	local pkgs
	pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
	[ "$(id -u)" -eq 0 ] || die "missing packages: $pkgs(run as root, or: sudo apt-get install -y $pkgs)"
	log "installing $pkgs"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null || apt-get update
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
}
ensure_cmds qemu-system-x86_64=qemu-system-x86 mount=mount umount=mount losetup=mount \
	blkid=util-linux blockdev=util-linux findmnt=util-linux flock=util-linux \
	mke2fs=e2fsprogs e2fsck=e2fsprogs resize2fs=e2fsprogs \
	mkfs.xfs=xfsprogs xfs_growfs=xfsprogs xfs_quota=xfsprogs \
	apt-get=apt dpkg-deb=dpkg ldd=libc-bin
export PATH="$PATH:/usr/sbin:/sbin"

# --- cache: Debian's kernel and busybox-static, by package version ------------

mkdir -p "$CACHE" 2>/dev/null || die "cannot create the cache $CACHE (run as root, or set HOSTVOL_VM_CACHE)"
[ -w "$CACHE" ] || die "cache $CACHE is not writable (run as root, or set HOSTVOL_VM_CACHE)"
exec 9>"$CACHE/.lock"
flock -x 9 # populating; downgraded to shared below while the initramfs is built

# apt_candidates: "KERNEL_PACKAGE KERNEL_VERSION BUSYBOX_VERSION", what apt
# would install now ("-" where apt knows none). linux-image-amd64 pins its
# versioned image package with "(= VERSION)". One apt-cache call: without
# apt's binary cache (Debian's container images) each costs about a second.
apt_candidates() {
	apt-cache show --no-all-versions linux-image-amd64 busybox-static 2>/dev/null | awk '
		/^Package:/ { pkg = $2 }
		pkg == "linux-image-amd64" && /^Depends:/ {
			for (i = 2; i <= NF; i++) if ($i ~ /^linux-image-/) {
				k = $i; sub(/,$/, "", k)
				if ($(i + 1) == "(=") { v = $(i + 2); sub(/\)?,?$/, "", v) }
				break
			}
		}
		pkg == "busybox-static" && /^Version:/ { b = $2 }
		END { print (k ? k : "-"), (v ? v : "-"), (b ? b : "-") }'
}

# cached KIND: the newest complete entry of KIND in the cache, or "".
cached() {
	local d
	# shellcheck disable=SC2012 # names are PACKAGE_VERSION, sort -V orders them
	d=$(ls -1d "$CACHE/$1"/*/.complete 2>/dev/null | sort -V | tail -n 1)
	[ -n "$d" ] && dirname "$d"
	return 0
}

# fetch KIND PKG VERSION: apt-get download + dpkg -x into
# $CACHE/KIND/PKG_VERSION (once); other versions of KIND are removed.
fetch() {
	local kind=$1 pkg=$2 ver=$3
	local dir="$CACHE/$kind/${pkg}_${ver//:/%3a}"
	if [ -e "$dir/.complete" ]; then
		echo "$dir"
		return
	fi
	local tmp
	tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
	log "downloading $pkg $ver"
	if ! (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$ver" >&2); then
		rm -rf "$tmp"
		return 1
	fi
	log "unpacking $pkg $ver"
	mkdir "$tmp/root"
	dpkg-deb -x "$tmp"/*.deb "$tmp/root" || {
		rm -rf "$tmp"
		return 1
	}
	touch "$tmp/root/.complete"
	mkdir -p "$CACHE/$kind"
	rm -rf "$dir"
	mv "$tmp/root" "$dir"
	rm -rf "$tmp"
	find "$CACHE/$kind" -mindepth 1 -maxdepth 1 ! -path "$dir" -exec rm -rf {} +
	echo "$dir"
}

# ingredients: sets KDIR and BBDIR to the cache entries of apt's candidate
# kernel and busybox-static, fetched when not cached yet. Falls back to the
# newest cached entries when apt has no metadata or the download fails.
ingredients() {
	local attempt kpkg kver bbver
	for attempt in 1 2; do
		read -r kpkg kver bbver < <(apt_candidates)
		if [ "$kpkg" != - ] && [ "$kver" = - ]; then
			kver=$(apt-cache show --no-all-versions "$kpkg" 2>/dev/null | awk '/^Version:/ { print $2; exit }')
			kver=${kver:--}
		fi
		if [ "$kpkg" != - ] && [ "$kver" != - ] && [ "$bbver" != - ] &&
			KDIR=$(fetch kernel "$kpkg" "$kver") && BBDIR=$(fetch busybox busybox-static "$bbver"); then
			return
		fi
		if [ "$attempt" = 1 ] && [ "$(id -u)" -eq 0 ]; then
			log "apt metadata missing or stale; apt-get update"
			apt-get update -qq >/dev/null 2>&1 || true
		fi
	done
	KDIR=$(cached kernel)
	BBDIR=$(cached busybox)
	if [ -z "$KDIR" ] || [ -z "$BBDIR" ]; then
		die "apt offers no linux-image-amd64 or busybox-static and $CACHE has none cached"
	fi
	log "apt has no usable candidate: using what is cached"
}

ingredients
kvers=("$KDIR"/lib/modules/*/)
KVER=$(basename "${kvers[0]}")
VMLINUZ="$KDIR/boot/vmlinuz-$KVER"
BUSYBOX="$BBDIR/bin/busybox"
[ -f "$VMLINUZ" ] || die "no kernel image at $VMLINUZ"
[ -x "$BUSYBOX" ] || die "no busybox at $BUSYBOX"
if [ ! -e "$KDIR/.depmod" ]; then
	# The package has no modules.dep (its postinst runs depmod).
	"$BUSYBOX" depmod -b "$KDIR" "$KVER" || die "depmod $KVER failed"
	touch "$KDIR/.depmod"
fi
flock -s 9
log "kernel $(basename "$KDIR"), $(basename "$BBDIR") ($(since "$t0"))"

# --- work directory -----------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hostvol-vm.XXXXXX")
QPID=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
		kill "$QPID" 2>/dev/null || true
	fi
	if [ "${HOSTVOL_VM_KEEP:-}" = 1 ]; then
		log "kept $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,etc,hostvol-vm,lib/modules}
install -d -m 1777 "$ROOT/tmp"

# --- test binary --------------------------------------------------------------

t=$(date +%s.%N)
CGO_ENABLED=0 "$GO" test -c -ldflags='-s -w' -o "$ROOT/hostvol-vm/test.bin" "$PKG" ||
	die "go test -c $PKG failed"
[ -x "$ROOT/hostvol-vm/test.bin" ] || die "$PKG has no tests (go test -c wrote no binary)"
pkgdir=$("$GO" list -f '{{.Dir}}' "$PKG")
if [ -d "$pkgdir/testdata" ]; then
	mkdir -p "$ROOT/hostvol-vm/pkg"
	cp -a "$pkgdir/testdata" "$ROOT/hostvol-vm/pkg/"
fi
: >"$ROOT/hostvol-vm/args"
# Inside the guest a hung test panics with its goroutines before the host
# kills the VM; a -test.timeout among the arguments comes later and wins.
guest_timeout=$((TIMEOUT > 60 ? TIMEOUT - 30 : TIMEOUT * 3 / 4))
for a in "-test.timeout=${guest_timeout}s" "$@"; do
	case $a in *$'\n'*) die "test arguments must not contain newlines" ;; esac
	printf '%s\n' "$a" >>"$ROOT/hostvol-vm/args"
done
log "built $(du -m "$ROOT/hostvol-vm/test.bin" | cut -f1) MiB test binary for $PKG ($(since "$t"))"

# --- initramfs ----------------------------------------------------------------

t=$(date +%s.%N)
install -m 755 "$HERE/init.sh" "$ROOT/init"
cp "$BUSYBOX" "$ROOT/bin/busybox" # init.sh links its applets into /bin

# Kernel modules: each after its dependencies (modules.dep, recursively).
MODBASE="$KDIR/lib/modules/$KVER"
declare -A modpath moddeps loaded
while IFS=: read -r path deps; do
	name=${path##*/}
	name=${name%%.ko*}
	name=${name//-/_}
	modpath[$name]=$path
	moddeps[$path]=$deps
done <"$MODBASE/modules.dep"
: >"$ROOT/hostvol-vm/modules"
add_module() {
	local path=$1 dep
	[ -n "${loaded[$path]:-}" ] && return
	loaded[$path]=1
	for dep in ${moddeps[$path]}; do
		add_module "$dep"
	done
	local src="$MODBASE/$path" dst="/lib/modules/$KVER/${path%.ko*}.ko"
	mkdir -p "$(dirname "$ROOT$dst")"
	case $path in
	*.ko) cp "$src" "$ROOT$dst" ;;
	*.ko.xz) xz -dc "$src" >"$ROOT$dst" ;;
	*.ko.zst) zstd -qdc "$src" >"$ROOT$dst" ;;
	*.ko.gz) gzip -dc "$src" >"$ROOT$dst" ;;
	*) die "unknown module format: $path" ;;
	esac
	echo "$dst" >>"$ROOT/hostvol-vm/modules"
}
for m in $MODULES; do
	m=${m//-/_}
	if [ -n "${modpath[$m]:-}" ]; then
		add_module "${modpath[$m]}"
	elif grep -qE "/$m\.ko" "$MODBASE/modules.builtin" 2>/dev/null; then
		: # built into this kernel
	else
		die "kernel $KVER has no module $m"
	fi
done

# Host tools and their shared libraries (ldd), at the same paths.
declare -A copied
copy_file() {
	[ -n "${copied[$1]:-}" ] && return
	copied[$1]=1
	mkdir -p "$(dirname "$ROOT$1")"
	cp -L "$1" "$ROOT$1"
}
for tool in $TOOLS; do
	bin=$(command -v "$tool") || die "host command $tool not found"
	copy_file "$bin"
	if libs=$(ldd "$bin" 2>/dev/null); then
		while read -r lib; do
			copy_file "$lib"
		done < <(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' <<<"$libs")
	fi
done
[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$ROOT/etc/"
echo 'root:x:0:0:root:/tmp:/bin/sh' >"$ROOT/etc/passwd"
echo 'root:x:0:' >"$ROOT/etc/group"
: >"$ROOT/etc/fstab"
ln -s /proc/self/mounts "$ROOT/etc/mtab"

# Uncompressed: the guest unpacks it faster than it would gunzip it (TCG).
(cd "$ROOT" && find . | "$BUSYBOX" cpio -o -H newc 2>/dev/null) >"$WORK/initrd.cpio"
flock -u 9
log "initramfs $(du -m "$WORK/initrd.cpio" | cut -f1) MiB, $(wc -l <"$ROOT/hostvol-vm/modules") modules ($(since "$t"))"

# --- boot ---------------------------------------------------------------------

LOG="$WORK/console.log"
mkfifo "$WORK/console"
# Serial console -> stdout: drop CRs and terminal escapes, keep a copy.
sed -u -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' <"$WORK/console" | tee "$LOG" &
READER=$!
t=$(date +%s.%N)
log "booting qemu ($MEM MiB, $SMP CPUs, TCG, timeout ${TIMEOUT}s)"
qemu-system-x86_64 -m "$MEM" -smp "$SMP" -accel tcg -cpu max -nographic -no-reboot -net none \
	-kernel "$VMLINUZ" -initrd "$WORK/initrd.cpio" \
	-append 'console=ttyS0 panic=-1 quiet' </dev/null >"$WORK/console" 2>&1 &
QPID=$!
timed_out=0
deadline=$((SECONDS + TIMEOUT))
while kill -0 "$QPID" 2>/dev/null; do
	if ((SECONDS >= deadline)); then
		timed_out=1
		log "timeout after ${TIMEOUT}s: killing qemu (pid $QPID)"
		kill "$QPID" 2>/dev/null || true
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 "$QPID" 2>/dev/null || break
			sleep 0.5
		done
		kill -9 "$QPID" 2>/dev/null || true
		break
	fi
	sleep 0.2
done
qrc=0
wait "$QPID" || qrc=$?
QPID=""
wait "$READER" || true

rc=$(grep -a -oE '^HOSTVOL-VM-EXIT=[0-9]+' "$LOG" | tail -n 1 | cut -d= -f2 || true)
if [ "$timed_out" = 1 ]; then
	log "FAIL: the VM did not finish within ${TIMEOUT}s (HOSTVOL_VM_TIMEOUT)"
	exit 124
fi
if [ -z "$rc" ]; then
	log "FAIL: the guest printed no HOSTVOL-VM-EXIT line (qemu exit status $qrc)"
	exit 125
fi
log "guest test exit status $rc; VM $(since "$t"), total $(since "$t0")"
exit "$rc"
