#!/usr/bin/env bash
# The tools the observability tests run for real, from Debian's packages:
#   chromium + chromium-driver  the dashboard in a headless browser (tests/e2e/test_stack_seen_in_browser.py)
#   prometheus (with promtool)  the chart's alert rules (promtool check/test rules) and a real Prometheus
#                               scraping the local stack (tests/e2e/test_stack_seen_by_prometheus.py)
#
#   deploy/local/observability.sh install    apt-get only for what is missing (no service is started:
#                                            the tests start their own Prometheus on loopback and stop it)
#   deploy/local/observability.sh check      exit 0 when all are installed, 3 when not
set -euo pipefail

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || need+=(prometheus)

case "${1:-}" in
  check)
    [[ ${#need[@]} -eq 0 ]] || { echo "observability.sh: missing ${need[*]}" >&2; exit 3; } ;;
  install)
    [[ ${#need[@]} -eq 0 ]] && exit 0
    sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
    echo "observability.sh: installing ${need[*]} with apt-get" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
    ;;
  *) echo "usage: $0 install|check" >&2; exit 2 ;;
esac
