#!/bin/bash
# 10. Snapshots, restores and clones (components/snapshots and
#     components/snapshot-controller in the e2e overlay), for two sources:
#       dir  a directory volume (hostvol-dir) on the btrfs pool: a subvolume
#            with a qgroup limit, snapshotted as a read-only subvolume;
#       xfs  an xfs loop volume (hostvol-loop-xfs): its image reflinked
#            (the e2e pool is btrfs) while the filesystem is frozen.
#     A pod appends a numbered line to /data/lines every 0.1 s. While it
#     writes: a VolumeSnapshot (class hostvol-snapshot) must become
#     readyToUse; a claim restored from it (dataSource VolumeSnapshot), in a
#     pod placed on the snapshot's node as the README says, must hold lines
#     1..N of the source, no line torn or garbled, with N between the
#     source's count before the snapshot was asked for and its count once
#     the snapshot was ready, and must not change as the source goes on; a
#     clone (dataSource PersistentVolumeClaim) likewise, from the count
#     before it was asked for. Then deletion in both orders: dir deletes its
#     source claim while the snapshot exists (the restore keeps its data),
#     then the snapshot; xfs deletes its snapshot while the restored claim
#     exists (which keeps its data), then the claims. At the end no
#     VolumeSnapshotContent of the namespace is left, every PV is deleted,
#     and the pool holds no snapshot data.
source "$(dirname "$0")/lib.sh"
eval "$(declare -f diagnose | sed '1s/^diagnose/base_diagnose/')"
diagnose() {
  base_diagnose
  echo "---- snapshots ($NS) ----"
  k get volumesnapshot -o wide 2>&1 | sed 's/^/  /'
  kubectl get volumesnapshotcontent -o wide 2>&1 | sed 's/^/  /'
  k get volumesnapshot -o jsonpath='{range .items[*]}{.metadata.name}: {.status.error.message}{"\n"}{end}' 2>&1 | sed 's/^/  error: /'
  kubectl -n hostvol logs ds/hostvol-node -c csi-snapshotter --tail=20 2>&1 | sed 's/^/  csi-snapshotter: /'
  kubectl -n hostvol logs deploy/hostvol-snapshot-controller --tail=20 2>&1 | sed 's/^/  snapshot-controller: /'
  echo "----"
}

# The snapshot machinery the overlay installs.
for c in volumesnapshots volumesnapshotcontents volumesnapshotclasses; do
  kubectl wait --for condition=Established --timeout=30s "crd/$c.snapshot.storage.k8s.io" >/dev/null ||
    fail "CRD $c.snapshot.storage.k8s.io not Established"
done
ok "snapshot CRDs Established"
kubectl -n hostvol rollout status deploy/hostvol-snapshot-controller --timeout=120s >/dev/null ||
  fail "the snapshot-controller Deployment is not ready"
kubectl -n hostvol rollout status ds/hostvol-node --timeout=180s >/dev/null || fail "hostvol's DaemonSet is not ready"
sidecar_ready() {
  kubectl -n hostvol get pods -l app.kubernetes.io/component=node \
    -o jsonpath='{range .items[*].status.containerStatuses[?(@.name=="csi-snapshotter")]}{.ready}{"\n"}{end}' | grep -qx true
}
expect "snapshot-controller ready, csi-snapshotter ready in hostvol's pod" sidecar_ready
expect "VolumeSnapshotClass hostvol-snapshot: driver hostvol.csi.io, deletionPolicy Delete" test \
  "$(kubectl get volumesnapshotclass hostvol-snapshot -o jsonpath='{.driver}/{.deletionPolicy}')" = hostvol.csi.io/Delete

