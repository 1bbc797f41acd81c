#!/usr/bin/env bash
# ghz, the open-loop gRPC load generator benchmarks/load.py drives the gateway with, built from the Go module
# proxy (github.com/bojand/ghz/cmd/ghz) into var/tools/bin; nothing else is downloaded.
#
#   deploy/local/ghz.sh install    build it when var/tools/bin/ghz is missing or another version
#   deploy/local/ghz.sh path       print the binary's path (exit 3 when it is not built)
set -euo pipefail

GHZ_VERSION="${RECSYS_GHZ_VERSION:-v0.120.0}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin_dir="$root/var/tools/bin"
stamp="$bin_dir/.ghz-$GHZ_VERSION"

case "${1:-}" in
  install)
    [[ -x "$bin_dir/ghz" && -f "$stamp" ]] && exit 0
    command -v go >/dev/null || { echo "ghz.sh: needs Go (https://go.dev) on PATH" >&2; exit 3; }
    mkdir -p "$bin_dir"
    echo "ghz.sh: building ghz $GHZ_VERSION from the Go module proxy" >&2
    GOBIN="$bin_dir" GOFLAGS=-mod=mod go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION"
    rm -f "$bin_dir"/.ghz-* && touch "$stamp"
    ;;
  path)
    [[ -x "$bin_dir/ghz" ]] || { echo "ghz.sh: not built; run deploy/local/ghz.sh install" >&2; exit 3; }
    echo "$bin_dir/ghz"
    ;;
  *) echo "usage: $0 install|path" >&2; exit 2 ;;
esac
