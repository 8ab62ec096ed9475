#!/usr/bin/env bash
# Builds the Redis image the test node runs for the chart's redis.enabled=true
# (the node reaches no registry, so not Docker Hub's redis either), into
# <repo>/.tools/images/redis.tar as localhost/modelway-redis:7:
#   Debian 12's redis-server (7.0, the Redis the rest of the tests run) on a
#   minbase rootfs made by mmdebstrap. The chart's own command and arguments
#   start it, as they start the public image.
# Rebuilt only when this file changes (.tools/stamps/image-redis). A file of
# its own, not a step of build.sh, whose hash is part of every other image's
# stamp: adding Redis does not rebuild them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
OUT="$ROOT/.tools/images"
STAMPS="$ROOT/.tools/stamps"
WORK="$ROOT/.tools/buildah"
mkdir -p "$OUT" "$STAMPS" "$WORK"

BUILDAH=(buildah --root "$WORK/storage" --runroot "$WORK/run" --storage-driver overlay)
REF=localhost/modelway-redis:7
SUITE=bookworm
PACKAGES=redis-server,redis-tools

log() { printf '[image] %s\n' "$*" >&2; }

main() {
  local want t0 rootfs ctr
  want="$( { sha256sum "${BASH_SOURCE[0]}"; echo "$SUITE $PACKAGES"; } | sha256sum | cut -d' ' -f1)"
  if [[ -f "$OUT/redis.tar" && -f "$STAMPS/image-redis" && "$(cat "$STAMPS/image-redis")" == "$want" ]]; then
    log "redis: up to date"; return
  fi
  t0="$(date +%s)"
  rootfs="$WORK/redis-rootfs.tar"
  mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$SUITE" "$rootfs"
  ctr="$("${BUILDAH[@]}" from scratch)"
  "${BUILDAH[@]}" add "$ctr" "$rootfs" / >/dev/null
  # The public image's layout: /data as the working directory, the redis user.
  "${BUILDAH[@]}" config --cmd '["redis-server"]' --workingdir /data --user 999:1000 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 "$ctr"
  "${BUILDAH[@]}" commit -q --rm "$ctr" "$REF" >/dev/null
  rm -f "$rootfs" "$OUT/.redis.tar"
  "${BUILDAH[@]}" push -q "$REF" "docker-archive:$OUT/.redis.tar:$REF" >/dev/null
  mv -f "$OUT/.redis.tar" "$OUT/redis.tar"
  echo "$want" > "$STAMPS/image-redis"
  log "redis: built in $(($(date +%s) - t0))s"
}

main "$@"; exit
