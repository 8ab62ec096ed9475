"""A one-node Kubernetes cluster from real parts, as local processes.

Beside its own etcd and kube-apiserver (``KubeControlPlane`` with a node
address), this starts:

- containerd (Debian's) with its own root, state and socket under the work
  dir, the CRI plugin's CNI config pointing at a bridge with host-local IPAM
  and its sandbox image set to the pause image the harness imports;
- a kubelet registered as ``system:node:<name>`` (a client cert from the
  session CA; the apiserver runs the Node authorizer), cgroupfs on cgroup v1
  (``failCgroupV1: false``: this machine has no cgroup v2), that asks the
  apiserver what each caller may do (Webhook authorization; the apiserver's own
  kubelet client is bound to ``system:kubelet-api-admin``, as kubeadm does);
- kube-controller-manager and kube-scheduler with their own default RBAC
  identities (client certs), kube-proxy in iptables mode;
- CoreDNS as a process on the bridge address, behind a ``kube-dns`` Service
  (ClusterIP ``DNS_IP``) whose EndpointSlice points at it, as its own
  ServiceAccount (``COREDNS_ACCOUNT``) that may only list and watch what it
  serves.

Networking stays on this machine: pods live in network namespaces on the
bridge ``BRIDGE`` (``POD_CIDR``); a mangle-table rule drops anything a pod
sends that is not for a pod or this host (after kube-proxy's DNAT, so
Services work), and CoreDNS has no upstream. The images are Docker archives
made by ``tests/tools/image/build.sh`` and imported with ``ctr``.

The node changes host state (a bridge, iptables chains, sysctls), so only
one runs per machine at a time: a lock file serialises sessions.

This module starts and stops the parts; ``node_host`` holds the addresses and the
host's network and clean-up, ``node_images`` containerd and the images,
``node_kubelet`` the kubelet's, kube-proxy's and CoreDNS's configuration.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .kube import KubeCluster, KubeControlPlane
from .node_host import NODE_IP, NODE_NAME, HostNetwork, kubeconfig_file, remove_pod_cgroups, run, unmount_under
from .node_images import IMAGES, containerd_config, import_images, reap_leftovers, remove_all_containers
from .node_kubelet import (
    allow_apiserver_to_kubelet,
    coredns_kubeconfig,
    corefile,
    kube_proxy_config,
    kubelet_config,
    publish_dns,
)
from .ports import PortAllocator
from .process import ManagedProcess

LOCK_FILE = Path("/run/modelway-test-node.lock")
READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class NodeCluster:
    """A running one-node cluster: ``kube`` as admin, plus what runs pods."""

    kube: KubeCluster
    node_name: str
    containerd_socket: Path
    images: dict[str, str]  # name -> image reference loaded on the node
    workdir: Path

    @property
    def kubeconfig(self) -> Path:
        return self.kube.kubeconfig


class KubeNode:
    """Starts the whole one-node cluster in ``workdir``; ``stop`` tears it down."""

    def __init__(self, *, tools: dict[str, Path], images_dir: Path, workdir: Path, ports: PortAllocator) -> None:
        self._tools = tools
        self._images_dir = images_dir
        self.workdir = workdir
        self._ports = ports
        self.processes: list[ManagedProcess] = []
        self.plane: KubeControlPlane | None = None
        self._net = HostNetwork()
        self._lock: IO[str] | None = None

    # -- lifecycle -------------------------------------------------------

    def start(self) -> NodeCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        self._net.up()
        self.plane = KubeControlPlane(
            apiserver=self._tools["kube-apiserver"],
            etcd=self._tools["etcd"],
            workdir=self.workdir / "control-plane",
            ports=self._ports,
            node_address=NODE_IP,
        )
        try:
            kube = self.plane.start()
        finally:
            self.processes.extend(self.plane.processes)
        socket = self._start_containerd()
        import_images(self._tools["ctr"], socket, self._images_dir)
        self._start_controller_manager(kube)
        self._start_scheduler(kube)
        self._start_kube_proxy(kube)
        allow_apiserver_to_kubelet(kube)
        self._start_kubelet(kube, socket)
        self._start_coredns(kube)
        self._wait_node_ready(kube)
        return NodeCluster(
            kube=kube, node_name=NODE_NAME, containerd_socket=socket, images=dict(IMAGES), workdir=self.workdir
        )

    def stop(self) -> None:
        # The kubelet and its peers first (a running kubelet restarts what is
        # killed), then the containers (they outlive containerd in their
        # shims), containerd, the control plane, and last the host's network.
        keep = ("containerd", "etcd", "kube-apiserver")
        for proc in reversed(self.processes):
            if proc.name not in keep:
                proc.stop()
        sock = self.workdir / "containerd" / "containerd.sock"
        containerd = next((p for p in self.processes if p.name == "containerd"), None)
        if containerd is not None and containerd.alive():
            remove_all_containers(self._tools["ctr"], sock)
            containerd.stop()
        reap_leftovers(self.workdir, sock)
        if self.plane is not None:
            self.plane.stop()
        unmount_under(self.workdir)
        # The kubelet links every container's log into /var/log/containers
        # (a fixed path); the links into this work dir are ours to remove.
        containers_logs = Path("/var/log/containers")
        for link in containers_logs.glob("*.log") if containers_logs.is_dir() else ():
            if link.is_symlink() and str(self.workdir) in os.readlink(link):
                link.unlink(missing_ok=True)
        self._net.down(self._tools.get("kube-proxy"))
        remove_pod_cgroups()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _take_lock(self) -> None:
        self._lock = open(LOCK_FILE, "w")  # noqa: SIM115 - held until stop()
        deadline = time.monotonic() + 600
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"another test node holds {LOCK_FILE} for 10 minutes") from None
                time.sleep(1)

    # -- components ------------------------------------------------------

    def _client(self, kube: KubeCluster, name: str, cn: str, orgs: tuple[str, ...] = ()) -> Path:
        pair = kube.ca.issue(name, common_name=cn, organizations=orgs, client=True)
        return kubeconfig_file(self.workdir / f"{name}.kubeconfig", kube.server, kube.ca.cert, pair, cn)

    def _start(self, name: str, argv: list[str | os.PathLike[str]], **kw: object) -> ManagedProcess:
        proc = ManagedProcess(name, argv, self.workdir / f"{name}.log", **kw)  # type: ignore[arg-type]
        self.processes.append(proc)
        return proc

    def _start_containerd(self) -> Path:
        config, sock = containerd_config(self.workdir)
        proc = self._start("containerd", [self._tools["containerd"], "--config", config, "--log-level", "info"])

        def serving() -> bool:
            return run(self._tools["ctr"], "--address", sock, "version", check=False).returncode == 0

        proc.wait_ready(serving, timeout=READY_TIMEOUT, what="serving")
        return sock

    def _start_controller_manager(self, kube: KubeCluster) -> None:
        kc = self._client(kube, "kube-controller-manager", "system:kube-controller-manager")
        pki = kube.ca.dir
        self._start(
            "kube-controller-manager",
            [
                self._tools["kube-controller-manager"],
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self._ports.take()}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--root-ca-file={kube.ca.cert}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--cluster-signing-cert-file={kube.ca.cert}",
                f"--cluster-signing-key-file={kube.ca.key}",
                "--v=1",
            ],
        )

    def _start_scheduler(self, kube: KubeCluster) -> None:
        kc = self._client(kube, "kube-scheduler", "system:kube-scheduler")
        self._start(
            "kube-scheduler",
            [
                self._tools["kube-scheduler"],
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self._ports.take()}",
                "--leader-elect=false",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self, kube: KubeCluster) -> None:
        kc = self._client(kube, "kube-proxy", "system:kube-proxy")
        config = kube_proxy_config(self.workdir, kubeconfig=kc, ports=self._ports)
        self._start("kube-proxy", [self._tools["kube-proxy"], f"--config={config}", "--v=1"])

    def _start_kubelet(self, kube: KubeCluster, sock: Path) -> None:
        kc = self._client(kube, "kubelet", f"system:node:{NODE_NAME}", ("system:nodes",))
        config = kubelet_config(self.workdir, sock=sock, client_ca=kube.ca.cert, ports=self._ports)
        root = self.workdir / "kubelet"
        self._start(
            "kubelet",
            [
                self._tools["kubelet"],
                f"--config={config}",
                f"--kubeconfig={kc}",
                f"--root-dir={root}",
                f"--cert-dir={root / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                "--v=1",
            ],
        )

    def _start_coredns(self, kube: KubeCluster) -> None:
        kc = coredns_kubeconfig(kube, self.workdir)
        health, ready = self._ports.take(), self._ports.take()
        conf = corefile(self.workdir, kubeconfig=kc, health=health, ready=ready)
        proc = self._start("coredns", [self._tools["coredns"], "-conf", conf])

        def dns_ready() -> bool:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{ready}/ready", timeout=2) as r:
                return r.status == 200

        proc.wait_ready(dns_ready, timeout=READY_TIMEOUT, what="ready")
        publish_dns(kube)

    def _wait_node_ready(self, kube: KubeCluster) -> None:
        kubelet = next(p for p in self.processes if p.name == "kubelet")

        def ready() -> bool:
            status, node = kube.request("GET", f"/api/v1/nodes/{NODE_NAME}", timeout=3)
            if status != 200:
                return False
            conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            return conditions.get("Ready") == "True"

        kubelet.wait_ready(ready, timeout=READY_TIMEOUT, what=f"node {NODE_NAME} Ready")
        for proc in self.processes:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited ({proc.proc.returncode}):\n{proc.log_tail()}")
