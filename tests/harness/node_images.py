"""The test node's container runtime and images: containerd's and the CNI's configuration, the images
imported from ``.tools/images`` (Docker archives made by ``tests/tools/image/build.sh``), and the
teardown of what containers leave (sandboxes, network namespaces, shims)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from .node_host import BRIDGE, NODE_IP, POD_CIDR, run

CNI_BIN_DIR = Path("/usr/lib/cni")
PAUSE_IMAGE = "localhost/modelway-pause:1"
# name in .tools/images -> the reference it is imported as.
IMAGES = {
    "pause": PAUSE_IMAGE,
    "base": "localhost/modelway-base:bookworm",
    "modelway": "localhost/modelway:test",
    "app": "localhost/modelway-test-app:1",  # the base + the official openai SDK + OpenTelemetry
    "redis": "localhost/modelway-redis:7",  # Debian's redis-server, for the chart's redis.enabled
}


def containerd_config(workdir: Path) -> tuple[Path, Path]:
    """containerd's config (its own root, state and socket under ``workdir``; the CRI plugin's CNI
    config a bridge with host-local IPAM) and the socket it will serve: (config, socket)."""
    d = workdir / "containerd"
    cni_conf = workdir / "cni" / "net.d"
    cni_conf.mkdir(parents=True, exist_ok=True)
    (cni_conf / "10-modelway.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "modelway",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": BRIDGE,
                        "isGateway": True,
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": str(workdir / "cni" / "ipam"),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],
            },
            indent=1,
        )
    )
    sock = d / "containerd.sock"
    config = d / "config.toml"
    d.mkdir(parents=True, exist_ok=True)
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    config.write_text(
        f"""version = 2
root = "{d / "root"}"
state = "{d / "state"}"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = "{d / "debug.sock"}"
[metrics]
  address = ""
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # Root here lacks CAP_SYS_RESOURCE: runc cannot lower a container's
  # oom_score_adj below containerd's own (the kubelet asks -998 for sandboxes).
  restrict_oom_score_adj = true
  enable_selinux = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d / "runc"}"
"""
    )
    return config, sock


def import_images(ctr: Path, sock: Path, images_dir: Path) -> None:
    for name, ref in IMAGES.items():
        archive = images_dir / f"{name}.tar"
        if not archive.is_file():
            raise RuntimeError(
                f"image archive {archive} missing: run `make tools` (tests/tools/image/build.sh builds it)"
            )
        run(ctr, "--address", sock, "-n", "k8s.io", "images", "import", archive)
        have = run(ctr, "--address", sock, "-n", "k8s.io", "images", "ls", "-q").stdout
        if ref not in have.split():
            raise RuntimeError(f"{archive} imported, but containerd lists no {ref}:\n{have}")


def remove_all_containers(ctr: Path, sock: Path) -> None:
    """Stop every pod sandbox the kubelet made (their shims outlive it)."""
    tasks = run(ctr, "--address", sock, "-n", "k8s.io", "tasks", "ls", "-q", check=False).stdout.split()
    for task in tasks:
        run(ctr, "--address", sock, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", task, check=False)
    deadline = time.monotonic() + 15
    for task in tasks:
        while time.monotonic() < deadline:
            if run(ctr, "--address", sock, "-n", "k8s.io", "tasks", "delete", task, check=False).returncode == 0:
                break
            time.sleep(0.2)
        run(ctr, "--address", sock, "-n", "k8s.io", "containers", "delete", task, check=False)
    # Their network namespaces (the CNI veths go with them).
    netns_dir = Path("/var/run/netns")
    for ns in netns_dir.glob("cni-*") if netns_dir.exists() else ():
        run("umount", ns, check=False)
        ns.unlink(missing_ok=True)


def reap_leftovers(workdir: Path, sock: Path) -> None:
    """What a failed teardown can leave: runc containers in this node's
    runc root, and shims serving this node's containerd socket."""
    runc_root = workdir / "containerd" / "runc" / "k8s.io"
    if runc_root.is_dir():
        for cid in run("runc", "--root", runc_root, "list", "-q", check=False).stdout.split():
            run("runc", "--root", runc_root, "delete", "--force", cid, check=False)
    marker = f"-address\0{sock}\0".encode()
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc_dir / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline and marker in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc_dir.name), 9)
