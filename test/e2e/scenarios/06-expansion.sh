#!/bin/bash
# 6. Expansion: patching the claim's size grows the filesystem the pod sees.
#    XFS loop volume (examples/expansion): online, same pod.
#    ext4 loop volume (examples/loop-ext4): online where the node plugin has
#      CAP_SYS_RESOURCE; on a host without it (this one) hostvol documents
#      that the resize waits and completes when the volume is next staged:
#      the claim says so (NodeResizeError: "... restart the pod") and stays
#      at 1Gi while the pod runs; after the pod is recreated it sees 2Gi.
#    Directory volume (examples/dir-pvc): where the pool enforces directory
#      limits (the e2e pool is btrfs: qgroups), writing past 1Gi fails, and
#      after the claim grows to 2Gi the same pod writes more; on a pool that
#      cannot enforce, reported as not applicable.
source "$(dirname "$0")/lib.sh"
new_ns
grow() { k patch pvc "$1" -p '{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}' >/dev/null; }
cap() { k get pvc "$1" -o jsonpath='{.status.capacity.storage}'; }
k apply -f "$EXAMPLES/expansion/" -f "$EXAMPLES/loop-ext4/" -f "$EXAMPLES/dir-pvc/" >/dev/null
pod_ready hostvol-expansion; pod_ready hostvol-loop-ext4; pod_ready hostvol-dir-pvc

# XFS, online.
uid=$(k get pod hostvol-expansion -o jsonpath='{.metadata.uid}')
before=$(df_kib hostvol-expansion /data)
grow hostvol-expansion
eventually 120 "xfs: the running pod sees the filesystem grow to about 2Gi (was $before KiB)" \
  bash -c "[ \$(kubectl -n $NS exec hostvol-expansion -- df -k /data | awk 'NR==2{print \$2}') -ge $(( GiB * 19 / 10 )) ]"
eventually 60 "xfs: claim capacity is 2Gi" bash -c "[ \"\$(kubectl -n $NS get pvc hostvol-expansion -o jsonpath='{.status.capacity.storage}')\" = 2Gi ]"
expect "xfs: same pod, not restarted" test "$(k get pod hostvol-expansion -o jsonpath='{.metadata.uid}/{.status.containerStatuses[0].restartCount}')" = "$uid/0"

# ext4: online or at the next stage, depending on CAP_SYS_RESOURCE.
before=$(df_kib hostvol-loop-ext4 /data)
grow hostvol-loop-ext4
if (( (0x$(awk '/^CapBnd/{print $2}' /proc/self/status) >> 24) & 1 )); then
  eventually 120 "ext4: the running pod sees about 2Gi (online, CAP_SYS_RESOURCE present)" \
    bash -c "[ \$(kubectl -n $NS exec hostvol-loop-ext4 -- df -k /data | awk 'NR==2{print \$2}') -ge $(( GiB * 19 / 10 )) ]"
else
  # The image grows in NodeExpandVolume, which the kubelet calls for the
  # running pod some seconds later; hostvol then answers that the
  # filesystem grows at the next stage. The claim shows that answer: only
  # then is restarting the pod what the user is told to do.
  cond() { kubectl -n "$NS" get pvc hostvol-loop-ext4 -o jsonpath="{.status.conditions[?(@.type==\"$1\")].message}"; }
  eventually 180 "ext4: the claim shows the node's answer (NodeResizeError: ... restart the pod; no CAP_SYS_RESOURCE on this host)" \
    bash -c "kubectl -n $NS get pvc hostvol-loop-ext4 -o jsonpath='{.status.conditions[?(@.type==\"NodeResizeError\")].message}' | grep -q 'restart the pod'"
  echo "    NodeResizeError: $(cond NodeResizeError | sed 's/.*desc = //')"
  echo "    FileSystemResizePending: $(cond FileSystemResizePending)"
  expect "ext4: claim capacity still 1Gi" test "$(cap hostvol-loop-ext4)" = 1Gi
  expect "ext4: while the pod runs it still sees the old size ($(df_kib hostvol-loop-ext4 /data) KiB)" test "$(df_kib hostvol-loop-ext4 /data)" -lt $(( GiB * 11 / 10 ))
  k exec hostvol-loop-ext4 -- sh -c 'echo before-resize > /data/keep.txt'
  k delete pod hostvol-loop-ext4 --wait=true >/dev/null
  example_pod "$EXAMPLES/loop-ext4/loop-ext4.yaml" | k apply -f - >/dev/null
  pod_ready hostvol-loop-ext4
  eventually 120 "ext4: after the pod is recreated it sees about 2Gi (was $before KiB)" \
    bash -c "[ \$(kubectl -n $NS exec hostvol-loop-ext4 -- df -k /data | awk 'NR==2{print \$2}') -ge $(( GiB * 19 / 10 )) ]"
  expect "ext4: data kept across the offline grow" test "$(k exec hostvol-loop-ext4 -- cat /data/keep.txt)" = before-resize
fi
eventually 60 "ext4: claim capacity is 2Gi" bash -c "[ \"\$(kubectl -n $NS get pvc hostvol-loop-ext4 -o jsonpath='{.status.capacity.storage}')\" = 2Gi ]"

# Directory: does the pool enforce the 1Gi limit? What the pod sees is the
# write that fails: a btrfs qgroup or a project quota ends it with EDQUOT,
# while df keeps showing the whole pool.
fill() { k exec hostvol-dir-pvc -- sh -c "rm -f /data/fill; dd if=/dev/zero of=/data/fill bs=1M count=$1 conv=fsync 2>&1; echo exit=\$?"; }
out=$(fill 1300)
if grep -q "exit=0" <<<"$out"; then
  skip "dir: not applicable: the pool does not enforce directory limits (1300MiB written into a 1Gi directory volume), so there is no limit to grow"
else
  ok "dir: the pool enforces the 1Gi limit (writing 1300MiB: $(grep -m1 -iE 'quota|space' <<<"$out"))"
  k exec hostvol-dir-pvc -- rm -f /data/fill
  grow hostvol-dir-pvc
  eventually 60 "dir: claim capacity is 2Gi" bash -c "[ \"\$(kubectl -n $NS get pvc hostvol-dir-pvc -o jsonpath='{.status.capacity.storage}')\" = 2Gi ]"
  out=$(fill 1300)
  expect "dir: the same pod now writes 1300MiB" grep -q "exit=0" <<<"$out"
  out=$(fill 2300)
  expect "dir: and 2300MiB still fails ($(grep -m1 -iE 'quota|space' <<<"$out"))" bash -c '! grep -q "exit=0" <<<"$1"' _ "$out"
  k exec hostvol-dir-pvc -- rm -f /data/fill
fi
cleanup_ns
