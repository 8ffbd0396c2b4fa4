#!/bin/bash
# 1. Directory volume (examples/dir-pvc): the claim is Bound, the PV's node
#    affinity names the node, data survives deleting and recreating the pod,
#    and deleting the claim removes the data from the host.
source "$(dirname "$0")/lib.sh"
new_ns
k apply -f "$EXAMPLES/dir-pvc/" >/dev/null
pod_ready hostvol-dir-pvc
expect "claim Bound" test "$(pvc_phase hostvol-dir-pvc)" = Bound
pv=$(pvc_pv hostvol-dir-pvc)
aff=$(kubectl get pv "$pv" -o jsonpath='{range .spec.nodeAffinity.required.nodeSelectorTerms[*].matchExpressions[*]}{.key}={.values[*]}{"\n"}{end}')
expect "PV $pv node affinity is topology.hostvol.csi.io/node=$NODE (got: $aff)" test "$aff" = "topology.hostvol.csi.io/node=$NODE"
expect "pod runs on $NODE" test "$(k get pod hostvol-dir-pvc -o jsonpath='{.spec.nodeName}')" = "$NODE"
marker="kept-$RANDOM-$(date +%s)"
k exec hostvol-dir-pvc -- sh -c "echo $marker > /data/keep.txt"
hostfile=$(grep -rlx -- "$marker" "$POOL"/volumes/*/keep.txt 2>/dev/null || true)
expect "the pod's file is in the pool on the host ($hostfile)" test -n "$hostfile"
voldir=$(dirname "$hostfile")
k delete pod hostvol-dir-pvc --wait=true >/dev/null
k apply -f "$EXAMPLES/dir-pvc/" >/dev/null
pod_ready hostvol-dir-pvc
expect "data survives pod deletion and re-creation" test "$(k exec hostvol-dir-pvc -- cat /data/keep.txt)" = "$marker"
expect "same PV after re-creation" test "$(pvc_pv hostvol-dir-pvc)" = "$pv"
k delete -f "$EXAMPLES/dir-pvc/" --wait=true >/dev/null
eventually 120 "PV $pv deleted with its claim" bash -c "! kubectl get pv $pv"
expect "volume directory removed from the host ($voldir)" test ! -e "$voldir"
cleanup_ns
