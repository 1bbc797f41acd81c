# Shared by the deploy/local server scripts (kafka.sh, redis.sh): process checks, stop, status, the watchdog
# and the command dispatch. Sourced after the script has set NAME (for messages), SCRIPT (its own path),
# STATE_DIR, PIDFILE, READY_TIMEOUT_S, STOP_TIMEOUT_S and WATCH_PID, and defined `running_pid` (the PID in the
# pidfile when that process is alive and is this server) plus cmd_install and cmd_start.

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SCRIPT"; exit 2; }

# True when the process exists and is not a zombie.
alive() { [[ -e "/proc/$1" ]] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }

# The PID in the pidfile when it names a live process (the caller checks that it is its server).
pidfile_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  echo "$pid"
}

# Signals only the PID in the pidfile: TERM, wait up to STOP_TIMEOUT_S, then KILL.
cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PIDFILE"
    echo "$NAME: not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT_S))
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if alive "$pid"; then
    echo "$NAME: pid $pid did not stop within ${STOP_TIMEOUT_S} s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.05; done
  fi
  rm -f "$PIDFILE"
  echo "$NAME: stopped (pid $pid)"
}

# Exits 0 when running, 3 when not.
cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    echo "$NAME: running (pid $pid, state $STATE_DIR)"
  else
    echo "$NAME: not running (state $STATE_DIR)"
    return 3
  fi
}

# Started detached by `start --watch-pid` as soon as the server is launched: stop the server when the
# watched process is gone, so a killed test run (or a killed `start`) leaves no server behind. Ends by
# itself when the server stops.
cmd_watch() {
  local deadline=$((SECONDS + READY_TIMEOUT_S + 5))
  until running_pid >/dev/null || ((SECONDS >= deadline)); do sleep 0.2; done
  while alive "$WATCH_PID" && running_pid >/dev/null; do sleep 1; done
  if running_pid >/dev/null; then cmd_stop; fi
}

start_watchdog() {
  [[ -n "$WATCH_PID" ]] || return 0
  nohup setsid "$SCRIPT" _watch --state-dir "$STATE_DIR" --watch-pid "$WATCH_PID" >/dev/null 2>&1 </dev/null &
}

dispatch() {
  case "$1" in
    install) cmd_install ;;
    _watch) cmd_watch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) usage ;;
  esac
}
