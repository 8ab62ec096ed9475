#!/usr/bin/env bash
# Builds the real components the test suite runs against, into <repo>/.tools/bin:
#   kube-apiserver, kubectl, kubelet, kube-controller-manager, kube-scheduler,
#   kube-proxy               <- tests/tools/kube   (k8s.io/kubernetes)
#   etcd                     <- tests/tools/etcd   (go.etcd.io/etcd/server/v3)
#   helm                     <- tests/tools/helm   (helm.sh/helm/v3)
#   jaeger                   <- tests/tools/jaeger (github.com/jaegertracing/jaeger)
#   coredns                  <- tests/tools/coredns (github.com/coredns/coredns, the plugins a test node needs)
#   redis-server, redis-cli  <- Debian (apt-get), linked into .tools/bin
#   containerd, ctr, runc, CNI plugins, iptables, conntrack, buildah, mmdebstrap
#                            <- Debian (apt-get): the test node's runtime and image builders
#   .tools/images/*.tar      <- tests/tools/image/build.sh: the pause, base and project images;
#                               tests/tools/image/redis.sh: the chart-run Redis (Debian's)
#
# Each Go tool group is its own module (their dependency graphs disagree, e.g.
# kubernetes wants etcd client 3.7 while the etcd server we run is 3.6), with
# go.mod and go.sum committed so a build is reproducible. A group is rebuilt
# only when the hash of its go.mod, go.sum and build recipe changes; otherwise
# this script takes seconds. A fresh clone rebuilds from the shared Go build
# cache (GOCACHE, default ~/.cache/go-build) and module cache (GOMODCACHE,
# default ~/go/pkg/mod), which takes a fraction of a cold build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS_SRC="$ROOT/tests/tools"
BIN="$ROOT/.tools/bin"
STAMPS="$ROOT/.tools/stamps"
mkdir -p "$BIN" "$STAMPS"

# Static binaries with the toolchain installed here: never fetch another Go.
export CGO_ENABLED=0 GOTOOLCHAIN=local
# Part of every stamp: change it when build_group's go build flags change.
RECIPE="go build -trimpath -ldflags=-s -w"

log() { printf '[tools] %s\n' "$*" >&2; }
now() { date +%s; }

if ! command -v go >/dev/null 2>&1; then
  log "go not found on PATH: install Go >= 1.26 (the tools are built from Go modules under tests/tools/)"
  exit 1
fi

# stamp_of MODDIR ARGS... -> hash of what decides the binaries of one group:
# its go.mod/go.sum and .go files, the Go version, the flags, ldflags and packages.
stamp_of() {
  local dir="$1"; shift
  # The module's own .go files too (coredns has a main.go of its own).
  { cat "$dir/go.mod" "$dir/go.sum"; find "$dir" -maxdepth 1 -name '*.go' | sort | xargs -r cat
    go env GOVERSION; echo "$RECIPE" "$@"; } | sha256sum | cut -d' ' -f1
}

# build_group NAME MODDIR LDFLAGS PKG:BINARY...
# Builds each PKG of the module in MODDIR into $BIN/BINARY, unless the stamp
# says the binaries on disk were built from the same inputs.
build_group() {
  local name="$1" dir="$TOOLS_SRC/$2" ldflags="$3"; shift 3
  local want have="" spec missing=0
  want="$(stamp_of "$dir" "$ldflags" "$@")"
  [[ -f "$STAMPS/$name" ]] && have="$(cat "$STAMPS/$name")"
  for spec in "$@"; do [[ -x "$BIN/${spec#*:}" ]] || missing=1; done
  if [[ "$want" == "$have" && $missing == 0 ]]; then
    log "$name: up to date"
    return
  fi
  local t0 t1
  t0="$(now)"
  log "$name: building $* (go $(go env GOVERSION), GOCACHE=$(go env GOCACHE))"
  rm -f "$STAMPS/$name"
  for spec in "$@"; do
    # -o into a temp name then mv: an interrupted build never leaves a
    # half-written binary that looks up to date.
    (cd "$dir" && go build -trimpath -ldflags="-s -w $ldflags" \
      -o "$BIN/.${spec#*:}.tmp" "${spec%%:*}")
    mv -f "$BIN/.${spec#*:}.tmp" "$BIN/${spec#*:}"
  done
  echo "$want" > "$STAMPS/$name"
  t1="$(now)"
  log "$name: built in $((t1 - t0))s"
}

# mod_version MODDIR MODULE -> the version go.mod pins.
mod_version() { (cd "$TOOLS_SRC/$1" && go list -m -f '{{.Version}}' "$2"); }

# Kubernetes binaries report their version from these ldflags; without them
# the apiserver says v0.0.0-master, which breaks helm's kubeVersion checks.
kube_ldflags() {
  local v major minor f="" pkg
  v="$(mod_version kube k8s.io/kubernetes)"
  major="${v#v}"; major="${major%%.*}"
  minor="${v#v*.}"; minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    f+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$f"
}

