#!/bin/bash
# deploy.sh: install hostvol into the e2e cluster the way an admin does,
#   kubectl apply -k deploy/kubernetes/components/snapshot-controller/crds
#   kubectl apply -k deploy/kubernetes/overlays/e2e
# and wait until it serves: the DaemonSet's pod ready (csi-snapshotter
# included), the snapshot-controller ready, the driver registered with the
# kubelet (CSINode), capacity published for every StorageClass.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
# The snapshot CRDs first: the overlay's VolumeSnapshotClass can only be
# made once they are Established.
crds=deploy/kubernetes/components/snapshot-controller/crds
kubectl apply -k "$REPO/$crds" >/dev/null
kubectl wait --for condition=Established --timeout=60s \
  crd/volumesnapshots.snapshot.storage.k8s.io crd/volumesnapshotcontents.snapshot.storage.k8s.io \
  crd/volumesnapshotclasses.snapshot.storage.k8s.io >/dev/null
ts "applied $crds: snapshot CRDs Established"
kubectl apply -k "$REPO/deploy/kubernetes/overlays/e2e" >/dev/null
ts "applied deploy/kubernetes/overlays/e2e"
kubectl -n hostvol rollout status ds/hostvol-node --timeout=180s >/dev/null || {
  kubectl -n hostvol describe pods | tail -40; kubectl -n hostvol logs ds/hostvol-node --all-containers --tail=40; exit 1; }
ts "DaemonSet hostvol-node ready: $(kubectl -n hostvol get pods -l app.kubernetes.io/component=node -o jsonpath='{range .items[*].spec.containers[*]}{.name}={.image} {end}')"
kubectl -n hostvol rollout status deploy/hostvol-snapshot-controller --timeout=120s >/dev/null || {
  kubectl -n hostvol describe pods -l app.kubernetes.io/component=snapshot-controller | tail -30
  kubectl -n hostvol logs deploy/hostvol-snapshot-controller --tail=40; exit 1; }
ts "Deployment hostvol-snapshot-controller ready"
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
