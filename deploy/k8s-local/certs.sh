#!/usr/bin/env bash
# Create (once) the certificates of the local Kubernetes with openssl, in PKI_DIR (default $K8S_STATE/pki):
#   ca.{crt,key}                      the cluster CA (also the controller-manager's CSR signer)
#   apiserver.{crt,key}               serving cert: 127.0.0.1, 10.0.0.1 (the `kubernetes` Service's ClusterIP),
#                                     kubernetes, kubernetes.default, kubernetes.default.svc(.cluster.local), localhost
#   admin.{crt,key}                   client, O=system:masters
#   kube-controller-manager.{crt,key} client, CN=system:kube-controller-manager
#   kube-scheduler.{crt,key}          client, CN=system:kube-scheduler
#   apiserver-kubelet-client.{crt,key} client the API server presents to kubelets, O=system:masters
#   front-proxy-ca.{crt,key}          the aggregation layer's request-header CA (a second CA, as kubeadm makes)
#   front-proxy-client.{crt,key}      the client the API server presents to aggregated API servers
#   sa.{key,pub}                      the service-account token signing key pair
# Files that exist are kept, so a second run is a no-op.
#
#   deploy/k8s-local/certs.sh [PKI_DIR]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PKI=${1:-$K8S_STATE/pki}
DAYS=${K8S_CERT_DAYS:-3650}
mkdir -p "$PKI"
chmod 700 "$PKI"
umask 077

make_ca() {  # name common-name: a self-signed CA
  local name=$1 cn=$2
  [[ -f "$PKI/$name.crt" && -f "$PKI/$name.key" ]] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -out "$PKI/$name.crt" -days "$DAYS" \
    -subj "/CN=$cn" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    2>/dev/null
}

make_ca ca recsys-local-ca
make_ca front-proxy-ca recsys-local-front-proxy-ca

issue() {  # name subject extendedKeyUsage [subjectAltName [ca]]
  local name=$1 subj=$2 eku=$3 san=${4:-} ca=${5:-ca}
  # Kept while its CA (maybe remade) verifies it and it has not expired.
  [[ -f "$PKI/$name.key" ]] && openssl verify -CAfile "$PKI/$ca.crt" "$PKI/$name.crt" >/dev/null 2>&1 && return 0
  local ext; ext=$(mktemp)
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -n "$san" ]] && echo "subjectAltName=$san"
  } > "$ext"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days "$DAYS" -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$ext" "$PKI/$name.csr"
}

issue apiserver "/CN=kube-apiserver" serverAuth \
  "IP:127.0.0.1,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
issue admin "/O=system:masters/CN=kubernetes-admin" clientAuth
issue kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
issue kube-scheduler "/CN=system:kube-scheduler" clientAuth
issue apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
issue front-proxy-client "/CN=front-proxy-client" clientAuth "" front-proxy-ca

if [[ ! -f "$PKI/sa.key" || ! -f "$PKI/sa.pub" ]]; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi
