#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft, broker+controller in one JVM) on loopback, from Maven Central.
#
#   deploy/local/kafka.sh install|start|stop|status [--port N] [--host ADDR] [--controller-port N] [--state-dir DIR]
#                                                    [--partitions N] [--watch-pid PID]
#                                                    [--sasl-port N] [--ssl-port N] [--scram-users U=P,...]
#                                                    [--tls-dir DIR]
#
# Environment (flags win):
#   KAFKA_PORT             client listener port                      (default 9092)
#   KAFKA_HOST             address of the client listeners, bound and advertised (default 127.0.0.1; e.g. a
#                          bridge address inside a network namespace, as deploy/k8s-local/node.sh's pods reach it)
#   KAFKA_CONTROLLER_PORT  KRaft controller listener port            (default 9093)
#   KAFKA_STATE_DIR        data, config, pidfile and log             (default <repo>/var/kafka)
#   KAFKA_LIB_DIR          broker jars, shared by all state dirs     (default <repo>/var/kafka/lib)
#   KAFKA_NUM_PARTITIONS   partitions of auto-created topics         (default 3)
#   KAFKA_HEAP             JVM heap options                          (default "-Xms128m -Xmx512m")
#   KAFKA_JVM_OPTS         other JVM options      (default "-XX:+UseSerialGC -XX:TieredStopAtLevel=1":
#                          fewer threads and faster start-up on a small machine)
#   KAFKA_WATCH_PID        with `start`: stop the server once this PID is gone (tests pass their own)
#   KAFKA_READY_TIMEOUT_S  seconds `start` waits for readiness       (default 60)
#   KAFKA_SASL_PORT        a SASL_PLAINTEXT listener (SCRAM-SHA-512) on this port          (default: none)
#   KAFKA_SSL_PORT         a SASL_SSL listener (SCRAM-SHA-512 over TLS) on this port       (default: none)
#   KAFKA_SCRAM_USERS      SCRAM users of those listeners, name=password[,...] (letters, digits, . _ -)
#                          (default recsys=recsys-secret)
#   KAFKA_TLS_DIR          server-keystore.pem + ca.crt from deploy/local/certs.sh, made there when missing
#                          (default <repo>/var/tls)
#
# The PLAINTEXT listener (--port) always stays: the broker's own traffic and the readiness check use it. Clients
# of the SASL listeners set RECSYS_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT (or SASL_SSL with
# RECSYS_KAFKA_SSL_CAFILE=<tls dir>/ca.crt), RECSYS_KAFKA_SASL_USERNAME and RECSYS_KAFKA_SASL_PASSWORD. Users are
# added when the storage is formatted; when --scram-users changes for an existing state dir they are upserted
# after start (with the repo's .venv and kafka-python).
#
# `start` formats the storage once, starts the JVM detached with a pidfile, and returns only when a Kafka
# Metadata request on the client port lists this broker; otherwise it stops the JVM and prints the log tail.
# `stop` signals only the PID in the pidfile (TERM, wait, KILL). `status` exits 0 when running, 3 when not.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

PORT="${KAFKA_PORT:-9092}"
HOST="${KAFKA_HOST:-127.0.0.1}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
STATE_DIR="${KAFKA_STATE_DIR:-$REPO/var/kafka}"
LIB_DIR="$(realpath -m "${KAFKA_LIB_DIR:-$REPO/var/kafka/lib}")"
PARTITIONS="${KAFKA_NUM_PARTITIONS:-3}"
HEAP="${KAFKA_HEAP:--Xms128m -Xmx512m}"
JVM_OPTS="${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1}"
READY_TIMEOUT_S="${KAFKA_READY_TIMEOUT_S:-60}"
WATCH_PID="${KAFKA_WATCH_PID:-}"
SASL_PORT="${KAFKA_SASL_PORT:-}"
SSL_PORT="${KAFKA_SSL_PORT:-}"
SCRAM_USERS="${KAFKA_SCRAM_USERS:-recsys=recsys-secret}"
TLS_DIR="${KAFKA_TLS_DIR:-$REPO/var/tls}"
STOP_TIMEOUT_S=30
NAME=kafka
SCRIPT="$HERE/kafka.sh"
# shellcheck source=deploy/local/lib.sh
source "$HERE/lib.sh"

