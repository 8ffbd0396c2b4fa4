# Helpers of the e2e scenarios. Sourced by each scenario script, which runs
# against the cluster of up.sh with hostvol installed (run.sh does both).
# A scenario prints one "  ok: ..." line per assertion and exits non-zero at
# the first failure, after printing what the user would look at
# (kubectl describe, events, the node plugin's log).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
EXAMPLES=$REPO/examples
POOL=$E2E_WORK/pool/default
SCENARIO=$(basename "$0" .sh)
NS=e2e-${SCENARIO#[0-9][0-9]-}
k() { kubectl -n "$NS" "$@"; }
ok() { echo "  ok: $*"; }
skip() { echo "  skip: $*"; }
diagnose() {
  echo "---- diagnostics ($NS) ----"
  k get pvc,pod -o wide 2>&1 | sed 's/^/  /'
  kubectl get pv -o wide 2>&1 | sed 's/^/  /'
  k get events --sort-by=.lastTimestamp 2>&1 | tail -25 | sed 's/^/  /'
  kubectl -n hostvol logs ds/hostvol-node -c hostvol --tail=30 2>&1 | sed 's/^/  hostvol: /'
  echo "----"
}
fail() {
  echo "  FAILED: $*"; diagnose
  # Leave the next scenarios an empty pool, unless the cluster is kept for a look.
  [ "${E2E_KEEP:-0}" = 1 ] || timeout 180 kubectl delete ns "$NS" --wait=true >/dev/null 2>&1 || true
  exit 1
}
# A command that fails outside expect/eventually/fail ends the scenario
# under set -e: say which, with the diagnostics, never silently.
set -E
unexpected() {
  trap - ERR
  fail "unexpected: \"$3\" exited $1 (line $2 of $SCENARIO.sh or a helper)"
}
trap 'unexpected $? $LINENO "$BASH_COMMAND"' ERR
# expect DESCRIPTION CMD...: CMD must succeed.
expect() { local d=$1; shift; if "$@"; then ok "$d"; else fail "$d"; fi; }
# eventually TIMEOUT DESCRIPTION CMD...: CMD must succeed within TIMEOUT s.
eventually() {
  local to=$1 d=$2; shift 2
  local end=$(( $(date +%s) + to ))
  while :; do
    if "$@" >/dev/null 2>&1; then ok "$d"; return 0; fi
    [ "$(date +%s)" -ge $end ] && fail "$d (not within ${to}s)"
    sleep 2
  done
}
new_ns() {
  kubectl delete ns "$NS" --ignore-not-found --wait=true >/dev/null
  kubectl create ns "$NS" >/dev/null
  kubectl label ns "$NS" hostvol-e2e=scenario >/dev/null
  # Wait for the namespace's default service account (pods need it).
  for _ in $(seq 1 30); do k get sa default >/dev/null 2>&1 && return; sleep 1; done
}
# Deleting the namespace deletes claims, then their volumes: wait until the
# PVs are gone too, so that the next scenario starts from an empty pool.
cleanup_ns() {
  local pvs; pvs=$(kubectl get pv -o jsonpath="{range .items[?(@.spec.claimRef.namespace==\"$NS\")]}{.metadata.name}{\"\\n\"}{end}")
  kubectl delete ns "$NS" --wait=true --timeout=180s >/dev/null
  for pv in $pvs; do kubectl wait --for=delete "pv/$pv" --timeout=120s >/dev/null 2>&1 || fail "PV $pv not deleted"; done
}
# none CMD...: CMD prints nothing (for eventually: the command runs anew
# each time, unlike test -z "$(CMD)").
none() { [ -z "$("$@")" ]; }
pod_ready() { k wait --for=condition=Ready "pod/$1" --timeout="${2:-120}s" >/dev/null || fail "pod $1 not Ready"; ok "pod $1 Ready"; }
pvc_phase() { k get pvc "$1" -o jsonpath='{.status.phase}'; }
pvc_pv() { k get pvc "$1" -o jsonpath='{.spec.volumeName}'; }
# Size in KiB of the filesystem mounted at PATH in POD, as the pod sees it.
df_kib() { k exec "$1" -- df -k "$2" | awk 'NR == 2 {print $2}'; }
GiB=1048576   # in KiB
# A quantity (10Gi, 512Mi, 9876543Ki, 1G, 12345) in bytes.
bytes() {
  local q=$1 n u
  n=${q%%[A-Za-z]*}; u=${q#"$n"}
  case $u in
    "") echo "$n" ;; Ki) echo $(( n * 1024 )) ;; Mi) echo $(( n * 1024**2 )) ;;
    Gi) echo $(( n * 1024**3 )) ;; Ti) echo $(( n * 1024**4 )) ;; k) echo $(( n * 1000 )) ;;
    M) echo $(( n * 1000**2 )) ;; G) echo $(( n * 1000**3 )) ;; T) echo $(( n * 1000**4 )) ;;
    *) echo "bytes: cannot parse $q" >&2; return 1 ;;
  esac
}
# The Pod document of an example file: to recreate the pod alone (applying
# the whole file again would also try to set the claim back to its size).
example_pod() { awk -v RS='\n---\n' '/(^|\n)kind: Pod(\n|$)/' "$1"; }
# Does an event about OBJECT (kind/name) contain TEXT?
# claim_pod NAME CLAIM [NODE]: a busybox pod NAME that mounts claim CLAIM
# at /data; on NODE (by the label topology.hostvol.csi.io/node) if given.
claim_pod() {
  local sel=
  [ -z "${3:-}" ] || sel="  nodeSelector: {topology.hostvol.csi.io/node: $3}"
  k apply -f - >/dev/null <<Y
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  terminationGracePeriodSeconds: 1
$sel
  containers:
    - {name: c, image: "busybox:1.37.0", command: [sleep, "86400"], volumeMounts: [{name: data, mountPath: /data}]}
  volumes:
    - {name: data, persistentVolumeClaim: {claimName: $2}}
Y
}
event_says() { k get events --field-selector "involvedObject.name=${1#*/}" -o jsonpath='{range .items[*]}{.reason}: {.message}{"\n"}{end}' | grep -q -- "$2"; }
