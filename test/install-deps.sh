#!/usr/bin/env bash
# Installs the system tools hostvol's tests use, from Debian's packages, when
# they are missing. Idempotent; does nothing when everything is present.
set -euo pipefail

declare -A pkg_for=(
  [mount]=mount [umount]=mount [losetup]=mount [findmnt]=util-linux
  [mkfs.ext4]=e2fsprogs [resize2fs]=e2fsprogs
  [mkfs.xfs]=xfsprogs [xfs_growfs]=xfsprogs
  [mkfs.btrfs]=btrfs-progs [btrfs]=btrfs-progs
  [qemu-system-x86_64]=qemu-system-x86
)
missing=()
for cmd in "${!pkg_for[@]}"; do
  PATH="$PATH:/sbin:/usr/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_for[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: $pkgs (run as root, or: sudo apt-get install -y $pkgs)" >&2
  exit 0  # root-only tests skip (or fail under HOSTVOL_REQUIRE_ROOT_TESTS=1)
fi
echo "install-deps: installing $pkgs"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || apt-get update
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
