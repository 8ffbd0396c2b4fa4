#!/bin/bash
# rootfs.sh: the runtime root filesystem of the hostvol image, built without a
# container engine from the Debian packages listed in
# deploy/image/packages.txt (the list the Dockerfile installs on
# debian:bookworm-slim), plus base-files and dash, which that base image
# already has. Prints the path of the layer tarball.
#
# The set is what apt would install for them on an empty system
# (--no-install-recommends, dependencies resolved by apt as in the
# Dockerfile), fetched with `apt-get download` into $E2E_CACHE/debs and
# unpacked with `dpkg -x`: no maintainer scripts run; none are needed for the
# binaries hostvol executes. The layer is cached under a key made of the
# exact .deb file names, so a changed list or a new Debian point release
# builds a new one.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
LIST=$REPO/deploy/image/packages.txt
pkgs="base-files dash $(sed -e 's/#.*//' "$LIST" | xargs)"
# What `apt-get install --no-install-recommends` would install on an empty
# system: apt resolves alternatives and virtual packages as it would in the
# Dockerfile's runtime stage.
closure() {
  apt-get -s -o Dir::State::status=/dev/null install --no-install-recommends $pkgs 2>/dev/null |
    awk '$1 == "Inst" {print $2}' | sort -u
}
set_=$(closure)
if [ -z "$set_" ]; then apt-get update -qq >&2; set_=$(closure); fi
[ -n "$set_" ] || die "apt cannot resolve: $pkgs"
files=$(cd /tmp && apt-get download --print-uris $set_ | awk '{print $2}' | sort)   # 'URI' FILE SIZE HASH
key=$(echo "$files" | sha256sum | cut -c1-16)
out=$E2E_CACHE/rootfs/hostvol-$key.tar
[ -f "$out" ] && { echo "$out"; exit 0; }
mkdir -p "$E2E_CACHE/debs" "$E2E_CACHE/rootfs"
cd "$E2E_CACHE/debs"
for f in $files; do
  [ -f "$f" ] && continue
  apt-get download $set_ >/dev/null 2>&1 || { apt-get update -qq >&2; apt-get download $set_ >&2; }
  break
done
r=$(mktemp -d "$E2E_CACHE/rootfs/build.XXXXXX")
trap 'rm -rf "$r"' EXIT
for f in $files; do dpkg-deb -x "$f" "$r"; done
mkdir -p "$r/tmp" "$r/etc" "$r/var/lib/hostvol" "$r/usr/local/bin"
chmod 1777 "$r/tmp"
echo 'root:x:0:0:root:/root:/bin/sh' > "$r/etc/passwd"
echo 'root:x:0:' > "$r/etc/group"
# Package lists as an image scanner would look for them (names only).
mkdir -p "$r/var/lib/hostvol-image"; echo "$files" > "$r/var/lib/hostvol-image/debs.txt"
rm -rf "$r/usr/share/doc" "$r/usr/share/man" "$r/usr/share/info" "$r/usr/share/locale"
ldconfig -r "$r" 2>/dev/null || true
"$E2E_DIR/scripts/layer.sh" "$out" "$r"
echo "rootfs: $(echo "$files" | wc -l) packages, $(du -sh "$out" | cut -f1) ($out)" >&2
echo "$out"
