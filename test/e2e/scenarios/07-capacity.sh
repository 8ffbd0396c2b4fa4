#!/bin/bash
# 7. Capacity: the node's CSIStorageCapacity objects report the pool, and a
#    claim larger than the node can hold is not placed there: its pod and the
#    claim stay Pending, with an event saying why.
source "$(dirname "$0")/lib.sh"
pool_bytes=$(( $(stat -f -c '%b * %S' "$POOL") ))
ok "pool: $(( pool_bytes / 1024 / 1024 )) MiB ($(findmnt -n -o FSTYPE --target "$POOL"))"
for sc in hostvol-dir hostvol-loop-ext4 hostvol-loop-xfs; do
  q=$(kubectl -n hostvol get csistoragecapacities -o jsonpath="{range .items[?(@.storageClassName==\"$sc\")]}{.nodeTopology.matchLabels.topology\.hostvol\.csi\.io/node}={.capacity}{\"\\n\"}{end}")
  expect "$sc: one CSIStorageCapacity for node $NODE ($q)" test "$(grep -c "^$NODE=" <<<"$q")" = 1
  b=$(bytes "${q#*=}")
  expect "$sc: capacity $(( b / 1024 / 1024 )) MiB is the pool's free space: more than 1Gi, at most the pool" \
    test "$b" -gt 1073741824 -a "$b" -le "$pool_bytes"
done
new_ns
k apply -f - >/dev/null <<Y
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: too-big}
spec:
  storageClassName: hostvol-loop-xfs
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 100Gi}}
Y
claim_pod too-big too-big
eventually 60 "a 100Gi claim: the pod's event says the node lacks storage" \
  event_says pod/too-big "did not have enough free storage"
echo "    event: $(k get events --field-selector involvedObject.name=too-big,involvedObject.kind=Pod -o jsonpath='{.items[-1:].message}')"
sleep 10
expect "the claim stays Pending" test "$(pvc_phase too-big)" = Pending
expect "the pod stays Pending, on no node" test "$(k get pod too-big -o jsonpath='{.status.phase}/{.spec.nodeName}')" = "Pending/"
expect "no volume was created" test -z "$(kubectl get pv -o jsonpath="{range .items[?(@.spec.claimRef.name==\"too-big\")]}{.metadata.name}{end}")"
cleanup_ns
