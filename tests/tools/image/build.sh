#!/usr/bin/env bash
# Builds the test node's images into <repo>/.tools/images as Docker archives
# (`ctr images import` takes them; no registry is involved anywhere):
#   pause.tar     localhost/modelway-pause:1  the pod sandbox (tests/tools/pause, Go)
#   base.tar      localhost/modelway-base:bookworm  Debian 12 + its Python 3.11
#                 (mmdebstrap), what the project image is built FROM in tests
#   modelway.tar  localhost/modelway:test     the project's Dockerfile, BASE=the above,
#                 its locked wheels (requirements.lock) handed in as a folder
#   app.tar       localhost/modelway-test-app:1  the base + the official openai SDK and
#                 OpenTelemetry's zero-code tracing (app-requirements.txt, locked from
#                 app-requirements.in): the apps of the e2e tests
#
# buildah (daemonless) keeps its storage in .tools/buildah. Each image is
# rebuilt only when the hash of its inputs changes (.tools/stamps/image-*).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
OUT="$ROOT/.tools/images"
STAMPS="$ROOT/.tools/stamps"
WORK="$ROOT/.tools/buildah"
mkdir -p "$OUT" "$STAMPS" "$WORK"
export CGO_ENABLED=0 GOTOOLCHAIN=local

BUILDAH=(buildah --root "$WORK/storage" --runroot "$WORK/run" --storage-driver overlay)
PAUSE_REF=localhost/modelway-pause:1
BASE_REF=localhost/modelway-base:bookworm
IMAGE_REF=localhost/modelway:test
APP_REF=localhost/modelway-test-app:1
# Debian 12's Python is 3.11, the version the public default base has.
BASE_SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
# pip for the wheel download: the project's venv (make test makes it first).
PY="$ROOT/.venv/bin/python"
[[ -x "$PY" ]] || PY=python3

log() { printf '[image] %s\n' "$*" >&2; }
now() { date +%s; }
self_hash() { sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1; }

# fresh NAME HASH: true when OUT/NAME.tar was built from inputs hashing to HASH.
fresh() { [[ -f "$OUT/$1.tar" && -f "$STAMPS/image-$1" && "$(cat "$STAMPS/image-$1")" == "$2" ]]; }

# save REF NAME: export REF from buildah's storage to OUT/NAME.tar (tmp then mv).
save() {
  rm -f "$OUT/.$2.tar"
  "${BUILDAH[@]}" push -q "$1" "docker-archive:$OUT/.$2.tar:$1" >/dev/null
  mv -f "$OUT/.$2.tar" "$OUT/$2.tar"
}

build_pause() {
  local want t0 bin ctr
  want="$( { self_hash; cat "$ROOT/tests/tools/pause/main.go" "$ROOT/tests/tools/pause/go.mod"; go env GOVERSION; } | sha256sum | cut -d' ' -f1)"
  if fresh pause "$want"; then log "pause: up to date"; return; fi
  t0="$(now)"
  bin="$WORK/pause"
  (cd "$ROOT/tests/tools/pause" && go build -trimpath -ldflags='-s -w' -o "$bin" .)
  ctr="$("${BUILDAH[@]}" from scratch)"
  "${BUILDAH[@]}" copy "$ctr" "$bin" /pause >/dev/null
  "${BUILDAH[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
  "${BUILDAH[@]}" commit -q --rm "$ctr" "$PAUSE_REF" >/dev/null
  save "$PAUSE_REF" pause
  echo "$want" > "$STAMPS/image-pause"
  log "pause: built in $(($(now) - t0))s"
}

