#!/bin/bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
# kubectl v$K8S_VERSION from k8s.io/kubernetes through the Go module proxy,
# into $E2E_CACHE/kubernetes-v$K8S_VERSION/bin. Nothing is done for binaries
# already there.
#
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, client-go, ...)
# with local paths, so it cannot be built as a dependency as is: a wrapper
# module requires it and replaces each staging module by the published
# k8s.io/X v0.MINOR.PATCH.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
V=$K8S_VERSION
MINOR=$(echo "$V" | cut -d. -f2)
cmds="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"
missing=; for c in $cmds; do [ -x "$K8S_BIN/$c" ] || missing="$missing $c"; done
[ -z "$missing" ] && { ts "kubernetes v$V: cached in $K8S_BIN"; exit 0; }
W=$E2E_CACHE/kubernetes-v$V/wrapper
mkdir -p "$W" "$K8S_BIN"
cd "$W"
s=$(date +%s)
MOD=$(go mod download -json "k8s.io/kubernetes@v$V" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
{
  echo "module hostvol-e2e-kubernetes"; echo
  echo "go $(sed -n 's/^go //p' "$MOD")"; echo
  sed -n 's/^godebug /godebug /p' "$MOD"; echo
  echo "require k8s.io/kubernetes v$V"; echo
  echo "replace ("
  sed -n '/^replace (/,/^)/p' "$MOD" | awk -v v="v0.${V#1.}" '/=> \.\/staging/ {print "\t"$1" => "$1" "v}'
  echo ")"
} > go.mod
{
  printf '//go:build tools\n\npackage tools\n\nimport (\n'
  for c in $cmds; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
  printf ')\n'
} > tools.go
go mod tidy
ts "kubernetes v$V: modules ready ($(( $(date +%s) - s ))s)"
LD="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LD="$LD -X $p.gitVersion=v$V -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
for c in $missing; do
  s=$(date +%s)
  go build -trimpath -ldflags "$LD" -o "$K8S_BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c"
  mv "$K8S_BIN/$c.tmp" "$K8S_BIN/$c"
  ts "built $c v$V in $(( $(date +%s) - s ))s"
done
