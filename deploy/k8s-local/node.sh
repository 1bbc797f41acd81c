#!/usr/bin/env bash
# A REAL Kubernetes node for the local control plane of cluster.sh: containerd + kubelet + kube-proxy, run inside a
# network namespace that this script creates (nothing is added to the host's own network namespace).
#
#   deploy/k8s-local/node.sh up       # needs root and a running control plane (cluster.sh up); no-op when running
#   deploy/k8s-local/node.sh down     # stop everything it started (pods first), delete the Node and the netns
#   deploy/k8s-local/node.sh status
#
# Layout (all inside netns $RECSYS_NODE_NETNS, default recsys-node):
#   lo (127.0.0.1) with a relay 127.0.0.1:<apiserver port> -> unix socket $NODE_DIR/apiserver.sock -> (host netns)
#     socat -> 127.0.0.1:<apiserver port>: the kubelet and kube-proxy reach the API server at the same URL as the host.
#   bridge cni0 10.244.0.1/24: the node IP (the kubelet refuses a loopback one) and the pods' gateway; the CNI
#     `bridge` plugin (host-local IPAM 10.244.0.0/24) puts every pod on it with a veth pair.
#   kube-proxy (iptables mode, masqueradeAll: pods share one bridge) writes its rules into this netns only.
#   CoreDNS (when $K8S_BIN/coredns exists, see build.sh coredns; RECSYS_NODE_DNS=0 turns it off, =1 requires it):
#     the cluster DNS on 10.244.0.1:53 (the kubelet's clusterDNS, domain cluster.local), its `kubernetes` plugin
#     watching the API server through the relay as user system:coredns; no forwarding (the netns has no way out).
# The processes join only the network namespace (nsenter --net), not a new mount namespace: `ip netns exec` would
# remount /sys and hide the cgroup hierarchy that containerd, runc and the kubelet need.
#
# The node is named $RECSYS_NODE_NAME (default recsys-node-0), labelled type=real, and tainted
# recsys.dev/real-node=true:NoSchedule (RECSYS_NODE_TAINT; empty: no taint) so that the pods of other tests on the
# same control plane (kwok nodes, images that are not here) do not land on it.
# Images: the pause image registry.k8s.io/pause:3.10 is built here (a static Go binary FROM scratch, with the
# project's Docker engine) and imported; so are $RECSYS_NODE_IMAGES (default: the gateway image), from that engine.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/lib.sh"
source "$HERE/proc.sh"

NETNS=${RECSYS_NODE_NETNS:-recsys-node}
NODE_NAME=${RECSYS_NODE_NAME:-recsys-node-0}
NODE_TAINT=${RECSYS_NODE_TAINT-recsys.dev/real-node=true:NoSchedule}
NODE_IMAGES=${RECSYS_NODE_IMAGES-ghcr.io/recsys/recsys-gateway:0.1.0}
NODE_DNS=${RECSYS_NODE_DNS:-auto}   # auto: CoreDNS when $K8S_BIN/coredns exists; 1: required; 0: none
CLUSTER_DOMAIN=cluster.local
TIMEOUT=${RECSYS_NODE_UP_TIMEOUT:-120}
NODE_DIR="$K8S_STATE/node"
PKI="$K8S_STATE/pki"
ADMIN_KUBECONFIG="$K8S_STATE/admin.kubeconfig"
LOGS="$NODE_DIR/logs"
PIDS="$NODE_DIR/pids"
SOCK="$NODE_DIR/containerd.sock"
API_SOCK="$NODE_DIR/apiserver.sock"
BRIDGE=cni0
NODE_IP=10.244.0.1
POD_SUBNET=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=${RECSYS_K8S_SERVICE_CIDR:-10.0.0.0/24}  # as cluster.sh gives the API server
PAUSE_IMAGE=registry.k8s.io/pause:3.10
PAUSE_SRC="$K8S_CACHE/pause-src"
export DOCKER_HOST=${DOCKER_HOST:-$(bash "$REPO_ROOT/deploy/images/dockerd.sh" env | sed "s/^export DOCKER_HOST=//")}
# Start order; `down` stops in reverse. name:binary (the pidfile's process must run that binary).
COMPONENTS=(relay-host:socat relay-netns:socat containerd:containerd kubelet:kubelet kube-proxy:kube-proxy)
case "$NODE_DNS" in
  0|no|false) DNS=0 ;;
  1|yes|true) DNS=1 ;;
  *) if [[ -x "$K8S_BIN/coredns" ]]; then DNS=1; else DNS=0; fi ;;
