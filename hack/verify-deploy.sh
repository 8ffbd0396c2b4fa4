#!/usr/bin/env bash
# `make verify` part for deploy/: the kustomize base and the Helm chart
# describe the same objects, and every kustomization builds.
#
#   1. kustomize build deploy/kubernetes/base  ==  helm template hostvol
#      deploy/helm/hostvol -n hostvol (default values), plus the chart's
#      Namespace (namespace.create=true; off by default because
#      `helm install --create-namespace` makes it);
#   2. the with-registrar overlay  ==  the chart with registration.mode=sidecar;
#   3. the with-snapshots overlay  ==  the chart with snapshots.enabled=true
#      and its CRDs (--include-crds); the base with components/snapshots
#      alone  ==  the chart with snapshots.controller.enabled=false too;
#   4. the snapshot CRDs, in components/snapshot-controller/crds and in the
#      chart's crds/, are byte for byte the ones of the module
#      github.com/kubernetes-csi/external-snapshotter/client/v8 at
#      $SNAPSHOT_CRDS_VERSION (config/crd; `go mod download` from the module proxy);
#   5. every overlay under deploy/kubernetes/overlays builds (the
#      components are built through the overlays that use them);
#   6. helm lint.
#
# "The same" means the same set of objects (kind, namespace, name) with the
# same content once both are canonical JSON (hack/manifestnorm: sorted keys,
# empty values dropped, Helm's own labels helm.sh/chart and
# app.kubernetes.io/managed-by dropped). A drift fails with a unified diff
# of the canonical forms, "kustomize" on the left, "helm" on the right.
#
# kustomize and helm come from hack/tools.sh (pinned, built once with
# go install).
set -euo pipefail
cd "$(dirname "$0")/.."

KUSTOMIZE=$(hack/tools.sh kustomize)
HELM=$(hack/tools.sh helm)
RELEASE=hostvol
NAMESPACE=hostvol
CHART=deploy/helm/hostvol
# helm template renders for a made-up cluster (v1.20 unless told), which
# the chart's kubeVersion (>=1.30) refuses; the e2e cluster's version.
KUBE_VERSION=v1.34.4
# The snapshot CRDs' module version: the csi-snapshotter and
# snapshot-controller images deploy/ names are of the same release.
SNAPSHOT_CRDS_VERSION=v8.7.0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go -C hack/manifestnorm build -o "$work/manifestnorm" .

norm() { # DIR < stream
	"$work/manifestnorm" -out "$1" -drop-label helm.sh/chart -drop-label app.kubernetes.io/managed-by
}

helm_template() { # extra helm flags...
	"$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" "$@"
}

failed=0

# compare NAME KUSTOMIZATION HELM-FLAGS...
compare() {
	local name=$1 kdir=$2
	shift 2
	local out=$work/$name
	"$KUSTOMIZE" build "$kdir" | norm "$out/kustomize"
	{
		helm_template "$@"
		echo ---
		helm_template "$@" --set namespace.create=true --show-only templates/namespace.yaml
	} | norm "$out/helm"
	if (cd "$out" && diff -ru kustomize helm) >"$out/diff"; then
		echo "verify-deploy: $name: $kdir and helm template ${*:-(default values)} agree ($(ls "$out/helm" | wc -l) objects)"
	else
		echo "verify-deploy: $name: $kdir and the Helm chart (${*:-default values}) differ (< kustomize, > helm):"
		cat "$out/diff"
		failed=1
	fi
}

compare base deploy/kubernetes/base
compare with-registrar deploy/kubernetes/overlays/with-registrar --set registration.mode=sidecar
compare with-snapshots deploy/kubernetes/overlays/with-snapshots --set snapshots.enabled=true --include-crds
# The node side alone (a cluster with its own snapshot-controller and CRDs):
# no overlay ships it, so one is made here.
mkdir -p "$work/snapshots-node"
rel=$(realpath --relative-to="$work/snapshots-node" deploy/kubernetes) # kustomize refuses absolute roots
cat >"$work/snapshots-node/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $rel/base
components:
  - $rel/components/snapshots
EOF
compare snapshots-node "$work/snapshots-node" --set snapshots.enabled=true --set snapshots.controller.enabled=false

crd_dir=$(go mod download -json "github.com/kubernetes-csi/external-snapshotter/client/v8@$SNAPSHOT_CRDS_VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [[ -z $crd_dir ]]; then
	echo "verify-deploy: cannot download github.com/kubernetes-csi/external-snapshotter/client/v8@$SNAPSHOT_CRDS_VERSION"
	failed=1
else
	for d in deploy/kubernetes/components/snapshot-controller/crds "$CHART/crds"; do
		for f in "$d"/*.yaml; do
			[[ $(basename "$f") == kustomization.yaml ]] && continue
			if ! cmp -s "$f" "$crd_dir/config/crd/$(basename "$f")"; then
				echo "verify-deploy: $f differs from client/v8@$SNAPSHOT_CRDS_VERSION config/crd/$(basename "$f") (copy it again)"
				failed=1
			fi
		done
	done
	echo "verify-deploy: snapshot CRDs checked against client/v8@$SNAPSHOT_CRDS_VERSION's config/crd"
fi

for k in deploy/kubernetes/overlays/*/ ; do
	if ! "$KUSTOMIZE" build "$k" >/dev/null; then
		echo "verify-deploy: kustomize build $k failed"
		failed=1
	fi
done

if ! "$HELM" lint --quiet --namespace "$NAMESPACE" --kube-version "$KUBE_VERSION" "$CHART" >"$work/lint" 2>&1; then
	cat "$work/lint"
	echo "verify-deploy: helm lint $CHART failed"
	failed=1
fi

if [[ $failed -ne 0 ]]; then
	echo "verify-deploy: FAILED. The base and the chart must change together; render both with"
	echo "  $KUSTOMIZE build deploy/kubernetes/base"
	echo "  $HELM template $RELEASE $CHART --namespace $NAMESPACE --kube-version $KUBE_VERSION"
	exit 1
fi
