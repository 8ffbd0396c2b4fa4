#!/bin/bash
# 4. Access modes. ReadWriteOncePod (examples/rwop): a second pod using the
#    claim does not start, and an event says why. ReadOnlyMany (examples/rox):
#    the pod's mount is read-only although the pod does not ask for it.
source "$(dirname "$0")/lib.sh"
new_ns
k apply -f "$EXAMPLES/rwop/" -f "$EXAMPLES/rox/" >/dev/null
pod_ready hostvol-rwop
expect "RWOP claim Bound" test "$(pvc_phase hostvol-rwop)" = Bound
claim_pod hostvol-rwop-second hostvol-rwop
eventually 60 "second pod: event says the claim is in use (ReadWriteOncePod)" \
  event_says pod/hostvol-rwop-second ReadWriteOncePod
sleep 5
expect "second pod stays Pending" test "$(k get pod hostvol-rwop-second -o jsonpath='{.status.phase}')" = Pending
echo "    event: $(k get events --field-selector involvedObject.name=hostvol-rwop-second -o jsonpath='{.items[0].reason}: {.items[0].message}')"
expect "first pod still Running" test "$(k get pod hostvol-rwop -o jsonpath='{.status.phase}')" = Running

pod_ready hostvol-rox
expect "ROX claim Bound" test "$(pvc_phase hostvol-rox)" = Bound
opts=$(k exec hostvol-rox -- sh -c "grep ' /data ' /proc/mounts | cut -d' ' -f4")
expect "/data is mounted ro in the pod ($opts)" bash -c '[[ ,$1, == *,ro,* ]]' _ "$opts"
expect "writing to /data fails in the pod" bash -c "! kubectl -n $NS exec hostvol-rox -- touch /data/probe 2>/dev/null"
eventually 30 "the example's own check prints 'read-only, as expected'" \
  bash -c "kubectl -n $NS logs hostvol-rox | grep -q 'read-only, as expected'"
cleanup_ns
