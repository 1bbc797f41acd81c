#!/usr/bin/env bash
# Build (once) and cache the binaries of a local Kubernetes and the outside gRPC tools, all from the Go module
# proxy: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy (k8s.io/kubernetes
# at $K8S_VERSION), kwok, grpc-health-probe and grpcurl. Later runs find the binaries and return at once.
#
#   deploy/k8s-local/build.sh            # everything
#   deploy/k8s-local/build.sh tools      # only grpc-health-probe and grpcurl (the container smoke test)
#   deploy/k8s-local/build.sh coredns    # only CoreDNS (the real node's cluster DNS, node.sh)
#   deploy/k8s-local/build.sh packages   # only the Debian packages (etcd, containerd, socat, ...; `all` does it first)
#
# Cache: $RECSYS_K8S_CACHE (default ~/.cache/recsys-k8s): bin/, the generated Go module, GOMODCACHE and GOCACHE.
# Cold on 2 cores: ~25 min (measured 17.5 min for Kubernetes and kwok, 6 min for CoreDNS); warm: < 1 s.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

K8S_VERSION=${K8S_VERSION:-v1.32.13}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
GRPC_HEALTH_PROBE_VERSION=${GRPC_HEALTH_PROBE_VERSION:-v0.4.39}
GRPCURL_VERSION=${GRPCURL_VERSION:-v1.9.3}
COREDNS_VERSION=${COREDNS_VERSION:-v1.12.4}
export GOMODCACHE="$K8S_CACHE/go/mod" GOCACHE="$K8S_CACHE/go/build" GOFLAGS=-mod=mod GOTOOLCHAIN=local
mkdir -p "$K8S_BIN"

# Debian packages the local cluster, the real node and the image builds use, installed when missing.
DEBIAN_PACKAGES=(etcd-server containerd runc containernetworking-plugins socat iptables iproute2 conntrack openssl curl
  debootstrap docker.io)
install_packages() {
  local missing=() pkg
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

build_tool() {  # name module version
  local name=$1 module=$2 version=$3
  [[ -x "$K8S_BIN/$name" ]] && return 0
  log "building $name ($module@$version)"
  GOBIN="$K8S_BIN" go install "$module@$version"
}

build_tools() {
  build_tool grpc-health-probe github.com/grpc-ecosystem/grpc-health-probe "$GRPC_HEALTH_PROBE_VERSION"
  build_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION"
}

build_kwok() {
  [[ -x "$K8S_BIN/kwok" && -d "$K8S_CACHE/kwok-stages" ]] && return 0
  build_tool kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION"
  # kwok's stages ship in its module zip (kustomize/stage/); kwok exits "no stages found" without them.
  local dir; dir=$(GOFLAGS= go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$K8S_CACHE/kwok-stages"; mkdir -p "$K8S_CACHE/kwok-stages"
  cp -r "$dir/kustomize/stage/." "$K8S_CACHE/kwok-stages/"
  chmod -R u+w "$K8S_CACHE/kwok-stages"
}

# k8s.io/kubernetes cannot be `go install`ed (its go.mod has replace directives): build it from a local module
# that requires it and replaces each staging module by its published version.
k8s_module() {
  local mod="$K8S_CACHE/k8s-module-$K8S_VERSION"
  [[ -f "$mod/go.sum" ]] && { echo "$mod"; return; }
  mkdir -p "$mod"
  local staging="v0${K8S_VERSION#v1}" gomod
  gomod=$(GOFLAGS= go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo "module local/k8sbuild"; echo; echo "go 1.23"; echo
    echo "require k8s.io/kubernetes $K8S_VERSION"; echo; echo "replace ("
    sed -n '/^replace (/,/^)/p' "$gomod" | grep -o 'k8s.io/[a-z0-9-]* =>' | awk '{print $1}' | grep -v '^k8s.io/sample-' | while read -r m; do
      local v=$staging
      # The proxy refuses some staging versions (k8s.io/endpointslice v0.32.13): take the patch release before.
      if ! GOFLAGS= go mod download "$m@$v" >/dev/null 2>&1; then
        local patch=${staging##*.}; v="${staging%.*}.$((patch - 1))"
        GOFLAGS= go mod download "$m@$v" >/dev/null 2>&1 || { echo "no version of $m near $staging" >&2; exit 1; }
      fi
      echo "	$m => $m $v"
    done
    echo ")"
  } > "$mod/go.mod"
  cat > "$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubectl/pkg/cmd"
)
GO
  (cd "$mod" && go mod tidy -e >/dev/null 2>&1 || true)
  (cd "$mod" && go mod download) >&2
  echo "$mod"
}

build_k8s() {
  local missing=()
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
    [[ -x "$K8S_BIN/$b" ]] || missing+=("$b")
  done
  ((${#missing[@]})) || return 0
  local mod; mod=$(k8s_module)
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitTreeState=clean"
  for b in "${missing[@]}"; do
    local pkg="k8s.io/kubernetes/cmd/$b"
    log "building $b $K8S_VERSION (cold: minutes)"
    (cd "$mod" && go build -tags tools -trimpath -ldflags "$ldflags" -o "$K8S_BIN/$b" "$pkg")
  done
}

case "${1:-all}" in
  tools) build_tools ;;
  k8s) build_k8s ;;
  kwok) build_kwok ;;
  coredns) build_tool coredns github.com/coredns/coredns "$COREDNS_VERSION" ;;
  packages) install_packages ;;
  all) install_packages; build_tools; build_k8s; build_kwok; build_tool coredns github.com/coredns/coredns "$COREDNS_VERSION" ;;
  *) echo "usage: $0 [all|packages|tools|k8s|kwok|coredns]" >&2; exit 2 ;;
esac
log "binaries in $K8S_BIN: $(ls "$K8S_BIN" | tr '\n' ' ')"