[[ $# -ge 1 ]] || usage
CMD="$1"; shift
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --host) HOST="$2"; shift 2 ;;
    --controller-port) CONTROLLER_PORT="$2"; shift 2 ;;
    --state-dir) STATE_DIR="$2"; shift 2 ;;
    --watch-pid) WATCH_PID="$2"; shift 2 ;;
    --partitions) PARTITIONS="$2"; shift 2 ;;
    --sasl-port) SASL_PORT="$2"; shift 2 ;;
    --ssl-port) SSL_PORT="$2"; shift 2 ;;
    --scram-users) SCRAM_USERS="$2"; shift 2 ;;
    --tls-dir) TLS_DIR="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "kafka.sh: unknown argument $1" >&2; usage ;;
  esac
done

STATE_DIR="$(realpath -m "$STATE_DIR")"
PIDFILE="$STATE_DIR/kafka.pid"
LOGFILE="$STATE_DIR/kafka.log"
CONFIG="$STATE_DIR/server.properties"
DATA_DIR="$STATE_DIR/data"
STAMP="$LIB_DIR/.installed"
TLS_DIR="$(realpath -m "$TLS_DIR")"
USERS_STAMP="$STATE_DIR/scram-users.sha256"

PYTHON="$(command -v python3 || true)"
[[ -n "$PYTHON" ]] || PYTHON="$REPO/.venv/bin/python"

# The PID in the pidfile, if that process is alive and is this state dir's broker.
running_pid() {
  local pid
  pid="$(pidfile_pid)" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$CONFIG" || return 1
  echo "$pid"
}

pom_hash() { sha256sum "$HERE/kafka/pom.xml" | cut -d' ' -f1; }

