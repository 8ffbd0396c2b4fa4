#!/bin/bash
# 9. A node reboot under pods that hold volumes. Pods on a
#    directory claim, a loop ext4 claim, a loop xfs claim and a raw block
#    claim (examples/dir-pvc, loop-ext4, loop-xfs, block) and a pod with an
#    inline volume (examples/inline) write data. Then the node reboots, as
#    far as volumes go: the kubelet stops; every container of these pods and
#    of hostvol is killed (a reboot ends every process); every mount of
#    these volumes under the kubelet's directory is unmounted (the pods'
#    volume mounts, the CSI staging and block map mounts); every loop device on an image of the e2e pool is detached, the
#    kubelet's own on raw block volumes first; hostvol's pod is deleted (the
#    DaemonSet makes a new one) and the kubelet starts again. The pods are
#    deleted right away, so that the kubelet tears down what it finds on disk
#    and never sets the volumes up again. Every pod must terminate, the
#    inline volume's record, image and loop device must be gone from the
#    host, and new pods on the claims must see the data written before.
#
#    Only what these pods use is touched: a mount is unmounted only if it
#    lies under the kubelet's directory, on a path of one of these pods or
#    volumes, and shows one of hostvol's loop devices or the pool filesystem;
#    a loop device is detached only if its backing file is on the pool
#    (device and inode, lib.sh pool_loops) or is one of those loop devices.
#    Never the pool's own mount, the host's mounts or containerd's.
source "$(dirname "$0")/lib.sh"
new_ns
pods="hostvol-dir-pvc hostvol-loop-ext4 hostvol-loop-xfs hostvol-block hostvol-inline"
claims="hostvol-dir-pvc hostvol-loop-ext4 hostvol-loop-xfs hostvol-block"
images() { find "$POOL/images" -maxdepth 1 -name '*.img' 2>/dev/null | sort; }
hostvol_log() { cat "$E2E_WORK"/pod-logs/hostvol_hostvol-node-*/hostvol/*.log 2>/dev/null; }
before=$(images)
k apply -f "$EXAMPLES/dir-pvc/" -f "$EXAMPLES/loop-ext4/" -f "$EXAMPLES/loop-xfs/" \
  -f "$EXAMPLES/block/" -f "$EXAMPLES/inline/" >/dev/null
for p in $pods; do pod_ready $p 180; done

# Data first.
marker="reboot-$RANDOM-$(date +%s)"
for c in hostvol-dir-pvc hostvol-loop-ext4 hostvol-loop-xfs; do
  k exec $c -- sh -c "echo $marker > /data/reboot.txt && sync"
done
k exec hostvol-inline -- sh -c "echo $marker > /scratch/reboot.txt && sync"
blocksum=$(k exec hostvol-block -- sh -c 'dd if=/dev/urandom of=/tmp/pattern bs=1M count=4 2>/dev/null &&
  dd if=/tmp/pattern of=/dev/xvda bs=1M seek=64 conv=fsync 2>/dev/null && md5sum < /tmp/pattern')
ok "data written: $marker in the dir, ext4, xfs and inline volumes; 4MiB at 64MiB of the block device (md5 ${blocksum%% *})"
img=$(comm -13 <(echo "$before") <(images) | while read -r f; do
  # the inline volume's image: the one whose volume has no PV
  id=$(basename "$f" .img); kubectl get pv -o jsonpath='{.items[*].spec.csi.volumeHandle}' | grep -qw "$id" || echo "$f"; done)
inline_id=$(basename "$img" .img)
records() { find "$E2E_WORK/state" -name "$inline_id*" 2>/dev/null; }
recs=$(records | sed "s|$E2E_WORK/||" | tr '\n' ' ')
expect "the inline volume's image is in the pool ($img)" test -n "$img" -a -f "$img"
expect "the inline volume has records on the host: $recs" test -n "$recs"

# What belongs to this scenario: its pods, its volumes, their loop devices.
uids=$(k get pods -o jsonpath='{range .items[*]}{.metadata.uid}{"\n"}{end}')
pvs=$(k get pvc -o jsonpath='{range .items[*]}{.spec.volumeName}{"\n"}{end}')
handles=$(for pv in $pvs; do kubectl get pv "$pv" -o jsonpath='{.spec.csi.volumeHandle}{"\n"}'; done)
ids="$handles $inline_id"
# The kubelet's staging directory of a CSI volume: .../csi/<driver>/<sha256 of the handle>/globalmount.
shas=$(for h in $handles; do printf %s "$h" | sha256sum | cut -d' ' -f1; done)
# Loop devices on the pool (by backing device and inode) whose image is one
# of these volumes'.
our_loops() { pool_loops | while read -r d _ _ f; do id=$(basename "$f" .img); if [[ " $(echo $ids) " == *" $id "* ]]; then echo "$d"; fi; done; }
loops=$(our_loops)
expect "each of the 4 loop-backed volumes (ext4, xfs, block, inline) has a loop device on the pool: $(echo $loops)" \
  test "$(wc -w <<<"$loops")" = 4
ours_path() { # PATH: a path of this scenario's pods or volumes?
  local x
  for x in $uids $pvs $shas; do [[ $1 == *"/$x/"* || $1 == *"/$x" ]] && return 0; done
  return 1
}
# Mounts under the kubelet's directory showing a pool loop device, the pool
# filesystem, or (block) a loop device node bound onto a file.
pool_majmin=$(findmnt -n -o MAJ:MIN "$POOL_MNT" | tr -d " ")
loop_majmins=$(for d in $loops; do cat "/sys/block/${d#/dev/}/dev"; done)
hostvol_mounts() {
  findmnt -rn -o TARGET,MAJ:MIN,FSTYPE,FSROOT | awk -v k="$KUBELET_DIR/" -v pool="$pool_majmin" \
    -v loops="$(echo $loop_majmins)" -v nodes="$(for d in $loops; do printf '/%s ' "${d#/dev/}"; done)" '
    BEGIN { n = split(loops, a, " "); for (i = 1; i <= n; i++) L[a[i]] = 1
            n = split(nodes, b, " "); for (i = 1; i <= n; i++) N[b[i]] = 1 }
    index($1, k) == 1 && ($2 in L || $2 == pool || ($3 == "devtmpfs" && $4 in N)) { print $1 }' | sort -r
}
mounts=$(hostvol_mounts)
others=$(for m in $mounts; do ours_path "$m" || echo "$m"; done)
expect "every mount of a hostvol volume under $KUBELET_DIR is one of this scenario's ($(wc -l <<<"$mounts") mounts${others:+; not ours: $others})" \
  test -z "$others"
echo "    inline: $inline_id; claims: $(echo $handles)"

# The reboot.
s=$(date +%s)
kpid=$(cat "$E2E_WORK/run/kubelet.pid")
kill "$kpid"
for _ in $(seq 1 60); do kill -0 "$kpid" 2>/dev/null || break; sleep 0.5; done
kill -0 "$kpid" 2>/dev/null && kill -9 "$kpid"
ok "kubelet ($kpid) stopped"
ctrs=$(for n in "$NS" hostvol; do ctr -n k8s.io containers ls -q "labels.\"io.kubernetes.pod.namespace\"==$n"; done)
for c in $ctrs; do ctr -n k8s.io tasks kill -a -s SIGKILL "$c" >/dev/null 2>&1 || true; done
running() { for c in $ctrs; do ctr -n k8s.io tasks ls 2>/dev/null | awk -v c="$c" '$1 == c && $3 == "RUNNING"'; done; }
eventually 60 "every container of the scenario's pods and of hostvol is killed ($(wc -w <<<"$ctrs") containers and sandboxes)" \
  none running
# The kubelet's own loop device on a raw block volume holds its block map
# mount busy: it goes first.
for d in $(loops_backed_by $loops | awk '{print $1}'); do losetup -d "$d" && echo "    detached $d (the kubelet's, on a raw block volume)"; done
for m in $mounts; do umount "$m" || fail "umount $m"; done
expect "unmounted the volumes' mounts under $KUBELET_DIR: pods' volumes, staging and block map mounts ($(wc -l <<<"$mounts"))" \
  none hostvol_mounts
for d in $loops; do losetup -d "$d" || fail "losetup -d $d"; done
eventually 30 "detached the volumes' loop devices ($(echo $loops))" none our_loops
kubectl -n hostvol delete pod -l app.kubernetes.io/name=hostvol --wait=false >/dev/null
# As up.sh starts it, in a session of its own: run.sh's timeout signals
# this scenario's process group, and the kubelet must outlive the scenario
# (down.sh stops it by the PID recorded here).
( cd "$E2E_WORK" || exit 1
  setsid nohup "${KUBELET_CMD[@]}" >> logs/kubelet.log 2>&1 </dev/null 9>&- &
  echo $! > run/kubelet.pid )
kpid=$(cat "$E2E_WORK/run/kubelet.pid")
is_kubelet() { [ "$(cat "/proc/$kpid/comm" 2>/dev/null)" = kubelet ]; }
eventually 10 "hostvol's pod deleted, kubelet started again ($kpid): node down for $(( $(date +%s) - s ))s" is_kubelet
# Delete the pods before hostvol is back: the kubelet cannot set their
# volumes up again (no driver yet), so it tears down what it reconstructs
# from its directory after the reboot: publish targets and staging paths
# that are no longer mounted.
k delete pod --all --wait=false >/dev/null
ok "pods deleted"
kubectl -n hostvol rollout status ds/hostvol-node --timeout=180s >/dev/null || fail "hostvol's DaemonSet not ready after the reboot"
eventually 120 "node $NODE Ready and hostvol registered with the kubelet again" bash -c \
  "kubectl get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True &&
   kubectl get csinode $NODE -o jsonpath='{.spec.drivers[*].name}' | grep -qw hostvol.csi.io"

# Every pod terminates.
end=$(( $(date +%s) + 180 ))
while [ -n "$(k get pods -o name)" ] && [ "$(date +%s)" -lt $end ]; do sleep 2; done
left=$(k get pods -o jsonpath='{range .items[*]}{.metadata.name}{" "}{end}')
if [ -n "$left" ]; then
  echo "    pods still there 180s after deletion (Terminating): $left"
  echo "    hostvol's failed calls since the reboot (count, call, error):"
  hostvol_log | grep -E ' E[0-9]{4} .*"Call failed"' |
    sed -E 's/.*err="(.*)" method="([^"]*)".*/\2: \1/; s|/pods/[0-9a-f-]{36}/|/pods/<uid>/|g; s|/[0-9a-f-]{36}: |/<uid>: |g; s|pvc-[0-9a-f-]{36}|<pv>|g' |
    sort | uniq -c | sort -rn | head -8 | cut -c1-400 | sed 's/^/      /' || true
  echo "    the kubelet's failed teardowns (count, operation):"
  grep -E 'UnmountVolume|UnmapVolume|UnmountDevice|UnmapDevice' "$E2E_WORK/logs/kubelet.log" | grep -oE 'Error: [A-Za-z.]+ failed' |
    sort | uniq -c | sed 's/^/      /' || true
  # Leave the pool empty for what follows: force the pods out of the API
  # (the kubelet keeps failing on their volumes), so that the namespace,
  # the claims and their volumes can go.
  [ "${E2E_KEEP:-0}" = 1 ] || k delete pod --all --force --grace-period=0 >/dev/null 2>&1 || true
  fail "every pod terminates after the reboot (left: $left)"
fi
ok "every pod terminated (within $(( $(date +%s) - end + 180 ))s of the deletion)"

# The inline volume is gone, and nothing of the claims is attached.
eventually 60 "the inline volume's image is deleted ($img)" test ! -e "$img"
eventually 30 "the inline volume's records are deleted ($recs)" none records
eventually 60 "no loop device is attached to a pool image" none pool_loops

# The claims' data, in new pods.
for f in dir-pvc/dir-pvc loop-ext4/loop-ext4 loop-xfs/loop-xfs block/block; do
  example_pod "$EXAMPLES/$f.yaml" | k apply -f - >/dev/null
done
for c in $claims; do pod_ready $c 180; done
for c in hostvol-dir-pvc hostvol-loop-ext4 hostvol-loop-xfs; do
  expect "$c: the data written before the reboot is there" test "$(k exec $c -- cat /data/reboot.txt)" = "$marker"
done
sum=$(k exec hostvol-block -- sh -c 'dd if=/dev/xvda bs=1M skip=64 count=4 2>/dev/null | md5sum')
expect "hostvol-block: the 4MiB written before the reboot read back identical" test "${sum%% *}" = "${blocksum%% *}"
k delete pod --all --wait=true >/dev/null
cleanup_ns