new_ns
# Every line is "%08d PAD": anything else (a torn line, zeros from a block
# not yet written) is caught.
PAD=hostvol-e2e-snapshot-line-0123456789abcdefghijklmnopqrstuvwxyz
# claim NAME CLASS [SOURCE-KIND SOURCE-NAME]: a 1Gi claim, from a snapshot
# or a claim when a source is given.
claim() {
  # (No "$(test && echo)" here: under set -e its status would end the
  # script silently when the test is false.)
  local ds= group=
  [ "${3:-}" != VolumeSnapshot ] || group=', apiGroup: snapshot.storage.k8s.io'
  if [ $# -gt 2 ]; then
    ds="  dataSource: {kind: $3, name: $4$group}"
  fi
  k apply -f - >/dev/null <<Y
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1}
spec:
  storageClassName: $2
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
$ds
Y
}
# writer NAME CLAIM: appends line i to /data/lines every 0.1 s, each line
# one write(2).
writer() {
  k apply -f - >/dev/null <<Y
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: c
      image: "busybox:1.37.0"
      command:
        - sh
        - -c
        - |
          i=0
          while :; do i=\$((i + 1)); printf '%08d $PAD\n' \$i >> /data/lines; usleep 100000; done
      volumeMounts: [{name: data, mountPath: /data}]
  volumes:
    - {name: data, persistentVolumeClaim: {claimName: $2}}
Y
}
# reader NAME CLAIM NODE: a pod on the claim, placed on NODE by the label
# topology.hostvol.csi.io/node, as a restore must be (README, "Snapshots").
reader() { claim_pod "$@"; }
# count POD: lines in POD's /data/lines.
count() { k exec "$1" -- sh -c 'wc -l < /data/lines' | tr -d ' '; }
# lines POD: N when POD's /data/lines is lines 1..N, each whole; else a
# message naming the first bad line, and non-zero.
lines() {
  k exec -i "$1" -- sh -s "$PAD" <<'SH'
f=/data/lines
[ -s $f ] || { echo "$f is missing or empty"; exit 1; }
[ -z "$(tail -c 1 $f)" ] || { echo "the last line is torn: '$(tail -n 1 $f | head -c 80)'"; exit 1; }
awk -v pad="$1" '$0 != sprintf("%08d %s", NR, pad) { printf "line %d is \"%s\"\n", NR, substr($0, 1, 80); bad = 1; exit 1 }
  END { if (!bad) print NR }' $f
SH
}
# consistent WHAT POD MIN MAX: POD's file is lines 1..N with MIN <= N <= MAX.
consistent() {
  local out n
  out=$(lines "$2") || fail "$1: not a consistent state of the source: $out"
  n=$out
  [ "$n" -ge "$3" ] && [ "$n" -le "$4" ] ||
    fail "$1: holds lines 1..$n, want between $3 (before it was asked for) and $4"
  ok "$1: lines 1..$n, none torn ($3 <= $n <= $4)"
  eval "${1//[^a-z]/_}_n=$n"
}
snap() { # NAME CLAIM
  k apply -f - >/dev/null <<Y
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: $1}
spec:
  volumeSnapshotClassName: hostvol-snapshot
  source: {persistentVolumeClaimName: $2}
Y
}
snap_ready() { [ "$(k get volumesnapshot "$1" -o jsonpath='{.status.readyToUse}')" = true ]; }
content_of() { k get volumesnapshot "$1" -o jsonpath='{.status.boundVolumeSnapshotContentName}'; }
ns_contents() {
  kubectl get volumesnapshotcontent -o jsonpath="{range .items[?(@.spec.volumeSnapshotRef.namespace==\"$NS\")]}{.metadata.name}{\"\\n\"}{end}"
}
gone() { ! kubectl get "$1" >/dev/null 2>&1; }

# Sources, and their writers.
claim dir-src hostvol-dir; claim xfs-src hostvol-loop-xfs
writer dir-writer dir-src; writer xfs-writer xfs-src
pod_ready dir-writer; pod_ready xfs-writer
eventually 30 "the writers are writing (20 lines each)" \
  bash -c "[ \"\$(kubectl -n $NS exec dir-writer -- sh -c 'wc -l < /data/lines')\" -ge 20 ] && [ \"\$(kubectl -n $NS exec xfs-writer -- sh -c 'wc -l < /data/lines')\" -ge 20 ]"
node=$(kubectl get pv "$(pvc_pv dir-src)" -o jsonpath='{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[?(@.key=="topology.hostvol.csi.io/node")].values[0]}')
[ -n "$node" ] || fail "the source PV has no topology.hostvol.csi.io/node affinity"

# Snapshots while the writers write.
for v in dir xfs; do eval "${v}_before=$(count $v-writer)"; snap $v-snap $v-src; done
eventually 120 "dir-snap readyToUse" snap_ready dir-snap
eventually 120 "xfs-snap readyToUse" snap_ready xfs-snap
for v in dir xfs; do
  eval "${v}_after=$(count $v-writer)"
  c=$(content_of $v-snap)
  expect "$v-snap: content $c is on node $node (snapshot.storage.kubernetes.io/managed-by), handle $(kubectl get volumesnapshotcontent "$c" -o jsonpath='{.status.snapshotHandle}')" test \
    "$(kubectl get volumesnapshotcontent "$c" -o jsonpath='{.metadata.labels.snapshot\.storage\.kubernetes\.io/managed-by}')" = "$node"
  rs=$(k get volumesnapshot $v-snap -o jsonpath='{.status.restoreSize}')
  expect "$v-snap: restoreSize $rs is the source's 1Gi" test "$(bytes "${rs:-0}")" = "$(bytes 1Gi)"