cmd_install() {
  [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(pom_hash)" ]] && return 0
  command -v mvn >/dev/null || { echo "kafka.sh: Maven (mvn) is needed to install the broker" >&2; exit 1; }
  mkdir -p "$LIB_DIR"
  # One installer at a time (parallel test sessions share the lib folder).
  exec 9>"$LIB_DIR/.lock"
  flock 9
  if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$(pom_hash)" ]]; then
    echo "kafka.sh: resolving the broker from Maven Central into $LIB_DIR" >&2
    rm -f "$STAMP" "$LIB_DIR"/*.jar
    local mvn_log="$LIB_DIR/mvn-install.log"
    if ! mvn -q -B -f "$HERE/kafka/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$LIB_DIR" >"$mvn_log" 2>&1; then
      echo "kafka.sh: Maven could not resolve the broker:" >&2
      tail -n 30 "$mvn_log" >&2
      exit 1
    fi
    pom_hash >"$STAMP"
  fi
  exec 9>&-
}

# SCRAM users as "name password" lines; exits on a malformed entry.
scram_users() {
  local entry name password
  IFS=',' read -r -a entries <<<"$SCRAM_USERS"
  for entry in "${entries[@]}"; do
    [[ -n "$entry" ]] || continue
    name="${entry%%=*}"; password="${entry#*=}"
    if [[ "$entry" != *=* || ! "$name" =~ ^[A-Za-z0-9._-]+$ || ! "$password" =~ ^[A-Za-z0-9._-]+$ ]]; then
      echo "kafka.sh: --scram-users entries are name=password (letters, digits, . _ -)" >&2
      exit 2
    fi
    echo "$name $password"
  done
}

secured() { [[ -n "$SASL_PORT" || -n "$SSL_PORT" ]]; }

listeners() {
  local out="PLAINTEXT://$HOST:$PORT"
  if [[ -n "$SASL_PORT" ]]; then out="$out,SASL_PLAINTEXT://$HOST:$SASL_PORT"; fi
  if [[ -n "$SSL_PORT" ]]; then out="$out,SASL_SSL://$HOST:$SSL_PORT"; fi
  echo "$out"
}

write_security_config() {
  secured || return 0
  local jaas="org.apache.kafka.common.security.scram.ScramLoginModule required;"
  echo "# SASL listeners: SCRAM-SHA-512 users from the cluster metadata (kafka.sh --scram-users)."
  echo "sasl.enabled.mechanisms=SCRAM-SHA-512"
  if [[ -n "$SASL_PORT" ]]; then echo "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=$jaas"; fi
  if [[ -n "$SSL_PORT" ]]; then
    echo "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=$jaas"
    echo "ssl.keystore.type=PEM"
    echo "ssl.keystore.location=$TLS_DIR/server-keystore.pem"
    echo "ssl.truststore.type=PEM"
    echo "ssl.truststore.location=$TLS_DIR/ca.crt"
  fi
}

# After start: when the users differ from those the storage was formatted (or last upserted) with, upsert them.
ensure_scram_users() {
  secured || return 0
  local want
  want="$(scram_users | sha256sum | cut -d' ' -f1)"
  [[ -f "$USERS_STAMP" && "$(cat "$USERS_STAMP")" == "$want" ]] && return 0
  local venv_python="$REPO/.venv/bin/python"
  if ! scram_users | "$venv_python" -c "$UPSERT_USERS" "$PORT" "$HOST" 2>"$STATE_DIR/scram.log"; then
    echo "kafka.sh: could not add the SCRAM users (needs $venv_python with kafka-python):" >&2
    tail -n 5 "$STATE_DIR/scram.log" >&2
    return 1
  fi
  echo "$want" >"$USERS_STAMP"
}

UPSERT_USERS='
import sys
from kafka import KafkaAdminClient
from kafka.admin import UserScramCredentialUpsertion

users = [line.split(" ", 1) for line in sys.stdin.read().splitlines() if line.strip()]
admin = KafkaAdminClient(bootstrap_servers=f"{sys.argv[2]}:{sys.argv[1]}")
try:
    errors = admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(name, "SCRAM-SHA-512", password) for name, password in users])
finally:
    admin.close()
bad = {user: error for user, error in errors.items() if error}
sys.exit(f"SCRAM upsert failed: {bad}" if bad else 0)
'

write_config() {
  cat >"$CONFIG" <<EOF
# Generated by deploy/local/kafka.sh at every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=$(listeners),CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=$(listeners)
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
log.dirs=$DATA_DIR
# One node: every replication factor is 1.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fast tests: no join delay for the first consumer group member, topics created on first use.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
num.partitions=$PARTITIONS
# A small machine: few threads.
num.network.threads=2
num.io.threads=2
background.threads=2
num.recovery.threads.per.data.dir=1
log.retention.hours=72
EOF
  write_security_config >>"$CONFIG"
}

cmd_start() {
  local pid
  mkdir -p "$STATE_DIR"
  if pid="$(running_pid)"; then
    echo "kafka: already running (pid $pid, $HOST:$PORT)"
    return 0
  fi
  rm -f "$PIDFILE"
  if secured; then scram_users >/dev/null; fi  # exits here on a malformed --scram-users
  cmd_install
  if [[ -n "$SSL_PORT" && ! -s "$TLS_DIR/server-keystore.pem" ]]; then
    "$HERE/certs.sh" --out "$TLS_DIR" >&2
  fi
  write_config
  local cp="$LIB_DIR/*"
  local log4j="-Dlog4j2.configurationFile=$HERE/kafka/log4j2.properties"
  if [[ ! -f "$DATA_DIR/meta.properties" ]]; then
    local cluster_id
    # A random cluster id as Kafka makes them (`kafka-storage random-uuid`): URL-safe base64 of a UUID, never
    # starting with "-" (the tool's argument parser would read such an id as an option: 1 start in 64 failed).
    cluster_id="$("$PYTHON" -c 'import base64, uuid
while (cid := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"): pass
print(cid)')"
    local scram=() name password
    if secured; then
      while read -r name password; do
        scram+=(--add-scram "SCRAM-SHA-512=[name=$name,password=$password]")
      done < <(scram_users)
    fi
    java -Xmx256m -XX:TieredStopAtLevel=1 "$log4j" -cp "$cp" kafka.tools.StorageTool format --ignore-formatted \
      -t "$cluster_id" -c "$CONFIG" "${scram[@]}" >"$STATE_DIR/format.log" 2>&1 \
      || { echo "kafka: storage format failed:" >&2; tail -n 30 "$STATE_DIR/format.log" >&2; exit 1; }
    if secured; then scram_users | sha256sum | cut -d' ' -f1 >"$USERS_STAMP"; fi
  fi
  local started=$SECONDS
  # setsid: the broker survives the caller's terminal; the inner shell writes its own PID (atomically),
  # then execs java, so the pidfile holds the broker's PID.
  # shellcheck disable=SC2086
  nohup setsid -w bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$PIDFILE" \
    java $HEAP $JVM_OPTS -Djava.awt.headless=true "$log4j" -cp "$cp" kafka.Kafka "$CONFIG" \
    >"$LOGFILE" 2>&1 </dev/null &
  local launcher=$! deadline=$((SECONDS + READY_TIMEOUT_S))
  start_watchdog
  while ((SECONDS < deadline)); do
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]] && ! alive "$pid" || { [[ -z "$pid" ]] && ! alive "$launcher"; }; then
      echo "kafka: the broker exited during start-up; last lines of $LOGFILE:" >&2
      tail -n 40 "$LOGFILE" >&2
      rm -f "$PIDFILE"
      exit 1
    fi
    if [[ -n "$pid" ]] && metadata_ok; then
      ensure_scram_users || { cmd_stop >&2 || true; exit 1; }
      echo "kafka: ready on $(listeners) (pid $pid, $((SECONDS - started)) s)"
      return 0
    fi
    sleep 0.3
  done
  echo "kafka: not ready within ${READY_TIMEOUT_S} s; last lines of $LOGFILE:" >&2
  tail -n 40 "$LOGFILE" >&2
  cmd_stop >&2 || true
  exit 1
}

# A Kafka Metadata (v4) request on the client port; succeeds when the answer comes from this state dir's
# cluster (its cluster id) and lists node 1, so another broker on the same port cannot pass for ours.
metadata_ok() {
  local cluster_id
  cluster_id="$(sed -n 's/^cluster.id=//p' "$DATA_DIR/meta.properties" 2>/dev/null)"
  "$PYTHON" - "$PORT" "$cluster_id" "$HOST" 2>/dev/null <<'EOF'
import socket, struct, sys

def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data

def string(data, pos):
    (n,) = struct.unpack_from(">h", data, pos)
    pos += 2
    return (None, pos) if n < 0 else (data[pos:pos + n].decode(), pos + n)

client = b"recsys-ready"
body = struct.pack(">hhih", 3, 4, 7, len(client)) + client + struct.pack(">i?", -1, False)
try:
    with socket.create_connection((sys.argv[3], int(sys.argv[1])), timeout=2) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", read_exact(sock, 4))
        data = read_exact(sock, size)
    correlation_id, _throttle, n_brokers = struct.unpack_from(">iii", data, 0)
    pos, nodes = 12, []
    for _ in range(n_brokers):
        (node_id,) = struct.unpack_from(">i", data, pos)
        _host, pos = string(data, pos + 4)
        _rack, pos = string(data, pos + 4)
        nodes.append(node_id)
    cluster_id, pos = string(data, pos)
    ok = correlation_id == 7 and 1 in nodes and cluster_id == sys.argv[2]
except Exception:
    ok = False
sys.exit(0 if ok else 1)
EOF
}

dispatch "$CMD"