esac
((DNS)) && COMPONENTS+=(coredns:coredns)

kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }
ctr_() { ctr -a "$SOCK" -n k8s.io "$@"; }
in_netns() { nsenter --net="/run/netns/$NETNS" "$@"; }

# --- processes (as in cluster.sh, with the binary named per component) -------------------------------------------

binary_of() {  # name: the executable of a component (COMPONENTS pairs name:binary)
  local c
  # (coredns too when DNS is off now: `down` still stops one that an earlier `up` started)
  for c in "${COMPONENTS[@]}" coredns:coredns; do [[ "${c%%:*}" == "$1" ]] && { echo "${c#*:}"; return; }; done
}

issue_client() {  # name subject: a client cert signed by the cluster CA (kept while the CA verifies it)
  local name=$1 subj=$2 ext
  [[ -f "$NODE_DIR/pki/$name.key" ]] && openssl verify -CAfile "$PKI/ca.crt" "$NODE_DIR/pki/$name.crt" >/dev/null 2>&1 \
    && return 0
  ext=$(mktemp)
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=clientAuth" > "$ext"
  (umask 077
   openssl req -new -newkey rsa:2048 -nodes -keyout "$NODE_DIR/pki/$name.key" -out "$NODE_DIR/pki/$name.csr" \
     -subj "$subj" 2>/dev/null
   openssl x509 -req -in "$NODE_DIR/pki/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
     -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 -extfile "$ext" -out "$NODE_DIR/pki/$name.crt" 2>/dev/null)
  rm -f "$ext" "$NODE_DIR/pki/$name.csr"
}

write_configs() {
  mkdir -p "$NODE_DIR"/{pki,cni/net.d,containerd,kubelet,kubelet-certs,pod-logs}
  chmod 700 "$NODE_DIR/pki"
  issue_client kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
  issue_client kube-proxy "/CN=system:kube-proxy"   # bound to ClusterRole system:node-proxier by default
  write_kubeconfig "$NODE_DIR/kubelet.kubeconfig" "system:node:$NODE_NAME" "$NODE_DIR/pki/kubelet"
  write_kubeconfig "$NODE_DIR/kube-proxy.kubeconfig" system:kube-proxy "$NODE_DIR/pki/kube-proxy"
  if ((DNS)); then
    issue_client coredns "/CN=system:coredns"   # bound to ClusterRole recsys:coredns by apply_dns_rbac
    write_kubeconfig "$NODE_DIR/coredns.kubeconfig" system:coredns "$NODE_DIR/pki/coredns"
    # Only the cluster's zones; other names are refused (nothing to forward to from the netns).
    cat > "$NODE_DIR/Corefile" <<EOF
$CLUSTER_DOMAIN:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $NODE_IP
    errors
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $NODE_DIR/coredns.kubeconfig
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    cache 30
    loadbalance
}
EOF
  fi

  cat > "$NODE_DIR/containerd/config.toml" <<EOF
# containerd of the real node (a separate instance; the Docker engine's own containerd is not touched)
version = 2
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"
oom_score = 0
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This VM's root lacks CAP_SYS_RESOURCE: without it every sandbox fails "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$NODE_DIR/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni/net.d"
    max_conf_num = 1
