"""Where the harness finds its binaries, and what to say when one is missing.

Everything is looked up in ``<repo>/.tools/bin`` (filled by ``make tools``,
i.e. ``tests/tools/build.sh``) and nowhere else for the Go tools, so a test
never silently runs against some other kubectl/helm on PATH. Redis comes from
Debian; build.sh links it into the same folder, and PATH is the fallback.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = Path(os.environ.get("MODELWAY_TOOLS_BIN", REPO_ROOT / ".tools" / "bin"))

# binary -> where it comes from, quoted in the error a test fails with.
_ORIGIN: dict[str, str] = {
    "kube-apiserver": "builds it from tests/tools/kube (k8s.io/kubernetes)",
    "kubectl": "builds it from tests/tools/kube (k8s.io/kubernetes)",
    "helm": "builds it from tests/tools/kube (helm.sh/helm/v3)",
    "etcd": "builds it from tests/tools/etcd (go.etcd.io/etcd/server/v3)",
    "jaeger": "builds it from tests/tools/jaeger (github.com/jaegertracing/jaeger)",
    "kubelet": "builds it from tests/tools/kube (k8s.io/kubernetes)",
    "kube-controller-manager": "builds it from tests/tools/kube (k8s.io/kubernetes)",
    "kube-scheduler": "builds it from tests/tools/kube (k8s.io/kubernetes)",
    "kube-proxy": "builds it from tests/tools/kube (k8s.io/kubernetes)",
    "coredns": "builds it from tests/tools/coredns (github.com/coredns/coredns)",
    "containerd": "installs Debian's containerd with apt-get",
    "ctr": "installs Debian's containerd with apt-get",
    "redis-server": "installs Debian's redis-server with apt-get",
    "redis-cli": "installs Debian's redis-server (and redis-tools) with apt-get",
}

# Only these may come from PATH when .tools/bin lacks them: they are Debian
# packages, not pinned builds.
_PATH_FALLBACK = {"redis-server", "redis-cli", "containerd", "ctr"}


class ToolMissing(RuntimeError):
    """A harness binary is not built/installed; the message says how to get it."""


def find_tool(name: str) -> Path:
    """Path of an executable harness tool, or ToolMissing with a how-to."""
    candidate = TOOLS_BIN / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    if name in _PATH_FALLBACK:
        found = shutil.which(name)
        if found:
            return Path(found)
    origin = _ORIGIN.get(name, "builds the test tools")
    raise ToolMissing(f"{name} not found in {TOOLS_BIN}: run `make tools` ({origin}; see tests/tools/build.sh)")