# What helm's own Makefile sets: its version, and the Kubernetes version that
# `helm template`/`helm lint` assume when no cluster is asked (derived from
# the client-go it is built with, v0.X.Y -> 1.X).
helm_ldflags() {
  local v client minor f="" pkg
  v="$(mod_version helm helm.sh/helm/v3)"
  client="$(mod_version helm k8s.io/client-go)"
  minor="${client#v0.}"; minor="${minor%%.*}"
  f+=" -X helm.sh/helm/v3/internal/version.version=$v"
  f+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    f+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  echo "$f"
}

# Jaeger reports the module version we pinned (its Makefile would stamp the
# matching v2 git tag, which a module download does not carry).
jaeger_ldflags() {
  echo " -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$(mod_version jaeger github.com/jaegertracing/jaeger)"
}

install_redis() {
  local t0
  t0="$(now)"
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    local sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo -n"
    if ! command -v apt-get >/dev/null 2>&1; then
      log "redis: redis-server is missing and there is no apt-get: install Redis >= 7 so redis-server and redis-cli are on PATH"
      exit 1
    fi
    log "redis: installing redis-server from Debian (apt-get)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >&2
    log "redis: installed in $(($(now) - t0))s"
  else
    log "redis: $(command -v redis-server) present"
  fi
  ln -sf "$(command -v redis-server)" "$BIN/redis-server"
  ln -sf "$(command -v redis-cli)" "$BIN/redis-cli"
}

# The test node's runtime, network and image builders: Debian packages, like
# Redis. command -> package; only the missing packages are installed.
NODE_PACKAGES=(
  containerd:containerd ctr:containerd runc:runc
  /usr/lib/cni/bridge:containernetworking-plugins
  iptables:iptables conntrack:conntrack
  buildah:buildah mmdebstrap:mmdebstrap
)

install_node_packages() {
  local t0 spec cmd missing=()
  t0="$(now)"
  for spec in "${NODE_PACKAGES[@]}"; do
    cmd="${spec%%:*}"
    if [[ "$cmd" == /* ]]; then [[ -x "$cmd" ]] && continue
    else command -v "$cmd" >/dev/null 2>&1 && continue; fi
    missing+=("${spec#*:}")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    local sudo=""
    [[ "$(id -u)" == 0 ]] || sudo="sudo -n"
    if ! command -v apt-get >/dev/null 2>&1; then
      log "node: missing ${missing[*]} and there is no apt-get: install them (Debian names) so the test node can run"
      exit 1
    fi
    log "node: installing ${missing[*]} from Debian (apt-get)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
    log "node: installed in $(($(now) - t0))s"
  else
    log "node: Debian packages present"
  fi
  for cmd in containerd ctr runc; do ln -sf "$(command -v "$cmd")" "$BIN/$cmd"; done
}

main() {
  local start step
  start="$(now)"
  # Steps to run: all by default, or those named (e.g. `build.sh jaeger`).
  local steps=("$@")
  [[ ${#steps[@]} -gt 0 ]] || steps=(kube etcd helm jaeger coredns redis node images)
  for step in "${steps[@]}"; do
    case "$step" in
      kube)
        build_group kube kube "$(kube_ldflags)" \
          k8s.io/kubernetes/cmd/kube-apiserver:kube-apiserver \
          k8s.io/kubernetes/cmd/kubectl:kubectl \
          k8s.io/kubernetes/cmd/kubelet:kubelet \
          k8s.io/kubernetes/cmd/kube-controller-manager:kube-controller-manager \
          k8s.io/kubernetes/cmd/kube-scheduler:kube-scheduler \
          k8s.io/kubernetes/cmd/kube-proxy:kube-proxy ;;
      helm)
        build_group helm helm "$(helm_ldflags)" helm.sh/helm/v3/cmd/helm:helm ;;
      etcd)
        build_group etcd etcd "" go.etcd.io/etcd/server/v3:etcd ;;
      jaeger)
        build_group jaeger jaeger "$(jaeger_ldflags)" github.com/jaegertracing/jaeger/cmd/jaeger:jaeger ;;
      coredns)
        build_group coredns coredns "" modelway.local/tools/coredns:coredns ;;
      redis)
        install_redis ;;
      node)
        install_node_packages ;;
      images)
        bash "$TOOLS_SRC/image/build.sh"
        bash "$TOOLS_SRC/image/redis.sh" ;;
      *)
        log "unknown step $step (known: kube etcd helm jaeger coredns redis node images)"; exit 2 ;;
    esac
  done
  log "total: $(($(now) - start))s; tools in $BIN"
}

# `; exit` on the same line: bash never reads past it, so editing this file
# while a build runs cannot make the running script execute the edit.
main "$@"; exit
