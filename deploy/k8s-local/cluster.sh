#!/usr/bin/env bash
# A local Kubernetes v1.32 control plane with fake (kwok) nodes, all on 127.0.0.1, no root networking:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, each a plain process.
#
#   deploy/k8s-local/cluster.sh up             # start (build the binaries first if missing); no-op when running
#   deploy/k8s-local/cluster.sh down [--purge] # stop by PID; --purge also deletes $K8S_STATE (certs, etcd data)
#   deploy/k8s-local/cluster.sh status         # which processes run; `kubectl get nodes`
#   deploy/k8s-local/cluster.sh env            # eval "$(deploy/k8s-local/cluster.sh env)": KUBECONFIG and PATH
#
# State ($RECSYS_K8S_STATE, default var/k8s): pki/ (certs.sh), *.kubeconfig, ports.env (free ports picked at the
# first start and kept while they stay free), etcd/, logs/<name>.log, pids/<name>.pid.
# Settings: RECSYS_K8S_NODES (fake nodes, default 1), RECSYS_K8S_UP_TIMEOUT (seconds per wait, default 90).
# kwok plays the "fast" stages shipped with it (no delays): nodes Ready, pods Running at once, Job pods
# Succeeded, PVCs of the default StorageClass `kwok-volume` Bound.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/lib.sh"
source "$HERE/proc.sh"

PKI="$K8S_STATE/pki"
LOGS="$K8S_STATE/logs"
PIDS="$K8S_STATE/pids"
ADMIN_KUBECONFIG="$K8S_STATE/admin.kubeconfig"
STAGES=${RECSYS_K8S_STAGES:-$K8S_CACHE/kwok-stages}
NODES=${RECSYS_K8S_NODES:-1}
TIMEOUT=${RECSYS_K8S_UP_TIMEOUT:-90}
SERVICE_CIDR=10.0.0.0/24   # the `kubernetes` Service gets 10.0.0.1 (a SAN of the apiserver cert, no address)
POD_CIDR=10.244.0.0/16     # the fake pod IPs kwok writes into pod status (no address either)
# Start order; `down` stops in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)
# kwok's own "fast" stages (kustomize/stage/*/fast in its module), played without delays.
KWOK_STAGE_FILES=(
  node/fast/node-initialize.yaml
  node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  pod/fast/pod-ready.yaml
  pod/fast/pod-complete.yaml
  pod/fast/pod-delete.yaml
  volume/fast/pv-bind.yaml
  volume/fast/pv-delete.yaml
  volume/fast/pvc-provision.yaml
  volume/fast/pvc-delete.yaml
)

kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

# --- processes --------------------------------------------------------------------------------------------------

stop_all() {
  local i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do stop "${COMPONENTS[i]}"; done
}

# --- configuration ----------------------------------------------------------------------------------------------

ports_free() {  # port...: all can be bound on 127.0.0.1 now
  python3 - "$@" <<'PY'
import socket, sys
for port in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go servers do: TIME_WAIT does not block them
    try:
        s.bind(("127.0.0.1", int(port)))
    except OSError:
        sys.exit(1)
    finally:
        s.close()
PY
}

pick_ports() {
  local names=(ETCD_CLIENT_PORT ETCD_PEER_PORT APISERVER_PORT CONTROLLER_MANAGER_PORT SCHEDULER_PORT)
  if [[ -f "$K8S_STATE/ports.env" ]]; then
    # shellcheck disable=SC1091
    source "$K8S_STATE/ports.env"
    local n ok=1 values=()
    for n in "${names[@]}"; do [[ -n "${!n:-}" ]] && values+=("${!n}") || ok=0; done
    if ((ok)) && ports_free "${values[@]}"; then return 0; fi
    log "ports in ports.env are taken or incomplete: picking new ones"
  fi
  local ports
  ports=$(python3 - "${#names[@]}" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
)
  read -r ETCD_CLIENT_PORT ETCD_PEER_PORT APISERVER_PORT CONTROLLER_MANAGER_PORT SCHEDULER_PORT <<<"$ports"
  {
    echo "# Ports of the local Kubernetes on 127.0.0.1 (cluster.sh picks them; kept while free)."
    local n; for n in "${names[@]}"; do echo "$n=${!n}"; done
  } > "$K8S_STATE/ports.env"
}