build_base() {
  local want t0 ctr rootfs
  want="$( { self_hash; echo "$BASE_SUITE $BASE_PACKAGES"; } | sha256sum | cut -d' ' -f1)"
  if fresh base "$want"; then log "base: up to date"; return; fi
  t0="$(now)"
  rootfs="$WORK/base-rootfs.tar"
  # No mirror named: mmdebstrap takes Debian's default, and for a stable
  # release adds its updates and security suites.
  mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$BASE_SUITE" "$rootfs"
  ctr="$("${BUILDAH[@]}" from scratch)"
  "${BUILDAH[@]}" add "$ctr" "$rootfs" / >/dev/null
  "${BUILDAH[@]}" config --cmd '["python3"]' \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 "$ctr"
  "${BUILDAH[@]}" commit -q --rm "$ctr" "$BASE_REF" >/dev/null
  rm -f "$rootfs"
  save "$BASE_REF" base
  echo "$want" > "$STAMPS/image-base"
  log "base: built in $(($(now) - t0))s"
}

# What goes into the project image: the Dockerfile, the lock and the sources
# the build context admits (.dockerignore), plus the base it is built on.
image_inputs() {
  cd "$ROOT"
  cat Dockerfile .dockerignore requirements.lock pyproject.toml "$STAMPS/image-base"
  find proxy controller shared -type f -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 \
    | sort -z | xargs -0 sha256sum
}

# download_wheels LOCK -> a folder with LOCK's wheels for CPython 3.11 on
# x86_64 Linux, fetched by pip with their hashes checked: the image builds
# then need no index (and no proxy or CA of this machine's).
download_wheels() {
  local wheels="$WORK/wheels" platforms=() v
  mkdir -p "$wheels"
  for v in 17 24 27 28 31 34 36; do platforms+=(--platform "manylinux_2_${v}_x86_64"); done
  "$PY" -m pip download -q --no-deps --require-hashes -r "$1" -d "$wheels" \
    --only-binary=:all: "${platforms[@]}" --platform manylinux2014_x86_64 --platform linux_x86_64 \
    --python-version 3.11 --implementation cp >&2
  echo "$wheels"
}

build_app() {
  local want t0 wheels dir="$ROOT/tests/tools/image"
  want="$( { self_hash; cat "$dir/app.Containerfile" "$dir/app-requirements.txt" "$STAMPS/image-base"; } \
    | sha256sum | cut -d' ' -f1)"
  if fresh app "$want"; then log "app: up to date"; return; fi
  t0="$(now)"
  wheels="$(download_wheels "$dir/app-requirements.txt")"
  "${BUILDAH[@]}" bud -q --isolation chroot --pull-never --layers=false -v "$wheels:/wheels:ro" \
    --build-arg "BASE=$BASE_REF" -t "$APP_REF" -f "$dir/app.Containerfile" "$dir" >/dev/null
  save "$APP_REF" app
  echo "$want" > "$STAMPS/image-app"
  log "app: built in $(($(now) - t0))s"
}

build_image() {
  local want t0 wheels
  want="$( { self_hash; image_inputs; } | sha256sum | cut -d' ' -f1)"
  if fresh modelway "$want"; then log "modelway: up to date"; return; fi
  t0="$(now)"
  wheels="$(download_wheels "$ROOT/requirements.lock")"
  "${BUILDAH[@]}" bud -q --isolation chroot --pull-never --layers=false \
    -v "$wheels:/wheels:ro" \
    --build-arg "BASE=$BASE_REF" --build-arg 'PIP_OPTIONS=--no-index --find-links /wheels' \
    -t "$IMAGE_REF" -f "$ROOT/Dockerfile" "$ROOT" >/dev/null
  save "$IMAGE_REF" modelway
  echo "$want" > "$STAMPS/image-modelway"
  log "modelway: built in $(($(now) - t0))s"
}

main() {
  local start
  start="$(now)"
  for cmd in buildah mmdebstrap go; do
    command -v "$cmd" >/dev/null || { log "$cmd not found: run tests/tools/build.sh node (Debian packages) first"; exit 1; }
  done
  build_pause
  build_base
  # Old layers of earlier builds go (rmi --prune below): the archives are what
  # the tests use.
  build_image
  build_app
  "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
  log "images in $OUT ($(($(now) - start))s)"
}

main "$@"; exit
