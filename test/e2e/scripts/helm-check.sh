#!/bin/bash
# helm-check.sh: the Helm chart (deploy/helm/hostvol), rendered with its
# default values and with snapshots.enabled=true, must be accepted by the
# e2e cluster's API server: a server-side dry run runs admission and
# validation on every object, and, since the kustomize install is already
# there, also checks that the chart describes objects compatible with it
# (a differing immutable field, such as a selector, is refused).
# Exit 2: skipped (no chart yet).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
chart=$REPO/deploy/helm/hostvol
[ -f "$chart/Chart.yaml" ] || { echo "helm check: SKIPPED: no chart at deploy/helm/hostvol yet"; exit 2; }
# helm: $HELM, bin/helm, one on PATH, else Helm $HELM_VERSION built from the
# Go module proxy into $E2E_CACHE (once; it has no replace directives).
HELM_VERSION=${HELM_VERSION:-v3.22.0}
helm=${HELM:-}
for h in "$REPO/bin/helm" "$(command -v helm || true)" "$E2E_CACHE/helm-$HELM_VERSION/helm"; do
  [ -z "$helm" ] && [ -n "$h" ] && [ -x "$h" ] && helm=$h
done
if [ -z "$helm" ]; then
  s=$(date +%s)
  GOBIN=$E2E_CACHE/helm-$HELM_VERSION go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" ||
    { echo "helm check: SKIPPED: no helm binary, and building Helm $HELM_VERSION failed"; exit 2; }
  helm=$E2E_CACHE/helm-$HELM_VERSION/helm
  ts "built helm $HELM_VERSION in $(( $(date +%s) - s ))s"
fi
out=$(mktemp); trap 'rm -f "$out"' EXIT
# Render for the cluster's version (helm template alone assumes an old one).
kv=$(kubectl version -o json | sed -n '/serverVersion/,/}/s/.*"gitVersion": "\(.*\)".*/\1/p')
# Default values, then with snapshots on and the chart's CRDs (the
# kustomize install put the CRDs there already, so the class is known).
for set in "" "--set snapshots.enabled=true --include-crds"; do
  # shellcheck disable=SC2086 # $set is flags
  "$helm" template hostvol "$chart" --namespace hostvol --kube-version "$kv" $set > "$out"
  n=$(grep -c '^kind:' "$out" || true)
  kubectl apply --dry-run=server -f "$out"
  echo "helm check: $n objects from 'helm template deploy/helm/hostvol ${set:-(default values)}' accepted by a server-side dry run ($("$helm" version --short 2>/dev/null))"
done
