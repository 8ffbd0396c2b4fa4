#!/bin/bash
# certs.sh: a CA, the API server's serving certificate, client certificates
# and the service-account key pair under $E2E_WORK/pki, and kubeconfigs in
# $E2E_WORK. Kept between runs (WIPE=1 down.sh deletes them).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
mkdir -p "$PKI"; cd "$PKI"
[ -f ca.crt ] && [ -f "$E2E_WORK/kubelet.conf" ] && exit 0
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=hostvol-e2e-ca" 2>/dev/null
sign() { # name CN O [subjectAltName]
  local n=$1 cn=$2 o=$3 san=${4:-}
  openssl req -newkey rsa:2048 -nodes -keyout "$n.key" -out "$n.csr" -subj "/CN=$cn${o:+/O=$o}" 2>/dev/null
  if [ -n "$san" ]; then
    printf "subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n" "$san" > "$n.ext"
  else
    printf "extendedKeyUsage=clientAuth\n" > "$n.ext"
  fi
  openssl x509 -req -in "$n.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$n.crt" -days 3650 -extfile "$n.ext" 2>/dev/null
  rm -f "$n.csr" "$n.ext"
}
sign apiserver kube-apiserver "" "IP:127.0.0.1,IP:$API_ADDR,IP:$KUBERNETES_SVC_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
sign admin kubernetes-admin system:masters
sign apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
sign controller-manager system:kube-controller-manager ""
sign scheduler system:kube-scheduler ""
sign kubelet "system:node:$NODE" system:nodes
openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
kc() { # file user
  cat > "$E2E_WORK/$1" <<K
apiVersion: v1
kind: Config
clusters:
- cluster: {certificate-authority: $PKI/ca.crt, server: "https://$API_ADDR:6443"}
  name: hostvol-e2e
users:
- name: $2
  user: {client-certificate: $PKI/$2.crt, client-key: $PKI/$2.key}
contexts:
- context: {cluster: hostvol-e2e, user: $2}
  name: hostvol-e2e
current-context: hostvol-e2e
K
}
kc admin.conf admin; kc controller-manager.conf controller-manager; kc scheduler.conf scheduler; kc kubelet.conf kubelet
