#!/bin/bash
# up.sh: a real single-node Kubernetes v$K8S_VERSION on this machine, with no
# container engine and no registry: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet and containerd run as
# host processes (PIDs in $E2E_WORK/run, logs in $E2E_WORK/logs); down.sh
# stops them by PID and cleans up after them.
#
# Builds (cached in $E2E_CACHE, see lib.sh): Kubernetes and the CSI sidecars
# from the Go module proxy, the images (scripts/images.sh). Debian packages:
# containerd, runc, CNI plugins, etcd, btrfs-progs.
#
# hostvol's pool is a filesystem of its own on a loop device
# ($E2E_POOL_FS, btrfs by default, $E2E_POOL_SIZE), mounted at
# $E2E_WORK/pool; the overlay deploy/kubernetes/overlays/e2e points the
# DaemonSet's pool at $E2E_WORK/pool/default. A pool of a known size makes the
# capacity checks exact and keeps the e2e volumes off the host's disk.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
E2E_POOL_FS=${E2E_POOL_FS:-btrfs}
E2E_POOL_SIZE=${E2E_POOL_SIZE:-10G}
RUN=/run/hostvol-e2e
[ "$(id -u)" = 0 ] || die "needs root (mounts, loop devices, containerd, kubelet)"
mkdir -p "$E2E_WORK"/{logs,run,images,cni/net.d,cni/ipam,etcd,pod-logs} "$RUN" "$E2E_CACHE"
cd "$E2E_WORK"
getent hosts "$NODE" | grep -q '^127\.' ||
  die "the host name $NODE must resolve to 127.0.0.1: the API server reaches the kubelet (bound to 127.0.0.1) by host name (kubectl logs/exec)"
for port in 2379 6443 10250 10257 10259; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && ! [ -f run/kube-apiserver.pid ]; then
    die "port $port is in use: another cluster runs on this machine"
  fi
done