EOF

  cat > "$NODE_DIR/cni/net.d/10-recsys.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "recsys-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$NODE_DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

  # The node's own resolv.conf (pods with dnsPolicy Default get it): no name server answers. With DNS, pods
  # (dnsPolicy ClusterFirst) get nameserver $NODE_IP and the cluster's search domains from the kubelet instead.
  printf 'nameserver 127.0.0.1\noptions ndots:1\n' > "$NODE_DIR/resolv.conf"
  local dns=""
  if ((DNS)); then dns="clusterDNS: [$NODE_IP]
clusterDomain: $CLUSTER_DOMAIN"; fi

  local taints=""
  if [[ -n "$NODE_TAINT" ]]; then
    local kv=${NODE_TAINT%%:*} effect=${NODE_TAINT##*:}
    taints="registerWithTaints:
- {key: \"${kv%%=*}\", value: \"${kv#*=}\", effect: \"$effect\"}"
  fi
  cat > "$NODE_DIR/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$SOCK
makeIPTablesUtilChains: false
failSwapOn: false
resolvConf: $NODE_DIR/resolv.conf
podLogsDir: $NODE_DIR/pod-logs
serializeImagePulls: false
maxPods: 50
evictionHard: {memory.available: "200Mi", nodefs.available: "2%", imagefs.available: "2%"}
imageGCHighThresholdPercent: 98
imageGCLowThresholdPercent: 95
$dns
$taints
EOF

  cat > "$NODE_DIR/kube-proxy-config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $NODE_DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $CLUSTER_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables: {masqueradeAll: true}
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

# --- network namespace ------------------------------------------------------------------------------------------

netns_exists() { [[ -e "/run/netns/$NETNS" ]]; }

netns_up() {
  netns_exists || ip netns add "$NETNS"
  in_netns ip link set lo up
  if ! in_netns ip link show "$BRIDGE" >/dev/null 2>&1; then
    in_netns ip link add "$BRIDGE" type bridge
  fi
  in_netns ip addr replace "$NODE_IP/24" dev "$BRIDGE"
  in_netns ip link set "$BRIDGE" up
  in_netns sysctl -qw net.ipv4.ip_forward=1
  # The netns has no default route: without one for the Service range, a connection from the node itself to a
  # ClusterIP fails "Network is unreachable" before kube-proxy's OUTPUT DNAT is reached. (Pods route via the
  # bridge's 10.244.0.1, and PREROUTING DNAT comes before routing, so they need no such route.)
  in_netns ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
}

# --- images -----------------------------------------------------------------------------------------------------

# grep without -q reads all of ctr's output: with -q it may exit at the first match, ctr then dies of SIGPIPE and,
# under pipefail, an image that is there reads as missing.
has_image() { ctr_ images ls -q 2>/dev/null | grep -xF "$1" >/dev/null; }

# The Docker image ID each name had when containerd imported it: `make images` rebuilds under the same tags, and
# a name containerd already holds must still be imported again when Docker's image behind it changed.
IMPORTED="$NODE_DIR/imported"
imported_id_file() { printf '%s/%s' "$IMPORTED" "$(printf '%s' "$1" | tr '/:@' '___')"; }
docker_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null; }
has_current_image() {  # name: containerd has it, imported from the Docker image the name points to now
  has_image "$1" || return 1
  local id; id=$(docker_id "$1") || return 0  # not in Docker (e.g. pulled): containerd's copy is the one
  [[ -f "$(imported_id_file "$1")" && "$(cat "$(imported_id_file "$1")")" == "$id" ]]
}
record_import() { mkdir -p "$IMPORTED"; local name; for name in "$@"; do docker_id "$name" > "$(imported_id_file "$name")"; done; }

import_image() {  # name: from the project's Docker engine, unless containerd has it
  local name=$1 t0=$SECONDS
  has_current_image "$name" && return 0
  docker image inspect "$name" >/dev/null 2>&1 || die "image $name is not in the Docker engine ($DOCKER_HOST)"
  docker save "$name" | ctr_ images import --snapshotter overlayfs - >/dev/null \
    || die "ctr images import $name failed"
  record_import "$name"
  log "imported $name in $((SECONDS - t0))s"
}

import_images() {  # names...: those containerd lacks, from the Docker engine in ONE `docker save` (an archive of
  # several images holds each shared layer once: the recsys images share ~6.7 GB, saved one by one they would
  # stream it again for each)
  local name missing=() t0=$SECONDS
  for name in "$@"; do
    has_current_image "$name" && continue
    docker image inspect "$name" >/dev/null 2>&1 || die "image $name is not in the Docker engine ($DOCKER_HOST)"
    missing+=("$name")
  done
  ((${#missing[@]})) || return 0
  # The names' previous images first: their layers (~6.7 GB shared) would otherwise stay in containerd's content
  # store beside the new ones until a GC after the import, and a rebuild's import then runs out of disk.
  ctr_ images rm --sync "${missing[@]}" >/dev/null 2>&1 || true
  log "importing ${missing[*]} ($(df -h --output=avail "$NODE_DIR" | tail -1 | tr -d ' ') free)"
  docker save "${missing[@]}" | ctr_ images import --snapshotter overlayfs - >/dev/null \
    || die "ctr images import ${missing[*]} failed"
  for name in "${missing[@]}"; do has_image "$name" || die "$name missing after the import"; done
  record_import "${missing[@]}"
  log "imported ${#missing[@]} image(s) in $((SECONDS - t0))s"
}

ensure_pause_image() {
  has_image "$PAUSE_IMAGE" && return 0
  if ! docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1; then
    mkdir -p "$PAUSE_SRC"
    cat > "$PAUSE_SRC/main.go" <<'EOF'
// pause: the sandbox process of a pod; it reaps children and exits on SIGTERM/SIGINT.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
EOF
    printf 'module pause\n\ngo 1.21\n' > "$PAUSE_SRC/go.mod"
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' > "$PAUSE_SRC/Dockerfile"
    (cd "$PAUSE_SRC" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o pause .) || die "cannot build pause"
    docker build -q -t "$PAUSE_IMAGE" "$PAUSE_SRC" >/dev/null 2>&1 || die "docker build of $PAUSE_IMAGE failed"
  fi
  import_image "$PAUSE_IMAGE"
}

# --- checks -----------------------------------------------------------------------------------------------------

relay_ok() { in_netns curl -s --max-time 3 --cacert "$PKI/ca.crt" "https://127.0.0.1:$APISERVER_PORT/healthz" >/dev/null; }
containerd_ok() { ctr_ version; }
node_ready() {
  [[ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}
proxy_ok() { in_netns curl -sf --max-time 3 http://127.0.0.1:10256/healthz; }
dns_ok() {  # an A record of kubernetes.default.svc from CoreDNS (a raw DNS query: no dig on this machine)
  in_netns python3 - "$NODE_IP" "kubernetes.default.svc.$CLUSTER_DOMAIN" <<'EOF'
import socket, struct, sys
q = b"".join(bytes([len(p)]) + p.encode() for p in sys.argv[2].split(".")) + b"\0"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
s.sendto(struct.pack(">HHHHHH", 0x5253, 0x0100, 1, 0, 0, 0) + q + struct.pack(">HH", 1, 1), (sys.argv[1], 53))
data = s.recv(512)
ident, flags, _, answers = struct.unpack(">HHHH", data[:8])
sys.exit(0 if ident == 0x5253 and flags & 0xF == 0 and answers > 0 else 1)
EOF
}

apply_dns_rbac() {  # what CoreDNS's kubernetes plugin reads, for user system:coredns
  kubectl apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "recsys:coredns"}
rules:
- {apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "recsys:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "recsys:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:coredns"}
EOF
}

lock() {
  mkdir -p "$NODE_DIR"
  exec 9>"$NODE_DIR/.lock"
  flock -n 9 || { log "waiting for another node.sh up/down"; flock 9; }
}

# --- subcommands ------------------------------------------------------------------------------------------------

all_running() { local c; for c in "${COMPONENTS[@]}"; do running "${c%%:*}" || return 1; done; }

cmd_up() {
  local t0=$SECONDS c
  [[ $EUID == 0 ]] || die "needs root (network namespace, containerd)"
  lock
  [[ -f "$K8S_STATE/ports.env" ]] || die "no $K8S_STATE/ports.env: run cluster.sh up first"
  # shellcheck disable=SC1091
  source "$K8S_STATE/ports.env"
  for b in kubelet kube-proxy kubectl; do [[ -x "$K8S_BIN/$b" ]] || die "missing $K8S_BIN/$b (build.sh)"; done
  for b in socat containerd runc ctr nsenter iptables; do command -v "$b" >/dev/null || die "missing $b"; done
  if ((DNS)); then [[ -x "$K8S_BIN/coredns" ]] || die "missing $K8S_BIN/coredns (build.sh coredns)"; fi
  [[ -x /usr/lib/cni/bridge ]] || die "missing /usr/lib/cni/bridge (apt-get install containernetworking-plugins)"
  mkdir -p "$LOGS" "$PIDS"
  if all_running && netns_exists && node_ready; then
    log "node $NODE_NAME already running"
    return 0
  fi
  for c in "${COMPONENTS[@]}"; do
    if running "${c%%:*}"; then log "partly running: stopping it first"; stop_all; break; fi
  done

  trap 'rc=$?; if ((rc != 0)); then log "up failed: stopping what it started"; stop_all; fi' EXIT
  trap 'exit 130' INT TERM

  write_configs
  netns_up
  rm -f "$API_SOCK"
  start relay-host socat "UNIX-LISTEN:$API_SOCK,fork,mode=600" "TCP:127.0.0.1:$APISERVER_PORT"
  start relay-netns nsenter --net="/run/netns/$NETNS" socat \
    "TCP-LISTEN:$APISERVER_PORT,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$API_SOCK"
  wait_for relay-netns "the API server through the relay in netns $NETNS" relay_ok

  start containerd nsenter --net="/run/netns/$NETNS" containerd --config "$NODE_DIR/containerd/config.toml"
  wait_for containerd "containerd on $SOCK" containerd_ok
  ensure_pause_image
  # shellcheck disable=SC2086
  import_images $NODE_IMAGES

  start kubelet nsenter --net="/run/netns/$NETNS" "$K8S_BIN/kubelet" \
    --config="$NODE_DIR/kubelet-config.yaml" --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \
    --root-dir="$NODE_DIR/kubelet" --cert-dir="$NODE_DIR/kubelet-certs" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --node-labels=type=real --v=2
  start kube-proxy nsenter --net="/run/netns/$NETNS" "$K8S_BIN/kube-proxy" \
    --config="$NODE_DIR/kube-proxy-config.yaml" --v=2
  wait_for kubelet "node $NODE_NAME Ready" node_ready
  wait_for kube-proxy "kube-proxy /healthz" proxy_ok
  if ((DNS)); then
    apply_dns_rbac || die "cannot apply the RBAC of CoreDNS"
    start coredns nsenter --net="/run/netns/$NETNS" "$K8S_BIN/coredns" -conf "$NODE_DIR/Corefile"
    wait_for coredns "CoreDNS answering on $NODE_IP:53" dns_ok
  fi

  trap - EXIT INT TERM
  local dns_note=""
  ((DNS)) && dns_note=", DNS $NODE_IP:53"
  log "node $NODE_NAME up in $((SECONDS - t0))s (netns $NETNS, node IP $NODE_IP$dns_note, logs in $LOGS)"
}

drain_pods() {  # delete the pods bound to the node and wait until the kubelet has stopped them (sandboxes torn down)
  running kubelet || return 0
  [[ -f "$K8S_STATE/ports.env" ]] || return 0
  local pods deadline=$((SECONDS + 60))
  pods=$(kubectl get pods -A --field-selector "spec.nodeName=$NODE_NAME" -o name --request-timeout=10s 2>/dev/null \
    | wc -l) || return 0
  ((pods > 0)) || return 0
  log "deleting the $pods pod(s) on $NODE_NAME"
  kubectl get pods -A --field-selector "spec.nodeName=$NODE_NAME" \
    -o jsonpath='{range .items[*]}{.metadata.namespace} {.metadata.name}{"\n"}{end}' 2>/dev/null \
    | while read -r ns name; do
        kubectl -n "$ns" delete pod "$name" --grace-period=5 --wait=false >/dev/null 2>&1 || true
      done
  while ((SECONDS < deadline)); do
    [[ -z "$(kubectl get pods -A --field-selector "spec.nodeName=$NODE_NAME" -o name 2>/dev/null)" ]] && return 0
    sleep 1
  done
  log "pods still on $NODE_NAME after 60 s"
}

stop_runtime_leftovers() {  # tasks and shims left by containerd (the shims outlive it)
  if running containerd; then
    local id
    for id in $(ctr_ tasks ls -q 2>/dev/null); do
      ctr_ tasks kill -s KILL "$id" >/dev/null 2>&1 || true
    done
    sleep 1
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true; done
  fi
}

kill_shims() {  # containerd-shim-runc-v2 processes of this containerd (their -address is our socket), by PID
  local pid cmd
  for pid in $(pgrep -x containerd-shim-runc-v2 2>/dev/null || pgrep -f containerd-shim 2>/dev/null || true); do
    cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || continue
    [[ "$cmd" == *"-address $SOCK "* || "$cmd" == *"-address $SOCK" ]] || continue
    kill -TERM "$pid" 2>/dev/null || true
  done
}

stop_all() {
  drain_pods || true
  stop coredns
  stop kube-proxy
  stop kubelet
  stop_runtime_leftovers || true
  stop containerd
  kill_shims || true
  stop relay-netns
  stop relay-host
  rm -f "$API_SOCK"
  unmount_node_dir
  remove_pod_cgroups
}

unmount_node_dir() {  # the kubelet bind-mounts its root dir onto itself (rshared) and pod volumes below: undo, deepest first
  local m
  awk -v d="$NODE_DIR/" '{ if (index($5 "/", d) == 1) print $5 }' /proc/self/mountinfo | sort -r | uniq \
    | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"; done
}

remove_pod_cgroups() {  # the kubelet's (cgroupfs driver) kubepods hierarchy, once empty; not while another kubelet runs
  local d pid
  for pid in $(pgrep -x kubelet 2>/dev/null || true); do  # a live one (our stopped kubelet may linger as a zombie)
    [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" =~ ^(Z|X|)$ ]] || return 0
  done
  for d in /sys/fs/cgroup/*/kubepods; do
    [[ -d "$d" ]] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

cmd_down() {
  lock
  [[ -d "$NODE_DIR" ]] || { netns_exists && ip netns del "$NETNS"; return 0; }
  stop_all
  if [[ -f "$K8S_STATE/ports.env" ]]; then
    kubectl delete node "$NODE_NAME" --ignore-not-found --request-timeout=10s >/dev/null 2>&1 || true
  fi
  if netns_exists; then ip netns del "$NETNS" && log "deleted netns $NETNS"; fi
}

cmd_status() {
  local c pid rc=0
  for c in "${COMPONENTS[@]}"; do
    if pid=$(pid_of "${c%%:*}"); then printf '%-14s running (pid %s)\n' "${c%%:*}" "$pid"
    else printf '%-14s stopped\n' "${c%%:*}"; rc=1; fi
  done
  netns_exists && echo "netns $NETNS exists" || { echo "netns $NETNS missing"; rc=1; }
  if [[ -f "$K8S_STATE/ports.env" ]]; then kubectl get node "$NODE_NAME" -o wide 2>/dev/null || rc=1; fi
  return "$rc"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up | down | status" >&2; exit 2 ;;
esac