done

# Restores, on the snapshot's node.
claim dir-restore hostvol-dir VolumeSnapshot dir-snap; claim xfs-restore hostvol-loop-xfs VolumeSnapshot xfs-snap
reader dir-restore dir-restore "$node"; reader xfs-restore xfs-restore "$node"
pod_ready dir-restore; pod_ready xfs-restore
consistent "dir restore" dir-restore "$dir_before" "$dir_after"
consistent "xfs restore" xfs-restore "$xfs_before" "$xfs_after"

# Clones of the sources, still being written.
for v in dir xfs; do eval "${v}_before=$(count $v-writer)"; done
claim dir-clone hostvol-dir PersistentVolumeClaim dir-src; claim xfs-clone hostvol-loop-xfs PersistentVolumeClaim xfs-src
reader dir-clone dir-clone "$node"; reader xfs-clone xfs-clone "$node"
pod_ready dir-clone; pod_ready xfs-clone
consistent "dir clone" dir-clone "$dir_before" "$(count dir-writer)"
consistent "xfs clone" xfs-clone "$xfs_before" "$(count xfs-writer)"

# Restores and clones are volumes of their own: the writers go on, they
# do not change.
sleep 2
for v in dir_restore xfs_restore dir_clone xfs_clone; do
  eval "want=\$${v}_n"
  expect "${v/_/ }: still lines 1..$want while the source grows to $(count ${v%_*}-writer)" test "$(lines ${v/_/-})" = "$want"
done

# dir: the source claim goes first, while its snapshot exists.
src_pv=$(pvc_pv dir-src)
k delete pod dir-writer --wait=true >/dev/null
k delete pvc dir-src --wait=false >/dev/null
eventually 120 "dir: source claim and its PV $src_pv deleted while dir-snap exists" gone "pv/$src_pv"
expect "dir: dir-snap still readyToUse" snap_ready dir-snap
expect "dir: the restore still holds lines 1..$dir_restore_n" test "$(lines dir-restore)" = "$dir_restore_n"
claim dir-restore2 hostvol-dir VolumeSnapshot dir-snap; reader dir-restore2 dir-restore2 "$node"
pod_ready dir-restore2
expect "dir: a new restore after the source is gone holds lines 1..$dir_restore_n" test "$(lines dir-restore2)" = "$dir_restore_n"
c=$(content_of dir-snap)
k delete volumesnapshot dir-snap --wait=false >/dev/null
eventually 120 "dir: dir-snap and its content $c deleted" gone "volumesnapshotcontent/$c"
expect "dir: the restores outlive the snapshot (lines 1..$dir_restore_n)" test "$(lines dir-restore)/$(lines dir-restore2)" = "$dir_restore_n/$dir_restore_n"

# xfs: the snapshot goes first, while a claim restored from it exists.
c=$(content_of xfs-snap)
k delete volumesnapshot xfs-snap --wait=false >/dev/null
eventually 120 "xfs: xfs-snap and its content $c deleted while xfs-restore exists" gone "volumesnapshotcontent/$c"
expect "xfs: the restore still holds lines 1..$xfs_restore_n" test "$(lines xfs-restore)" = "$xfs_restore_n"
expect "xfs: the clone still holds lines 1..$xfs_clone_n" test "$(lines xfs-clone)" = "$xfs_clone_n"

# Everything else, then nothing may be left: no content, no PV, no
# snapshot data in the pool.
pvs=$(kubectl get pv -o jsonpath="{range .items[?(@.spec.claimRef.namespace==\"$NS\")]}{.metadata.name}{\" \"}{end}")
k delete pod --all --wait=true >/dev/null
k delete pvc --all --wait=false >/dev/null
for pv in $pvs; do eventually 120 "PV $pv deleted" gone "pv/$pv"; done
expect "no VolumeSnapshotContent of $NS is left" none ns_contents
expect "no snapshot data left in the pool ($POOL/snapshots)" none find "$POOL/snapshots" -mindepth 1 -maxdepth 1
cleanup_ns
