#!/usr/bin/env bash
# Supply the Dockerfile's base image locally when no image registry can be reached.
#
# docker/Dockerfile starts FROM the public python:3.11-slim-bookworm, which is what a user pulls. Where that
# pull fails (no registry reachable, as on our CI machines), this script makes an image of the same name from a
# Debian bookworm rootfs (debootstrap, Debian's own packages: Python 3.11 with venv and pip, ca-certificates),
# with `python` on PATH as in the official image, and tags it under that name. Nothing is replaced when the pull
# works. The rootfs is cached (tar) beside the images, so a later run only re-imports it.
#
#   DOCKER_HOST=unix://... deploy/images/base-image.sh [IMAGE]
set -euo pipefail
IMAGE=${1:-python:3.11-slim-bookworm}
CACHE=${RECSYS_DOCKER_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/recsys-docker}/base
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
log() { printf '[base-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then log "$IMAGE present"; exit 0; fi
if timeout 60 docker pull -q "$IMAGE" >/dev/null 2>&1; then log "pulled $IMAGE"; exit 0; fi
log "$IMAGE cannot be pulled: making it from a Debian bookworm rootfs"

TAR="$CACHE/bookworm-python3.11.tar"
if [[ ! -f "$TAR" ]]; then
  command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  mkdir -p "$CACHE"
  ROOT=$(mktemp -d "$CACHE/rootfs.XXXX")
  trap 'rm -rf "$ROOT"' EXIT
  log "debootstrap bookworm into $ROOT (minutes)"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates,libgomp1 \
    bookworm "$ROOT" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # The host's certificate bundle (it may carry a site's own CA) and pip's use of it, as on the host.
  cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$ROOT/etc/pip.conf"
  cp /etc/apt/sources.list.d/* "$ROOT/etc/apt/sources.list.d/" 2>/dev/null || true
  chroot "$ROOT" apt-get clean
  rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/*
  tar -C "$ROOT" -cf "$TAR.part" . && mv "$TAR.part" "$TAR"
fi
docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  -c 'CMD ["python3"]' "$TAR" "$IMAGE" >/dev/null
log "imported $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=iec))"
