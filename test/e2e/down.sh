#!/bin/bash
# down.sh: stop what up.sh started and remove what it left on the host, then
# check that nothing of it is left: no process, mount, loop device, iptables
# chain, cgroup or bridge. Prints what it finds and exits non-zero if
# anything is left. WIPE=1 also deletes $E2E_WORK (etcd and containerd data,
# certificates, the pool image) and the kubelet's pod and CSI volume
# directories; the caches in $E2E_CACHE stay.
#
# Only what is recorded as ours is touched: processes by the PIDs in
# $E2E_WORK/run, mounts under $KUBELET_DIR, $E2E_WORK and our containerd
# state directory, loop devices backed by the pool image or by a file on the
# pool (by device and inode: lib.sh, pool_loops) and the kubelet's loop
# devices on those, KUBE-* chains and kubepods cgroups that were not there
# before up.sh. A loop device still on the pool once Kubernetes has unwound
# is a leak: it is reported and detached, and down.sh fails.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
RUN=/run/hostvol-e2e
[ -d "$E2E_WORK/run" ] || { echo "e2e down: nothing to do ($E2E_WORK/run missing)"; exit 0; }
cd "$E2E_WORK"
alive() { [ -f run/$1.pid ] && kill -0 "$(cat run/$1.pid)" 2>/dev/null; }
stop() { # name
  alive "$1" || { rm -f run/$1.pid; return 0; }
  local p; p=$(cat run/$1.pid); kill "$p"
  for _ in $(seq 1 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$p" 2>/dev/null && kill -9 "$p"
  rm -f run/$1.pid; ts "stopped $1 ($p)"
}

# 1. Let Kubernetes unwind first, so that volumes are unpublished, unstaged
#    and deleted by the driver itself: test namespaces (pods, then claims),
#    then the claims' volumes, and only then hostvol. A namespace is gone
#    once its pods are, which is after NodeUnpublishVolume but before the
#    kubelet's NodeUnstageVolume and the provisioner's DeleteVolume: both
#    still need hostvol. Hence the wait for the PVs (DeleteVolume refuses an
#    attached volume, so a PV gone is a volume unstaged, detached and
#    deleted) and for the snapshot contents, then the DaemonSet and the
#    snapshot-controller's Deployment (else they make their pods again),
#    then any pod left.
if alive kube-apiserver && alive kubelet; then
  for ns in $(kubectl get ns -l hostvol-e2e=scenario -o name 2>/dev/null); do
    timeout 120 kubectl delete "$ns" --wait=true >/dev/null 2>&1 || true
  done
  timeout 60 kubectl delete pods --all -A --field-selector metadata.namespace!=hostvol --grace-period=1 --wait=true >/dev/null 2>&1 || true
  if [ -n "$(kubectl get pv -o name 2>/dev/null)" ]; then
    timeout 130 kubectl wait --for=delete pv --all --timeout=120s >/dev/null 2>&1 ||
      echo "e2e down: volumes not deleted within 120s: $(kubectl get pv -o name 2>/dev/null | tr '\n' ' ')"
  fi
  # Snapshot contents (deletionPolicy Delete) are deleted by hostvol too,
  # through the snapshot-controller and the csi-snapshotter sidecar.
  if [ -n "$(kubectl get volumesnapshotcontents -o name 2>/dev/null)" ]; then
    timeout 70 kubectl wait --for=delete volumesnapshotcontents --all --timeout=60s >/dev/null 2>&1 ||
      echo "e2e down: snapshot contents not deleted within 60s: $(kubectl get volumesnapshotcontents -o name 2>/dev/null | tr '\n' ' ')"
  fi
  timeout 60 kubectl -n hostvol delete daemonset,deployment --all --wait=true >/dev/null 2>&1 || true
  timeout 60 kubectl delete pods --all -A --grace-period=1 --wait=true >/dev/null 2>&1 || true
fi
# 2. Processes, kubelet first (so it restarts nothing), containers, containerd.
for c in kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop $c; done
if alive containerd; then
  for t in $(ctr -n k8s.io tasks ls -q 2>/dev/null); do ctr -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
  sleep 1
  for t in $(ctr -n k8s.io tasks ls -q 2>/dev/null); do ctr -n k8s.io tasks delete -f "$t" >/dev/null 2>&1; done
  for c in $(ctr -n k8s.io containers ls -q 2>/dev/null); do ctr -n k8s.io containers delete "$c" >/dev/null 2>&1; done
fi
stop containerd
# 3. Mounts, deepest first: pod volumes and hostvol's staging mounts under the
#    kubelet dir, container root filesystems, network namespaces; then the
#    loop devices of hostvol's loop volumes (backing files in the pool), the
#    pool itself, its loop device.
ours() { findmnt -rn -o TARGET | grep -E "^($KUBELET_DIR/|$RUN/|$E2E_WORK/)" | sort -r; }
loops_under() { losetup -nO NAME,BACK-FILE 2>/dev/null | awk -v w="$1" 'index($2, w) == 1 {print $1}'; }
detach() { # device what: LOOP_CLR_FD, then wait (10 s at most) for the last close
  losetup -d "$1" 2>/dev/null || return 1
  for _ in $(seq 1 50); do losetup "$1" >/dev/null 2>&1 || { ts "detached $1 ($2)"; return 0; }; sleep 0.2; done
  echo "e2e down: $1 ($2) is still attached: something holds it open"; return 1
}
pool_devs >/dev/null   # the pool's device numbers, while it is mounted
for m in $(ours | grep -vx "$E2E_WORK/pool"); do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
# Kubernetes has unwound (1.) and hostvol is gone (2.): it should have
# detached every image it attached, so a loop device backed by a file on the
# pool now is a leak. Found by backing device and inode (lib.sh, pool_loops),
# each is reported with what hostvol logged about its volume and detached,
# so that the pool unmounts and the next run starts clean; down.sh then
# exits non-zero: the run fails. The kubelet's own loop devices on raw block
# volumes (backed by hostvol's loop device) go first: they hold it open.
leaked=0
leaks=$(pool_loops)
if [ -n "$leaks" ]; then
  leaked=1
  while read -r d majmin ino _; do
    [ -n "$d" ] || continue
    echo "e2e down: LEAK: $d, the kubelet's loop device on a raw block volume, holds hostvol's loop device (backing $majmin inode $ino)"
    detach "$d" "the kubelet's"
  done <<<"$(loops_backed_by $(awk '{print $1}' <<<"$leaks"))"
  while read -r d majmin ino file; do
    id=$(basename "$file" .img); img=$(find "$POOL_MNT"/*/images -maxdepth 1 -inum "$ino" 2>/dev/null | head -1)
    echo "e2e down: LEAK: $d is attached to a pool image after Kubernetes unwound: backing $majmin inode $ino, named $file${img:+ (on the host: $img)}"
    grep -hs -- "$id" "$E2E_WORK"/pod-logs/hostvol_hostvol-node-*/hostvol/*.log | tail -15 | sed 's/^/    hostvol: /'
    detach "$d" "a leaked loop volume"
  done <<<"$leaks"
fi
for m in $(ours); do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
if [ -f run/kubelet.bind ] && findmnt -n "$KUBELET_DIR" >/dev/null; then
  umount "$KUBELET_DIR" 2>/dev/null || umount -l "$KUBELET_DIR"; rm -f run/kubelet.bind
fi
# 4. The pool's loop device (the image's device and inode: losetup -j), and
#    any other loop device backed by a file under $E2E_WORK.
for d in $(losetup -j "$POOL_IMG" 2>/dev/null | cut -d: -f1) $(loops_under "$E2E_WORK/"); do
  detach "$d" "the pool's"
done
rm -f run/pool.loop
# 5. Network: the CNI bridge, netns files, firewall chains that are new.
ip link del "$BRIDGE" 2>/dev/null
if iptables -t nat -S HOSTVOL-E2E >/dev/null 2>&1; then
  iptables -t nat -D PREROUTING -i "$BRIDGE" -j HOSTVOL-E2E 2>/dev/null
  iptables -t nat -F HOSTVOL-E2E; iptables -t nat -X HOSTVOL-E2E && ts "removed iptables/nat chain HOSTVOL-E2E"
fi
for f in /run/netns/cni-* /var/run/netns/cni-*; do
  [ -e "$f" ] && ! findmnt -n "$f" >/dev/null && grep -qs "${f##*/}" "$E2E_WORK"/cni/ipam/*/* 2>/dev/null && rm -f "$f"
done
before=$(cat run/host-before 2>/dev/null)
for ipt in iptables ip6tables; do
  for t in filter nat mangle; do
    new=$($ipt -t $t -S 2>/dev/null | awk '/^-N KUBE-/{print $2}' | while read -r ch; do
      grep -qxF "chain $ipt/$t $ch" <<<"$before" || echo "$ch"; done)
    [ -z "$new" ] && continue
    for ch in $new; do   # jumps to the chain from anywhere, then the chain
      $ipt -t $t -S 2>/dev/null | grep -- "-j $ch\( \|$\)" | sed 's/^-A/-D/' | while read -r rule; do
        eval "$ipt -t $t $rule" 2>/dev/null; done
    done
    for ch in $new; do $ipt -t $t -F "$ch" 2>/dev/null; done
    for ch in $new; do $ipt -t $t -X "$ch" 2>/dev/null && ts "removed $ipt/$t chain $ch"; done
  done
done
# 6. The kubelet's cgroups (cgroupfs driver, v1 hierarchies), if it made them.
for h in /sys/fs/cgroup/*/kubepods; do
  [ -d "$h" ] || continue
  grep -qxF "cgroup $h" <<<"$before" && continue
  find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null
done

# 7. Check.
left=0
report() { echo "e2e down: LEFT: $*"; left=1; }
for f in run/*.pid; do [ -e "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && report "process $(cat "$f") ($f)"; done
for p in $(pgrep -f "containerd-shim.*$RUN/containerd" 2>/dev/null); do report "process $p (containerd-shim)"; done
for p in $(pgrep -x hostvol 2>/dev/null); do   # ours ran in a pod: a kubepods cgroup
  grep -qs kubepods "/proc/$p/cgroup" && report "process $p (hostvol, in a pod)"; done
for m in $(ours); do report "mount $m"; done
[ -f run/kubelet.bind ] && findmnt -n "$KUBELET_DIR" >/dev/null && report "mount $KUBELET_DIR"
for d in $(loops_under "$E2E_WORK/"); do report "loop device $d"; done
pool_fs_alive && report "the pool's loop device $(losetup -j "$POOL_IMG" | cut -d: -f1) (the pool filesystem is still held)"
while read -r d majmin ino file; do [ -n "$d" ] && report "loop device $d (backing file on the pool: $majmin inode $ino, $file)"; done <<<"$(pool_loops)"
ip link show "$BRIDGE" >/dev/null 2>&1 && report "bridge $BRIDGE"
iptables -t nat -S HOSTVOL-E2E >/dev/null 2>&1 && report "iptables/nat chain HOSTVOL-E2E"
for ipt in iptables ip6tables; do for t in filter nat mangle; do
  for ch in $($ipt -t $t -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do
    grep -qxF "chain $ipt/$t $ch" <<<"$before" || report "$ipt/$t chain $ch"; done; done; done
for h in /sys/fs/cgroup/*/kubepods; do
  [ -d "$h" ] && ! grep -qxF "cgroup $h" <<<"$before" && report "cgroup $h"; done
if [ "$left" = 0 ]; then
  rm -f run/host-before run/pool.devs
  if [ "${WIPE:-0}" = 1 ]; then
    # Also the kubelet's directories of pods and of CSI volumes (nothing is
    # mounted there any more): the orphans of pods that never finished (a
    # failed scenario) would otherwise haunt the next cluster's kubelet.
    rm -rf --one-file-system "$KUBELET_DIR/pods" "$KUBELET_DIR/plugins/kubernetes.io/csi"
    rm -rf "$E2E_WORK" "$RUN"; ts "wiped $E2E_WORK and the kubelet's pod and CSI volume directories"
  fi
  ts "down: no process, mount, loop device, iptables chain, cgroup or bridge of the e2e cluster is left"
else
  exit 1
fi
if [ "$leaked" = 1 ]; then
  echo "e2e down: FAILED: loop devices on the pool were left attached after Kubernetes unwound (LEAK above; detached now)"
  exit 1
fi