# --- checks -----------------------------------------------------------------------------------------------------

etcd_healthy() { curl -sf --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'; }

apiserver_ready() {
  [[ "$(curl -s --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT/readyz")" == ok ]]
}

component_healthy() {  # port: /healthz of the controller-manager or scheduler (self-signed serving cert)
  [[ "$(curl -sk --max-time 3 "https://127.0.0.1:$1/healthz")" == ok ]]
}

# Each node: Ready, the node controller has lifted its not-ready taints (else new pods wait), and this kwok holds
# its lease (it manages the node's pods only then; a Ready status may be left from an earlier run).
nodes_ready() {
  local i status holder
  for ((i = 0; i < NODES; i++)); do
    status=$(kubectl get node "kwok-node-$i" \
      -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}/{.spec.taints[*].key}') || return 1
    [[ "$status" == True/ ]] || return 1
    holder=$(kubectl -n kube-node-lease get lease "kwok-node-$i" -o jsonpath='{.spec.holderIdentity}') || return 1
    [[ -n "$holder" ]] || return 1
  done
}

default_sa_exists() { kubectl -n default get serviceaccount default -o name; }

all_running() {
  local c
  for c in "${COMPONENTS[@]}"; do running "$c" || return 1; done
}

# --- subcommands ------------------------------------------------------------------------------------------------

lock() {  # one `up` or `down` at a time (two test sessions, say); released when this script exits
  mkdir -p "$K8S_STATE"
  exec 9>"$K8S_STATE/.lock"
  flock -n 9 || { log "waiting for another cluster.sh up/down"; flock 9; }
}

print_env_hint() {
  echo "export KUBECONFIG=$ADMIN_KUBECONFIG"
  echo "export PATH=$K8S_BIN:\$PATH"
}

cmd_up() {
  local t0; t0=$(date +%s%N)
  lock
  mkdir -p "$LOGS" "$PIDS"

  if all_running && [[ -f "$K8S_STATE/ports.env" ]]; then
    # shellcheck disable=SC1091
    source "$K8S_STATE/ports.env"
    if apiserver_ready; then
      log "already running (KUBECONFIG=$ADMIN_KUBECONFIG)"
      print_env_hint
      return 0
    fi
  fi
  local c
  for c in "${COMPONENTS[@]}"; do
    if running "$c"; then
      log "partly running or unhealthy: stopping it first"
      stop_all
      break
    fi
  done

  local b missing=()
  for b in "${BINARIES[@]}"; do [[ -x "$K8S_BIN/$b" ]] || missing+=("$b"); done
  [[ -d "$STAGES" ]] || missing+=("kwok stages")
  if ((${#missing[@]})); then
    [[ "${RECSYS_K8S_NO_BUILD:-0}" != 1 ]] || die "missing in $K8S_BIN: ${missing[*]} (RECSYS_K8S_NO_BUILD=1: not building)"
    log "missing ${missing[*]}: running build.sh (cold: ~35 min)"
    bash "$HERE/build.sh" all
  fi
  command -v etcd >/dev/null || die "etcd is not installed (apt-get install etcd-server)"
  local f stage_args=()
  for f in "${KWOK_STAGE_FILES[@]}"; do
    [[ -f "$STAGES/$f" ]] || die "kwok stage $STAGES/$f is missing (rm -rf $STAGES and run build.sh kwok)"
    stage_args+=("--config=$STAGES/$f")
  done

  # From here on, a failure stops whatever this run started.
  trap 'rc=$?; if ((rc != 0)); then log "up failed: stopping what it started"; stop_all; fi' EXIT
  trap 'exit 130' INT TERM

  bash "$HERE/certs.sh" "$PKI"
  pick_ports
  write_kubeconfig "$ADMIN_KUBECONFIG" kubernetes-admin admin
  write_kubeconfig "$K8S_STATE/controller-manager.kubeconfig" system:kube-controller-manager kube-controller-manager
  write_kubeconfig "$K8S_STATE/scheduler.kubeconfig" system:kube-scheduler kube-scheduler

  start etcd etcd --name recsys-local --data-dir "$K8S_STATE/etcd" --logger zap \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "recsys-local=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
    --quota-backend-bytes $((2 * 1024 * 1024 * 1024)) --snapshot-count 10000
  wait_for etcd "etcd /health on 127.0.0.1:$ETCD_CLIENT_PORT" etcd_healthy

  # WatchList=false: with it (beta, on in 1.32) the API server turns every watch from resourceVersion ""/"0" into
  # a watch-list stream, which it then refuses because Debian's etcd 3.4.23 lacks RequestWatchProgress; kwok
  # watches from "0", so its informers only caught up on periodic relists (pods Pending/Running for 30+ s).
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC --endpoint-reconciler-type=none --allow-privileged=true \
    --cert-dir="$K8S_STATE/apiserver-certs" --profiling=false \
    --feature-gates=WatchList=false
  wait_for kube-apiserver "kube-apiserver /readyz on 127.0.0.1:$APISERVER_PORT" apiserver_ready

  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$K8S_STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$K8S_STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$K8S_STATE/controller-manager.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port="$CONTROLLER_MANAGER_PORT" \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --use-service-account-credentials=true \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig="$K8S_STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$K8S_STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$K8S_STATE/scheduler.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT"
  # Node leases left by an earlier kwok (each run has a new identity) would keep this one from managing its
  # nodes, and their pods Pending, until they expire (40 s): drop them.
  local i
  for ((i = 0; i < NODES; i++)); do
    kubectl -n kube-node-lease delete lease "kwok-node-$i" --ignore-not-found >/dev/null
  done
  # No --server-address / --node-port: kwok serves nothing (no logs/exec of fake pods needed).
  start kwok "$K8S_BIN/kwok" --kubeconfig="$ADMIN_KUBECONFIG" \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr="$POD_CIDR" --node-lease-duration-seconds=40 "${stage_args[@]}"

  wait_for kube-controller-manager "kube-controller-manager /healthz" component_healthy "$CONTROLLER_MANAGER_PORT"
  wait_for kube-scheduler "kube-scheduler /healthz" component_healthy "$SCHEDULER_PORT"

  # The default StorageClass whose PVCs kwok binds (volume/fast stages).
  if [[ -f "$STAGES/volume/fast/storage-class.yaml" ]]; then
    kubectl apply -f "$STAGES/volume/fast/storage-class.yaml" >/dev/null || { tail_log kube-apiserver; die "cannot create the kwok-volume StorageClass"; }
  fi
  for ((i = 0; i < NODES; i++)); do
    sed "s/NODE_NAME/kwok-node-$i/g" "$HERE/kwok-node.yaml" | kubectl apply -f - >/dev/null \
      || { tail_log kube-apiserver; die "cannot create node kwok-node-$i"; }
  done
  wait_for kwok "$NODES kwok node(s) Ready" nodes_ready
  wait_for kube-controller-manager "the default ServiceAccount in namespace default" default_sa_exists

  trap - EXIT INT TERM
  local ms=$((($(date +%s%N) - t0) / 1000000))
  log "cluster up in $((ms / 1000)).$(printf %03d $((ms % 1000)))s: API server https://127.0.0.1:$APISERVER_PORT, logs in $LOGS"
  print_env_hint
}

cmd_down() {
  local purge=0
  case "${1:-}" in
    --purge) purge=1 ;;
    "") ;;
    *) die "usage: $0 down [--purge]" ;;
  esac
  [[ -d "$K8S_STATE" ]] || return 0
  lock
  stop_all
  if ((purge)); then
    [[ -n "$K8S_STATE" && "$K8S_STATE" != / ]] || die "refusing to delete K8S_STATE=$K8S_STATE"
    rm -rf "$K8S_STATE"
    log "deleted $K8S_STATE"
  fi
}

cmd_status() {
  local c pid all=0
  for c in "${COMPONENTS[@]}"; do
    if pid=$(pid_of "$c"); then
      printf '%-24s running (pid %s)\n' "$c" "$pid"
    else
      printf '%-24s stopped\n' "$c"
      all=1
    fi
  done
  if running kube-apiserver && [[ -x "$K8S_BIN/kubectl" ]]; then
    echo
    kubectl get nodes -o wide || all=1
  fi
  return "$all"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  status) shift; cmd_status "$@" ;;
  env) print_env_hint ;;
  *) echo "usage: $0 up | down [--purge] | status | env" >&2; exit 2 ;;
esac
