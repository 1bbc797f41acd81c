#!/usr/bin/env bash
# A throw-away Redis on loopback (no persistence, no systemd), for Feast's Redis online store and tests.
#
#   deploy/local/redis.sh install|start|stop|status [--port N] [--host ADDR] [--password PW] [--state-dir DIR]
#                                                   [--watch-pid PID]
#
# Environment (flags win):
#   REDIS_PORT             port                                   (default 6390, not the system 6379)
#   REDIS_HOST             address to bind and PING               (default 127.0.0.1; e.g. a bridge address
#                          inside a network namespace, as deploy/k8s-local/node.sh's pods reach it)
#   REDIS_PASSWORD         requirepass of the default user        (default: none; a server bound to an address
#                          other than loopback needs one: protected mode refuses other clients without it)
#   REDIS_STATE_DIR        pidfile, log and working dir           (default <repo>/var/redis)
#   REDIS_WATCH_PID        with `start`: stop the server once this PID is gone (tests pass their own)
#   REDIS_READY_TIMEOUT_S  seconds `start` waits for PING         (default 10)
#
# `install` runs apt-get only when redis-server is missing. `start` daemonizes redis-server with a pidfile
# and returns when it answers PING. `stop` signals only the PID in the pidfile (TERM, wait, KILL).
# `status` exits 0 when running, 3 when not.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

PORT="${REDIS_PORT:-6390}"
HOST="${REDIS_HOST:-127.0.0.1}"
PASSWORD="${REDIS_PASSWORD:-}"
STATE_DIR="${REDIS_STATE_DIR:-$REPO/var/redis}"
READY_TIMEOUT_S="${REDIS_READY_TIMEOUT_S:-10}"
WATCH_PID="${REDIS_WATCH_PID:-}"
STOP_TIMEOUT_S=10
NAME=redis
SCRIPT="$HERE/redis.sh"
# shellcheck source=deploy/local/lib.sh
source "$HERE/lib.sh"

[[ $# -ge 1 ]] || usage
CMD="$1"; shift
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --host) HOST="$2"; shift 2 ;;
    --password) PASSWORD="$2"; shift 2 ;;
    --state-dir) STATE_DIR="$2"; shift 2 ;;
    --watch-pid) WATCH_PID="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "redis.sh: unknown argument $1" >&2; usage ;;
  esac
done

STATE_DIR="$(realpath -m "$STATE_DIR")"
PIDFILE="$STATE_DIR/redis.pid"
LOGFILE="$STATE_DIR/redis.log"

# The PID in the pidfile, if that process is alive and is a redis-server.
running_pid() {
  local pid
  pid="$(pidfile_pid)" || return 1
  grep -q redis-server "/proc/$pid/cmdline" 2>/dev/null || [[ "$(cat "/proc/$pid/comm")" == redis-server* ]] \
    || return 1
  echo "$pid"
}

ping_ok() { [[ "$(REDISCLI_AUTH="$PASSWORD" redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null)" == "PONG" ]]; }

cmd_install() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
  local sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  echo "redis.sh: installing redis-server with apt-get" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
}

cmd_start() {
  local pid
  mkdir -p "$STATE_DIR"
  if pid="$(running_pid)"; then
    echo "redis: already running (pid $pid, $HOST:$PORT)"
    return 0
  fi
  rm -f "$PIDFILE"
  cmd_install
  local started=$SECONDS auth=()
  # The password as a config line on stdin (`-`), not on the command line.
  [[ -z "$PASSWORD" ]] || auth=(-)
  # The pidfile is written by redis itself once daemonized.
  { [[ -z "$PASSWORD" ]] || printf 'requirepass "%s"\n' "$PASSWORD"; } | \
  redis-server "${auth[@]}" --bind "$HOST" --port "$PORT" --protected-mode yes --daemonize yes \
    --pidfile "$PIDFILE" --logfile "$LOGFILE" --dir "$STATE_DIR" --save "" --appendonly no \
    || { echo "redis: redis-server failed to start:" >&2; tail -n 20 "$LOGFILE" >&2 || true; exit 1; }
  start_watchdog
  local deadline=$((SECONDS + READY_TIMEOUT_S))
  while ((SECONDS < deadline)); do
    if pid="$(running_pid)" && ping_ok; then
      echo "redis: ready on $HOST:$PORT (pid $pid, $((SECONDS - started)) s)"
      return 0
    fi
    sleep 0.05
  done
  echo "redis: no PONG within ${READY_TIMEOUT_S} s; last lines of $LOGFILE:" >&2
  tail -n 20 "$LOGFILE" >&2 || true
  cmd_stop >&2 || true
  exit 1
}

dispatch "$CMD"
