#!/usr/bin/env bash
# Build every target of docker/Dockerfile with a real Docker engine and report the image sizes.
#
#   deploy/images/build.sh [TARGET ...]        (default: all targets; `make images` runs this)
#
# Starts the project's own dockerd (deploy/images/dockerd.sh: no host networking) unless DOCKER_HOST points at
# an engine already, supplies the base image locally when no registry is reachable (deploy/images/base-image.sh),
# and tags ghcr.io/recsys/recsys-<target>:<version>, the names the Helm chart pulls by default.
# Where the PyTorch CPU wheel index cannot be reached, torch comes from PyPI (the same pinned version; PyPI's
# Linux wheel carries the CUDA libraries, so the torch-bearing images are larger than a user's CPU build).
# Last line: one JSON object {"images": {target: bytes}, "seconds": ...}.
set -euo pipefail
cd "$(dirname "$0")/../.."
ALL_TARGETS=(features candidates ranking gateway monitoring jobs)
TARGETS=("$@"); ((${#TARGETS[@]})) || TARGETS=("${ALL_TARGETS[@]}")
REGISTRY=${RECSYS_IMAGE_REGISTRY:-ghcr.io/recsys/recsys}
TAG=${RECSYS_IMAGE_TAG:-$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')}
log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
start=$(date +%s)

mkdir -p var/docker  # the build logs
if [[ -z "${DOCKER_HOST:-}" ]]; then
  bash deploy/images/dockerd.sh up
  eval "$(bash deploy/images/dockerd.sh env)"
fi
# BuildKit (cache mounts for pip): the engine's own client where the CLI on PATH lacks the buildx plugin.
DOCKER=docker
if ! docker buildx version >/dev/null 2>&1 && [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; fi
export DOCKER_BUILDKIT=1

base=$(sed -n 's/^ARG PYTHON_IMAGE=//p' docker/Dockerfile)
bash deploy/images/base-image.sh "$base"

build_args=()
torch_index=$(sed -n 's/^ARG TORCH_INDEX_URL=//p' docker/Dockerfile)
if ! timeout 10 python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=8)" "$torch_index/" 2>/dev/null; then
  log "$torch_index unreachable: torch==pinned from PyPI"
  build_args+=(--build-arg "TORCH_INDEX_URL=${PIP_INDEX_URL:-https://pypi.org/simple}")
fi

for target in "${TARGETS[@]}"; do
  log "building $target -> $REGISTRY-$target:$TAG"
  t0=$(date +%s)
  $DOCKER build --network=host --progress=plain "${build_args[@]}" -f docker/Dockerfile --target "$target" \
    -t "$REGISTRY-$target:$TAG" . >"var/docker/build-$target.log" 2>&1 \
    || { log "build of $target failed; tail of var/docker/build-$target.log:"; tail -30 "var/docker/build-$target.log" >&2; exit 1; }
  log "built $target in $(( $(date +%s) - t0 )) s"
done

# Layers of earlier builds (an old requirements layer is ~6.5 GB) would fill the disk build after build: keep
# the images just built and at most RECSYS_DOCKER_CACHE_KEEP of build cache, most recently used first.
$DOCKER image prune -f >/dev/null
$DOCKER builder prune -f --keep-storage "${RECSYS_DOCKER_CACHE_KEEP:-10GB}" >/dev/null
log "pruned dangling images and build cache beyond ${RECSYS_DOCKER_CACHE_KEEP:-10GB}: $(df -h --output=avail "$HOME" | tail -1 | tr -d ' ') free"

printf '\n%-12s %s\n' target size
json="{"
for target in "${TARGETS[@]}"; do
  size=$(docker image inspect -f '{{.Size}}' "$REGISTRY-$target:$TAG")
  printf '%-12s %s\n' "$target" "$(numfmt --to=iec --suffix=B "$size")"
  json+="\"$target\": $size, "
done
echo "{\"images\": ${json%, }}, \"registry\": \"$REGISTRY\", \"tag\": \"$TAG\", \"seconds\": $(( $(date +%s) - start ))}"
