#!/bin/bash
# deploy.sh: install hostvol into the e2e cluster the way an admin does,
#   kubectl apply -k deploy/kubernetes/overlays/e2e
# and wait until it serves: the DaemonSet's pod ready, the driver registered
# with the kubelet (CSINode), capacity published for every StorageClass.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
kubectl apply -k "$REPO/deploy/kubernetes/overlays/e2e" >/dev/null
ts "applied deploy/kubernetes/overlays/e2e"
kubectl -n hostvol rollout status ds/hostvol-node --timeout=180s >/dev/null || {
  kubectl -n hostvol describe pods | tail -40; kubectl -n hostvol logs ds/hostvol-node --all-containers --tail=40; exit 1; }
ts "DaemonSet hostvol-node ready: $(kubectl -n hostvol get pods -o jsonpath='{range .items[*].spec.containers[*]}{.name}={.image} {end}')"
for _ in $(seq 1 60); do
  kubectl get csinode "$NODE" -o jsonpath='{.spec.drivers[*].name}' 2>/dev/null | grep -qw hostvol.csi.io && break; sleep 1
done
kubectl get csinode "$NODE" -o jsonpath='{.spec.drivers[*].name}' | grep -qw hostvol.csi.io || die "hostvol.csi.io not registered with the kubelet (CSINode $NODE)"
ts "hostvol.csi.io registered with the kubelet (CSINode $NODE)"
classes=$(kubectl get storageclass -o jsonpath='{range .items[?(@.provisioner=="hostvol.csi.io")]}{.metadata.name}{"\n"}{end}' | sort)
for _ in $(seq 1 90); do
  have=$(kubectl -n hostvol get csistoragecapacities -o jsonpath='{range .items[*]}{.storageClassName}{"\n"}{end}' | sort -u)
  [ "$have" = "$classes" ] && break; sleep 1
done
[ "$have" = "$classes" ] || die "CSIStorageCapacity: have [$have], want one per class [$classes]"
ts "capacity published for $(echo $classes)"