# 1. Debian packages. No service is started on install: a policy-rc.d that
#    says no is put in place for the install only (when there is none).
need=
for c in containerd runc etcd etcdctl mkfs.btrfs mkfs.xfs iptables conntrack openssl; do command -v $c >/dev/null || need=1; done
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || need=1
if [ -n "$need" ]; then
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; own_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    containerd runc containernetworking-plugins etcd-server etcd-client \
    btrfs-progs xfsprogs e2fsprogs iptables conntrack openssl >/dev/null
  [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
  ts "Debian packages installed"
fi

# 2. Binaries and images (each step does nothing when its result is cached).
"$E2E_DIR/scripts/build-k8s.sh"
"$E2E_DIR/scripts/build-sidecars.sh"
"$E2E_DIR/scripts/images.sh"
"$E2E_DIR/scripts/certs.sh"

# What the host had before we start anything, so down.sh removes only ours.
if [ ! -f run/host-before ]; then
  { for ipt in iptables ip6tables; do for t in filter nat mangle; do
      $ipt -t $t -S 2>/dev/null | awk -v p="$ipt/$t" '/^-N /{print "chain", p, $2}'; done; done
    for h in /sys/fs/cgroup/*/kubepods; do [ -d "$h" ] && echo "cgroup $h"; done
    findmnt -n "$KUBELET_DIR" >/dev/null && echo "mount $KUBELET_DIR"
  } > run/host-before || true
fi

start() { # name cmd...
  local n=$1; shift
  if [ -f run/$n.pid ] && kill -0 "$(cat run/$n.pid)" 2>/dev/null; then return; fi
  nohup "$@" > logs/$n.log 2>&1 9>&- &   # not run.sh's lock (fd 9)
  echo $! > run/$n.pid
}
wait_for() { # what timeout-seconds cmd...
  local d=$1 to=$2; shift 2
  for _ in $(seq 1 "$to"); do "$@" >/dev/null 2>&1 && { ts "$d ready"; return 0; }; sleep 1; done
  echo "e2e: timed out waiting for $d; last log lines:" >&2
  tail -20 "logs/${d%% *}.log" >&2 2>/dev/null || true
  return 1
}
subst() { sed -e "s|@WORK@|$E2E_WORK|g" -e "s|@RUN@|$RUN|g" -e "s|@BRIDGE@|$BRIDGE|g" -e "s|@POD_CIDR@|$POD_CIDR|g" -e "s|@API_ADDR@|$API_ADDR|g" -e "s|@SERVICE_CIDR@|$SERVICE_CIDR|g" "$1"; }

# 3. The pool: a sparse image with its own filesystem on a loop device.
if ! findmnt -n "$E2E_WORK/pool" >/dev/null; then
  if [ ! -f pool.img ] || [ "$(cat run/pool.fs 2>/dev/null)" != "$E2E_POOL_FS" ]; then
    rm -f pool.img; truncate -s "$E2E_POOL_SIZE" pool.img
    mkfs."$E2E_POOL_FS" -q pool.img >/dev/null 2>&1 || mkfs."$E2E_POOL_FS" pool.img >/dev/null
    echo "$E2E_POOL_FS" > run/pool.fs
  fi
  mkdir -p pool
  rm -f run/pool.devs   # a new mount: its device numbers are new (lib.sh, pool_devs)
  dev=$(losetup --find --show pool.img); echo "$dev" > run/pool.loop
  mount -t "$E2E_POOL_FS" "$dev" pool
  [ "$E2E_POOL_FS" = btrfs ] && btrfs quota enable pool 2>/dev/null || true
fi
mkdir -p pool/default
pool_devs >/dev/null
ts "pool: $E2E_POOL_FS $E2E_POOL_SIZE on $(cat run/pool.loop) at $E2E_WORK/pool"

# 4. The pods' network: a bridge with the API server's address. Pods get a
#    route to the Service range through it and no default route; the host
#    does not forward (the CNI bridge is not a gateway), so pods reach the
#    host and nothing else. The "kubernetes" Service is DNATed to the API
#    server in a chain of our own (no kube-proxy: it is the only Service
#    hostvol uses).
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
  ip link add "$BRIDGE" type bridge
  ip addr add "$API_ADDR/${POD_CIDR#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
fi
if ! iptables -t nat -S HOSTVOL-E2E >/dev/null 2>&1; then
  iptables -t nat -N HOSTVOL-E2E
  iptables -t nat -A HOSTVOL-E2E -d "$KUBERNETES_SVC_IP/32" -p tcp --dport 443 -j DNAT --to-destination "$API_ADDR:6443"
  iptables -t nat -A PREROUTING -i "$BRIDGE" -j HOSTVOL-E2E
fi

# 5. containerd (own root, state, socket and CNI config) and the images.
subst "$E2E_DIR/conf/containerd.toml" > containerd.toml
subst "$E2E_DIR/conf/10-hostvol-e2e.conflist" > cni/net.d/10-hostvol-e2e.conflist
start containerd containerd --config "$E2E_WORK/containerd.toml"
wait_for "containerd" 30 ctr version
for t in "$E2E_CACHE"/images/*.tar "$E2E_WORK/images/hostvol.tar"; do
  ctr -n k8s.io images import "$t" >/dev/null
done
ts "images imported"

# 6. etcd (Debian's, plain http on loopback).
start etcd etcd --name hostvol-e2e --data-dir "$E2E_WORK/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster hostvol-e2e=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
  --unsafe-no-fsync
wait_for "etcd" 30 env ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 endpoint health

# 7. Control plane.
start kube-apiserver kube-apiserver \
  --etcd-servers=http://127.0.0.1:2379 \
  --bind-address="$API_ADDR" --secure-port=6443 \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=Hostname,InternalIP \
  --allow-privileged=true --profiling=false
wait_for "kube-apiserver" 120 kubectl get --raw /readyz
start kube-controller-manager kube-controller-manager \
  --kubeconfig="$E2E_WORK/controller-manager.conf" \
  --authentication-kubeconfig="$E2E_WORK/controller-manager.conf" \
  --authorization-kubeconfig="$E2E_WORK/controller-manager.conf" \
  --bind-address=127.0.0.1 --leader-elect=false \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --use-service-account-credentials=true \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --profiling=false
start kube-scheduler kube-scheduler \
  --kubeconfig="$E2E_WORK/scheduler.conf" \
  --authentication-kubeconfig="$E2E_WORK/scheduler.conf" \
  --authorization-kubeconfig="$E2E_WORK/scheduler.conf" \
  --bind-address=127.0.0.1 --leader-elect=false --profiling=false

# 8. kubelet. / is a private mount on this host: /var/lib/kubelet is bound
#    onto itself and made rshared, so the node plugin's Bidirectional mounts
#    reach the host and the other pods.
mkdir -p "$KUBELET_DIR"
if ! findmnt -n "$KUBELET_DIR" >/dev/null; then
  mount --bind "$KUBELET_DIR" "$KUBELET_DIR"
  mount --make-rshared "$KUBELET_DIR"
  echo "$KUBELET_DIR" > run/kubelet.bind
fi
subst "$E2E_DIR/conf/kubelet.yaml" > kubelet.yaml
start kubelet "${KUBELET_CMD[@]}"
wait_for "kubelet (node $NODE Ready)" 180 bash -c "kubectl get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"
wait_for "default service account" 60 kubectl get serviceaccount default
ts "cluster up: export KUBECONFIG=$KUBECONFIG PATH=$K8S_BIN:\$PATH"
