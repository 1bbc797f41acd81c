# Shared settings of the deploy/k8s-local scripts (sourced, not run).
K8S_CACHE=${RECSYS_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/recsys-k8s}
K8S_BIN="$K8S_CACHE/bin"
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
K8S_STATE=${RECSYS_K8S_STATE:-$REPO_ROOT/var/k8s}

log() { printf '[k8s-local %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
