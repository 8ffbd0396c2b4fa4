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
IMG_BUSYBOX=docker.io/library/busybox:1.37.0
IMG_PAUSE=registry.k8s.io/pause:3.10

export _t0=${_t0:-$(date +%s)}   # one clock for run.sh and every script it starts
ts() { echo "[e2e $(( $(date +%s) - _t0 ))s] $*"; }
die() { echo "e2e: $*" >&2; exit 1; }
ctr() { command ctr --address "$CONTAINERD_SOCK" "$@"; }
