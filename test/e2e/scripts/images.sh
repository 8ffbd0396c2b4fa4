#!/bin/bash
# images.sh: the container images of the e2e cluster as docker-archive
# tarballs, made without a container engine (scripts/mkimage.sh), in
# $E2E_CACHE/images (the hostvol image in $E2E_WORK/images: it is rebuilt
# from the work tree every run).
#   pause       the sandbox image, a static Go program (images/pause)
#   busybox     Debian's busybox-static, tagged busybox:1.37.0 as the
#               examples name it
#   sidecars    csi-provisioner, csi-resizer, csi-snapshotter,
#               snapshot-controller: the static binaries built by
#               build-sidecars.sh on a minimal root filesystem
#   hostvol     the runtime root filesystem from deploy/image/packages.txt
#               (rootfs.sh) plus the static hostvol binary
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
I=$E2E_CACHE/images
mkdir -p "$I" "$E2E_WORK/images"
S=$E2E_DIR/scripts
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
minimal_root() { # dir
  mkdir -p "$1/etc" "$1/tmp"; chmod 1777 "$1/tmp"
  echo 'root:x:0:0:root:/root:/sbin/nologin' > "$1/etc/passwd"
  echo 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' >> "$1/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$1/etc/group"
}

if [ ! -f "$I/pause-3.10.tar" ]; then
  r=$tmp/pause; minimal_root "$r"
  (cd "$REPO" && go build -trimpath -ldflags "-s -w" -o "$r/pause" ./test/e2e/images/pause)
  "$S/layer.sh" "$tmp/pause.layer" "$r"
  "$S/mkimage.sh" "$I/pause-3.10.tar" "$IMG_PAUSE" '["/pause"]' null "$tmp/pause.layer"
  ts "image $IMG_PAUSE"
fi

if [ ! -f "$I/busybox-1.37.0.tar" ]; then
  r=$tmp/busybox; minimal_root "$r"
  mkdir -p "$E2E_CACHE/debs"
  deb=$(cd "$E2E_CACHE/debs" && apt-get download --print-uris busybox-static | awk '{print $2}')
  [ -n "$deb" ] || { apt-get update -qq; deb=$(cd "$E2E_CACHE/debs" && apt-get download --print-uris busybox-static | awk '{print $2}'); }
  [ -f "$E2E_CACHE/debs/$deb" ] || (cd "$E2E_CACHE/debs" && apt-get download busybox-static >/dev/null 2>&1) || (cd "$E2E_CACHE/debs" && apt-get download busybox-static)
  dpkg-deb -x "$E2E_CACHE/debs/$deb" "$tmp/bb"
  mkdir -p "$r/bin"; cp "$tmp/bb/bin/busybox" "$r/bin/busybox"
  for a in $("$r/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"; done
  mkdir -p "$r/root" "$r/var/www"
  echo 'hostvol-e2e' > "$r/etc/hostname"
  "$S/layer.sh" "$tmp/busybox.layer" "$r"
  "$S/mkimage.sh" "$I/busybox-1.37.0.tar" "$IMG_BUSYBOX" null '["sh"]' "$tmp/busybox.layer"
  ts "image $IMG_BUSYBOX ($deb)"
fi

sidecar() { # name version image
  local out=$I/$1-$2.tar
  [ -f "$out" ] && return
  local r=$tmp/$1; minimal_root "$r"
  cp "$E2E_CACHE/sidecars/$1-$2/$1" "$r/$1"
  "$S/layer.sh" "$tmp/$1.layer" "$r"
  "$S/mkimage.sh" "$out" "$3" "[\"/$1\"]" null "$tmp/$1.layer"
  ts "image $3"
}
sidecar csi-provisioner "$PROVISIONER_VERSION" "$IMG_PROVISIONER"
sidecar csi-resizer "$RESIZER_VERSION" "$IMG_RESIZER"
sidecar csi-snapshotter "$SNAPSHOTTER_VERSION" "$IMG_SNAPSHOTTER"
sidecar snapshot-controller "$SNAPSHOTTER_VERSION" "$IMG_SNAPSHOT_CONTROLLER"

# hostvol: the cached package layer, then a layer with the binary.
base=$("$S/rootfs.sh")
VERSION=$(cd "$REPO" && git describe --tags --always --dirty 2>/dev/null || echo dev)
mkdir -p "$tmp/hv/usr/local/bin"
(cd "$REPO" && go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$tmp/hv/usr/local/bin/hostvol" ./cmd/hostvol)
"$S/layer.sh" "$tmp/hostvol.layer" "$tmp/hv"
"$S/mkimage.sh" "$E2E_WORK/images/hostvol.tar" "$IMG_HOSTVOL" '["/usr/local/bin/hostvol"]' null "$base" "$tmp/hostvol.layer"
ts "image $IMG_HOSTVOL ($VERSION)"
