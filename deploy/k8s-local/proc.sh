# Processes of the deploy/k8s-local scripts (sourced after lib.sh, not run): each started in its own session,
# its output in $LOGS/<name>.log, its PID in $PIDS/<name>.pid, stopped by that PID only. The sourcing script
# sets LOGS, PIDS, TIMEOUT (seconds per wait), PKI and APISERVER_PORT, and may redefine binary_of.

die() { log "ERROR: $*"; exit 1; }

binary_of() { echo "$1"; }  # name: the executable a component runs (its name, unless the script says otherwise)

# The PID of component $1 when its pidfile names a live process running that component's binary.
pid_of() {
  local name=$1 bin pid exe
  bin=$(binary_of "$name")
  [[ -f "$PIDS/$name.pid" ]] || return 1
  pid=$(<"$PIDS/$name.pid") || return 1
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
  IFS= read -r -d '' exe < "/proc/$pid/cmdline" 2>/dev/null || [[ -n "${exe:-}" ]] || return 1
  [[ "$(basename -- "$exe")" == "$bin" ]] || return 1
  # A zombie (exited, not yet reaped) is not running.
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
  echo "$pid"
}

running() { pid_of "$1" >/dev/null; }

start() {  # name cmd...: own session, output to logs/<name>.log, PID to pids/<name>.pid
  local name=$1; shift
  : > "$LOGS/$name.log"
  # Not a process-group leader here (no job control), so setsid (and nsenter) exec in place: $! is the server.
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &  # fd 9: the lock of the script, not the server's
  local pid=$! i
  echo "$pid" > "$PIDS/$name.pid"
  # Until the forked shell has exec'd the server, /proc/PID names bash: wait for that, so that `running` is true.
  for ((i = 0; i < 250; i++)); do
    running "$name" && break
    [[ -e "/proc/$pid" ]] || break
    sleep 0.02
  done
  log "started $name (pid $pid)"
}

stop() {  # name: TERM, wait up to 20 s, KILL
  local name=$1 pid i
  if pid=$(pid_of "$name"); then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do running "$name" || break; sleep 0.1; done
    if running "$name"; then
      log "$name (pid $pid) ignored TERM for 20 s: KILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do running "$name" || break; sleep 0.1; done
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$PIDS/$name.pid"
}

tail_log() {  # name
  [[ -f "$LOGS/$1.log" ]] || return 0
  echo "----- last lines of $LOGS/$1.log -----" >&2
  tail -n "${RECSYS_K8S_LOG_TAIL:-40}" "$LOGS/$1.log" >&2
  echo "-----" >&2
}

# wait_for NAME WHAT CMD...: retry CMD until it succeeds; fail when process NAME dies or after $TIMEOUT s.
wait_for() {
  local name=$1 what=$2; shift 2
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if ! running "$name"; then tail_log "$name"; die "$name exited while waiting for $what"; fi
    if ((SECONDS >= deadline)); then tail_log "$name"; die "timed out after ${TIMEOUT}s waiting for $what"; fi
    sleep 0.3
  done
}

# write_kubeconfig FILE USER CERT: a kubeconfig for the API server on 127.0.0.1:$APISERVER_PORT, with the client
# certificate $PKI/CERT.{crt,key} (CERT may be a path under another folder), the CA and keys embedded, mode 600.
write_kubeconfig() {
  local file=$1 user=$2 cert=$3
  [[ "$cert" == /* ]] || cert="$PKI/$cert"
  (umask 077 && cat > "$file" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: recsys-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$cert.crt")
    client-key-data: $(base64 -w0 "$cert.key")
contexts:
- name: $user@recsys-local
  context:
    cluster: recsys-local
    user: $user
current-context: $user@recsys-local
KUBECONFIG
  )
}
