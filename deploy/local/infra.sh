#!/usr/bin/env bash
# Local infrastructure on loopback without Docker: Kafka (KRaft, from Maven Central) and Redis.
#
#   deploy/local/infra.sh up|down|status
#
# Ports and state folders come from the environment variables documented in kafka.sh and redis.sh
# (defaults: Kafka 127.0.0.1:9092 with controller 9093 and var/kafka, Redis 127.0.0.1:6390 and var/redis).
# `up` is idempotent; `status` exits 0 only when both are running.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

case "${1:-}" in
  up)
    "$HERE/kafka.sh" start
    "$HERE/redis.sh" start
    ;;
  down)
    rc=0
    "$HERE/redis.sh" stop || rc=$?
    "$HERE/kafka.sh" stop || rc=$?
    exit "$rc"
    ;;
  status)
    rc=0
    "$HERE/kafka.sh" status || rc=$?
    "$HERE/redis.sh" status || rc=$?
    exit "$rc"
    ;;
  *)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
    exit 2
    ;;
esac
