#!/bin/bash
# 5. StatefulSet (examples/statefulset): three pods, three Bound claims;
#    scaling down and up again keeps each claim and its data.
source "$(dirname "$0")/lib.sh"
new_ns
k apply -f "$EXAMPLES/statefulset/" >/dev/null
k rollout status sts/hostvol-web --timeout=300s >/dev/null || fail "StatefulSet not ready"
ok "3 replicas ready"
claims=$(k get pvc -o jsonpath='{range .items[*]}{.metadata.name}={.status.phase}/{.spec.volumeName}{"\n"}{end}' | sort)
expect "three Bound claims: $(echo $claims | sed 's|/pvc-[^ ]*||g')" test "$(grep -c '=Bound/pvc-' <<<"$claims")" = 3
for i in 0 1 2; do
  k exec hostvol-web-$i -- sh -c "echo data-of-$i > /data/marker"
done
ids=$(for i in 0 1 2; do k exec hostvol-web-$i -- cat /data/identity.txt; done)
k scale sts/hostvol-web --replicas=1 >/dev/null
eventually 120 "scaled down to 1 pod" bash -c "[ \"\$(kubectl -n $NS get pods -l app.kubernetes.io/name=hostvol-web -o name | wc -l)\" = 1 ]"
expect "all three claims kept while scaled down" test "$(k get pvc -o jsonpath='{range .items[*]}{.metadata.name}={.status.phase}/{.spec.volumeName}{"\n"}{end}' | sort)" = "$claims"
k scale sts/hostvol-web --replicas=3 >/dev/null
k rollout status sts/hostvol-web --timeout=300s >/dev/null || fail "StatefulSet not ready after scale-up"
ok "scaled up to 3 again"
expect "the same claims and volumes after scale-up" test "$(k get pvc -o jsonpath='{range .items[*]}{.metadata.name}={.status.phase}/{.spec.volumeName}{"\n"}{end}' | sort)" = "$claims"
for i in 0 1 2; do
  expect "hostvol-web-$i has its own data back" test "$(k exec hostvol-web-$i -- cat /data/marker)" = "data-of-$i"
done
expect "identities unchanged (first started ...)" test "$(for i in 0 1 2; do k exec hostvol-web-$i -- cat /data/identity.txt; done)" = "$ids"
k delete -f "$EXAMPLES/statefulset/" --wait=true >/dev/null
k delete pvc --all --wait=true >/dev/null
cleanup_ns
