"""The test node's host side: its addresses, the bridge and iptables rule that keep pods' traffic on
this machine (``HostNetwork``), and the clean-up of what the kubelet and kube-proxy leave on the
host (cgroups, iptables chains, mounts). Also the small helpers the node's modules share."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
from pathlib import Path
from typing import ClassVar

import yaml

from .certs import CertPair

NODE_NAME = "modelway-node"
BRIDGE = "mwbr0"
POD_CIDR = "10.244.0.0/24"
NODE_IP = "10.244.0.1"  # the bridge's address: the pods' gateway, the apiserver's
DNS_IP = "10.0.0.10"  # in kube.SERVICE_CLUSTER_IP_RANGE
CLUSTER_DOMAIN = "cluster.local"


def run(*argv: str | os.PathLike[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({res.returncode}):\n{res.stderr}{res.stdout}")
    return res


def kubeconfig_file(path: Path, server: str, ca: Path, client: CertPair, user: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "node", "cluster": {"server": server, "certificate-authority": str(ca)}}],
                "users": [
                    {"name": user, "user": {"client-certificate": str(client.cert), "client-key": str(client.key)}}
                ],
                "contexts": [{"name": "node", "context": {"cluster": "node", "user": user}}],
                "current-context": "node",
            },
            sort_keys=False,
        )
    )
    return path


class HostNetwork:
    """The bridge, the sysctls and the iptables rule that keeps pods' traffic here."""

    _DROP: ClassVar[list[str]] = ["FORWARD", "-s", POD_CIDR, "!", "-d", POD_CIDR, "-j", "DROP",
             "-m", "comment", "--comment", "modelway test node: nothing leaves"]  # fmt: skip

    def __init__(self) -> None:
        self._saved_sysctls: dict[str, str] = {}

    def _sysctl(self, key: str, value: str) -> None:
        path = Path("/proc/sys") / key.replace(".", "/")
        self._saved_sysctls.setdefault(key, path.read_text().strip())
        path.write_text(value)

    def up(self) -> None:
        self.down_bridge()
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        # Mangle FORWARD runs after kube-proxy's DNAT and before any filter
        # rule kube-proxy adds: a pod's packet to an address that is neither a
        # pod nor this host (those go to INPUT) is dropped, never routed out.
        if run("iptables", "-t", "mangle", "-C", *self._DROP, check=False).returncode != 0:
            run("iptables", "-t", "mangle", "-I", *self._DROP)
        if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
            run("modprobe", "br_netfilter", check=False)
        # Pod -> ClusterIP -> pod on the same bridge: routed (DNAT), and the
        # bridged reply must pass iptables to be un-NATed.
        self._sysctl("net.ipv4.ip_forward", "1")
        self._sysctl("net.bridge.bridge-nf-call-iptables", "1")

    def down_bridge(self) -> None:
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            run("ip", "link", "del", BRIDGE, check=False)

    def down(self, kube_proxy: Path | None) -> None:
        self.down_bridge()
        while run("iptables", "-t", "mangle", "-D", *self._DROP, check=False).returncode == 0:
            pass
        for key, value in self._saved_sysctls.items():
            (Path("/proc/sys") / key.replace(".", "/")).write_text(value)
        flush_kube_rules(kube_proxy)


def remove_pod_cgroups() -> None:
    """The kubelet's (now empty) kubepods cgroups on every v1 hierarchy."""
    root = Path("/sys/fs/cgroup")
    for top in root.glob("*/kubepods") if root.is_dir() else ():
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):  # still in use, or not a cgroup directory
                os.rmdir(dirpath)


def flush_kube_rules(kube_proxy: Path | None) -> None:
    """Remove what kube-proxy and the kubelet added to iptables: `kube-proxy
    --cleanup`, then any KUBE-* chain left (the kubelet's canaries, IPv6)."""
    if kube_proxy is not None:
        run(kube_proxy, "--cleanup", check=False)
    for save, tables in (("iptables-save", "iptables"), ("ip6tables-save", "ip6tables")):
        for table in ("filter", "nat", "mangle"):
            lines = run(save, "-t", table, check=False).stdout.splitlines()
            chains = [line[1:].split()[0] for line in lines if line.startswith(":KUBE-")]
            for line in lines:
                words = shlex.split(line)
                if line.startswith("-A ") and "KUBE-" in line and not words[1].startswith("KUBE-"):
                    run(tables, "-t", table, "-D", *words[1:], check=False)
            for chain in chains:
                run(tables, "-t", table, "-F", chain, check=False)
            for chain in chains:
                run(tables, "-t", table, "-X", chain, check=False)


def unmount_under(path: Path) -> None:
    """Lazily unmount what containerd and the kubelet left mounted in ``path``."""
    prefix = str(path.resolve())
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        run("umount", "-l", mount, check=False)


def expect(result: tuple[int, object], what: str) -> None:
    status, body = result
    if status not in (200, 201):
        raise RuntimeError(f"creating {what}: HTTP {status}: {body}")
