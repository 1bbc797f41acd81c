#!/usr/bin/env bash
# Start / stop a Docker engine (Debian's docker.io) that touches no host networking: no bridge, no iptables, no
# IP forwarding or masquerading, a unix socket only. Containers get --network=none or share another container's
# network namespace; image builds that pip-install use --network=host (the engine itself adds nothing to it).
#
#   deploy/images/dockerd.sh up | down | status | env
#
# State (socket, pid, exec root) under var/docker; images under $RECSYS_DOCKER_ROOT (default
# ~/.cache/recsys-docker) so that a fresh clone reuses the images built before. One engine per data root: the
# file <data root>.engine names the engine that owns it (PID and socket), and `up` from another clone reuses a
# live one instead of starting a second dockerd on the same folder; `env` prints the socket of that engine.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STATE=${RECSYS_DOCKER_STATE:-$REPO_ROOT/var/docker}
DATA_ROOT=${RECSYS_DOCKER_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/recsys-docker}
SOCK="$STATE/docker.sock"
PIDFILE="$STATE/dockerd.pid"
OWNER="$DATA_ROOT.engine"

log() { printf '[dockerd %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

install() {
  command -v dockerd >/dev/null && command -v containerd >/dev/null && return 0
  log "installing Debian's docker.io"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
}

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

owner_sock() {  # the socket of the live dockerd that owns $DATA_ROOT, if any
  local pid sock
  [[ -f "$OWNER" ]] || return 1
  read -r pid sock < "$OWNER" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && grep -qa dockerd "/proc/$pid/cmdline" 2>/dev/null && [[ -S "$sock" ]] || return 1
  echo "$sock"
}

up() {
  install
  running && return 0
  local other
  if other=$(owner_sock); then log "reusing the engine that owns $DATA_ROOT ($other)"; return 0; fi
  mkdir -p "$STATE" "$DATA_ROOT"
  log "starting dockerd (socket $SOCK, data $DATA_ROOT)"
  # dockerd starts its own containerd (its state under --exec-root / --data-root).
  setsid dockerd --host "unix://$SOCK" --pidfile "$PIDFILE" --data-root "$DATA_ROOT" --exec-root "$STATE/exec" \
    --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    --userland-proxy=false --storage-driver=overlay2 >"$STATE/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 120); do
    if docker -H "unix://$SOCK" version >/dev/null 2>&1; then
      echo "$(cat "$PIDFILE") $SOCK" > "$OWNER"
      log "dockerd ready"; return 0
    fi
    sleep 0.5
  done
  log "dockerd did not start; tail of $STATE/dockerd.log:"; tail -20 "$STATE/dockerd.log" >&2; return 1
}

down() {
  running || { rm -f "$PIDFILE"; return 0; }
  local pid; pid=$(cat "$PIDFILE")
  log "stopping dockerd (pid $pid)"
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$PIDFILE" "$OWNER"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) running && echo "dockerd running (pid $(cat "$PIDFILE"), DOCKER_HOST=unix://$SOCK)" || echo "dockerd stopped" ;;
  env) echo "export DOCKER_HOST=unix://$(owner_sock || echo "$SOCK")" ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
