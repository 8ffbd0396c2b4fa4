#!/bin/bash
# Build the CSI sidecars the DaemonSet runs, from the Go module proxy, into
# $E2E_CACHE/sidecars/NAME-VERSION/NAME (skipped when already there):
#   csi-provisioner  external-provisioner $PROVISIONER_VERSION (v6.4.0 needs
#                    sig-storage-lib-external-provisioner v13.1.0, which the
#                    module proxy here refuses)
#   csi-resizer      external-resizer $RESIZER_VERSION
#   csi-snapshotter, snapshot-controller
#                    external-snapshotter $SNAPSHOTTER_VERSION (one module,
#                    two commands; its client/v8 replace becomes the
#                    published client/v8 at the same version)
# node-driver-registrar and livenessprobe are not obtainable here and not
# needed: hostvol registers itself with the kubelet and serves /healthz.
#
# A module whose go.mod has replace directives cannot be built as a
# dependency as is: a wrapper module requires it and copies its replaces
# (a local-path replace becomes the published module at the same version).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
build() { # module version cmd-package binary
  local m=$1 v=$2 pkg=$3 b=$4
  local d=$E2E_CACHE/sidecars/$b-$v
  [ -x "$d/$b" ] && { ts "$b $v: cached"; return; }
  local s; s=$(date +%s)
  mkdir -p "$d/wrapper"; cd "$d/wrapper"
  local gm; gm=$(go mod download -json "$m@$v" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  printf 'module hostvol-e2e-%s\n\ngo %s\n\nrequire %s %s\n' "$b" "$(sed -n 's/^go //p' "$gm")" "$m" "$v" > go.mod
  go mod edit -json "$gm" | /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin); v = sys.argv[1]
for r in j.get("Replace") or []:
    o = r["Old"]["Path"] + ("@" + r["Old"]["Version"] if r["Old"].get("Version") else "")
    n = r["New"]
    nv = n.get("Version") or v
    np = n["Path"] if n.get("Version") else r["Old"]["Path"]
    print("-replace=%s=%s@%s" % (o, np, nv))' "$v" | xargs -r go mod edit
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" > tools.go
  go mod tidy
  go build -trimpath -ldflags "-s -w -X main.version=$v" -o "$d/$b.tmp" "$pkg"
  mv "$d/$b.tmp" "$d/$b"
  ts "built $b $v in $(( $(date +%s) - s ))s"
}
build github.com/kubernetes-csi/external-provisioner/v6 "$PROVISIONER_VERSION" \
  github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner csi-provisioner
build github.com/kubernetes-csi/external-resizer/v2 "$RESIZER_VERSION" \
  github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer csi-resizer
build github.com/kubernetes-csi/external-snapshotter/v8 "$SNAPSHOTTER_VERSION" \
  github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter csi-snapshotter
build github.com/kubernetes-csi/external-snapshotter/v8 "$SNAPSHOTTER_VERSION" \
  github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller snapshot-controller
