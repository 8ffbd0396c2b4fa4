#!/bin/bash
# run.sh (make e2e): bring up the cluster (up.sh), install hostvol from
# deploy/kubernetes/overlays/e2e, check the Helm chart with a server-side dry
# run, run the scenarios, tear everything down (down.sh) and check that
# nothing is left. One PASS/FAIL/SKIP line per step; the last line is
# "N passed, N failed".
#   E2E_SCENARIOS="01 06"  run only these scenarios
#   E2E_KEEP=1             leave the cluster up afterwards (down.sh to stop it;
#                          the next make e2e tears it down before it starts)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
passed=0 failed=0 skipped=0 summary=
result() { # PASS|FAIL|SKIP name seconds
  summary="$summary$1 $2 ($3s)"$'\n'
  case $1 in PASS) passed=$((passed+1));; FAIL) failed=$((failed+1));; SKIP) skipped=$((skipped+1));; esac
  echo "$1 $2 ($3s)"
}
step() { # name cmd...: run, time and record
  local n=$1 s rc; shift; s=$(date +%s)
  echo "=== $n"
  "$@"; rc=$?
  case $rc in 0) result PASS "$n" $(( $(date +%s) - s ));; 2) result SKIP "$n" $(( $(date +%s) - s ));;
    *) result FAIL "$n" $(( $(date +%s) - s ));; esac
  return $rc
}
finish() {
  # Teardown wipes the work directory (etcd data, containerd's store, the
  # pool, hostvol's records): every run starts from an empty cluster.
  if [ "${E2E_KEEP:-0}" != 1 ]; then step teardown env WIPE=1 "$E2E_DIR/down.sh"; fi
  echo
  echo "e2e summary ($(( $(date +%s) - _t0 ))s):"
  printf '%s' "$summary"
  echo "$passed passed, $failed failed, $skipped skipped"
  [ "$failed" = 0 ]
}
# One e2e at a time on a machine: the cluster's ports and paths are fixed.
exec 9>/run/hostvol-e2e.lock
if ! flock -n 9; then
  ts "another make e2e runs on this machine; waiting for it (up to 30 min)"
  flock -w 1800 9 || die "another make e2e still holds /run/hostvol-e2e.lock"
fi
# A cluster an earlier run left up (E2E_KEEP=1, or a run killed before its
# teardown) would hand this run its claims, volumes and pool: tear it down
# first, so that every run starts from an empty cluster as CI's does.
if [ -d "$E2E_WORK" ]; then
  ts "$E2E_WORK exists (a cluster left by an earlier run): tearing it down first"
  WIPE=1 "$E2E_DIR/down.sh" || die "could not tear down the earlier cluster; see above"
fi
trap 'finish; exit $?' EXIT
trap 'exit 130' INT TERM
step cluster-up "$E2E_DIR/up.sh" || exit 1
step install-kustomize "$E2E_DIR/scripts/deploy.sh" || exit 1
step helm-dry-run "$E2E_DIR/scripts/helm-check.sh"
for s in "$E2E_DIR"/scenarios/[0-9][0-9]-*.sh; do
  n=$(basename "$s" .sh)
  if [ -n "${E2E_SCENARIOS:-}" ] && ! grep -qw "${n%%-*}" <<<"$E2E_SCENARIOS"; then continue; fi
  step "scenario-$n" timeout 900 "$s"
done
