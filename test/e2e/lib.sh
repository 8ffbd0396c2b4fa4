# Shared settings of the e2e scripts: versions, where things live, helpers.
# Sourced, not run.
#
# Two directories outside the repository:
#   $E2E_CACHE  (/var/cache/hostvol-e2e) binaries and package sets built from
#               the Go module proxy and Debian, keyed by version; kept between
#               runs. Remove it (or move it aside) for a cold run.
#   $E2E_WORK   (/var/lib/hostvol-e2e) the running cluster: certificates,
#               etcd and containerd data, logs, PIDs, hostvol's pool and state.
#               down.sh stops everything; WIPE=1 deletes it.
# The kubelet's root stays /var/lib/kubelet: the manifests under deploy/
# name that path (registration socket, Bidirectional kubelet dir).

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_DIR/../.." && pwd)
K8S_VERSION=${K8S_VERSION:-1.34.4}
PROVISIONER_VERSION=${PROVISIONER_VERSION:-v6.3.0}   # v6.4.0 needs a module the proxy refuses
RESIZER_VERSION=${RESIZER_VERSION:-v2.3.0}
SNAPSHOTTER_VERSION=${SNAPSHOTTER_VERSION:-v8.7.0}   # csi-snapshotter and snapshot-controller
E2E_CACHE=${E2E_CACHE:-/var/cache/hostvol-e2e}
E2E_WORK=${E2E_WORK:-/var/lib/hostvol-e2e}
K8S_BIN=$E2E_CACHE/kubernetes-v$K8S_VERSION/bin
PKI=$E2E_WORK/pki
KUBELET_DIR=/var/lib/kubelet
CONTAINERD_SOCK=/run/hostvol-e2e/containerd/containerd.sock
# The pods' bridge. The API server listens on the bridge's address, so that
# host processes and pods reach it alike; the "kubernetes" Service's
# ClusterIP (10.0.0.1:443, what in-cluster clients such as the provisioner
# use) is sent there by one DNAT rule (up.sh) instead of a kube-proxy.
BRIDGE=hve2e0
POD_CIDR=10.88.0.0/24
API_ADDR=10.88.0.1
SERVICE_CIDR=10.0.0.0/24
KUBERNETES_SVC_IP=10.0.0.1
NODE=$(hostname)
export KUBECONFIG=$E2E_WORK/admin.conf
export PATH=$K8S_BIN:$PATH:/usr/local/go/bin
# Go builds of Kubernetes and the sidecars use their own module and build
# caches, so an empty $E2E_CACHE really is a cold build.
export GOMODCACHE=$E2E_CACHE/go/mod GOCACHE=$E2E_CACHE/go/build
export CGO_ENABLED=0

# Local image names. The overlay deploy/kubernetes/overlays/e2e maps the
# base's images to these; the examples' busybox:1.37.0 is built locally too.
IMG_HOSTVOL=localhost/hostvol:e2e
IMG_PROVISIONER=localhost/csi-provisioner:$PROVISIONER_VERSION
IMG_RESIZER=localhost/csi-resizer:$RESIZER_VERSION
IMG_SNAPSHOTTER=localhost/csi-snapshotter:$SNAPSHOTTER_VERSION
IMG_SNAPSHOT_CONTROLLER=localhost/snapshot-controller:$SNAPSHOTTER_VERSION
IMG_BUSYBOX=docker.io/library/busybox:1.37.0
IMG_PAUSE=registry.k8s.io/pause:3.10

# How up.sh starts the kubelet (the reboot scenario starts it again).
KUBELET_CMD=(kubelet --config="$E2E_WORK/kubelet.yaml" --kubeconfig="$E2E_WORK/kubelet.conf"
  --root-dir="$KUBELET_DIR" --hostname-override="$NODE" --v=1)

export _t0=${_t0:-$(date +%s)}   # one clock for run.sh and every script it starts
ts() { echo "[e2e $(( $(date +%s) - _t0 ))s] $*"; }
die() { echo "e2e: $*" >&2; exit 1; }
ctr() { command ctr --address "$CONTAINERD_SOCK" "$@"; }

# hostvol's loop devices on the e2e pool, found by what backs them, never by
# path. A device that hostvol attaches in its container names its file by the
# container's path (/var/lib/hostvol/pools/default/images/hv-<id>.img), and
# once that container is gone by the path inside the pool's bind mount
# (/images/hv-<id>.img): a check by path sees neither. LOOP_GET_STATUS64
# gives the backing file's device and inode (losetup's BACK-MAJ:MIN and
# BACK-INO), the numbers stat(2) gives for the file. On btrfs that device is
# the anonymous device of the file's subvolume, not the pool filesystem's, so
# the pool's devices are read with stat from the directories that hold
# images while the pool is mounted, and kept in $E2E_WORK/run/pool.devs for
# checks after it is unmounted. Those numbers mean the pool only while its
# filesystem lives (mounted, or unmounted lazily and held by a leaked device,
# which keeps the pool's own loop device attached); once it is gone the
# kernel reuses them, so then pool_devs gives none.
POOL_MNT=$E2E_WORK/pool
POOL_IMG=$E2E_WORK/pool.img
# pool_devs: the MAJ:MIN of the pool's directories, one a line.
pool_devs() {
  local rec=$E2E_WORK/run/pool.devs
  if mountpoint -q "$POOL_MNT" 2>/dev/null; then
    { cat "$rec" 2>/dev/null || true
      stat -c '%Hd:%Ld' "$POOL_MNT" "$POOL_MNT"/* "$POOL_MNT"/*/images 2>/dev/null || true
    } | sort -u > "$rec.new" && mv "$rec.new" "$rec"
  elif ! pool_fs_alive; then
    return 0
  fi
  cat "$rec" 2>/dev/null || true
}
# pool_fs_alive: the pool image is still attached to a loop device (by
# device and inode: losetup -j).
pool_fs_alive() { [ -f "$POOL_IMG" ] && [ -n "$(losetup -j "$POOL_IMG" 2>/dev/null)" ]; }
# pool_loops: "DEVICE MAJ:MIN INODE BACKING-FILE" for each loop device whose
# backing file lives on the pool.
pool_loops() {
  local devs; devs=$(pool_devs)
  [ -n "$devs" ] || return 0
  losetup -n -O NAME,BACK-MAJ:MIN,BACK-INO,BACK-FILE 2>/dev/null |
    awk -v devs="$devs" 'BEGIN { n = split(devs, a, "\n"); for (i = 1; i <= n; i++) d[a[i]] = 1 } $2 in d'
}
# loops_backed_by DEVICE-NODE...: loop devices whose backing file is one of
# these device nodes (by device and inode): the kubelet holds each raw block
# volume it maps with a loop device of its own on hostvol's loop device.
loops_backed_by() {
  local want= n
  for n in "$@"; do want="$want $(stat -c '%Hd:%Ld/%i' "$n" 2>/dev/null)"; done
  [ -n "${want// }" ] || return 0
  losetup -n -O NAME,BACK-MAJ:MIN,BACK-INO,BACK-FILE 2>/dev/null |
    awk -v want="$want" 'BEGIN { n = split(want, a, " "); for (i = 1; i <= n; i++) w[a[i]] = 1 } ($2 "/" $3) in w'
}
