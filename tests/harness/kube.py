"""A real Kubernetes control plane as local processes: etcd + kube-apiserver.

The same idea as controller-runtime's envtest: no kubelet, no scheduler, no
controller-manager, just the API. What that means for tests:

- CRDs (structural schemas, CEL rules, status subresource), watches with
  bookmarks, Leases, Events, TokenRequest/TokenReview, RBAC and admission
  webhooks all work: they live in the apiserver.
- Nothing runs Pods, and with no controller-manager a Namespace's deletion
  never finishes and no ``default`` ServiceAccount appears in a new namespace
  (create the ServiceAccounts a test needs; ``kubectl create token`` works).
  The ServiceAccount admission plugin is off so Pods can still be created.
- Webhooks: the apiserver runs on this machine, so a webhook configured with
  ``clientConfig.url: https://127.0.0.1:<port>/...`` and ``caBundle`` from
  ``KubeCluster.ca.ca_pem`` (or ``issue_serving_cert``) is called directly.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .certs import CertAuthority, CertPair, service_account_keys
from .ports import PortAllocator
from .process import ManagedProcess

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
# Who the apiserver is when it calls a kubelet (logs, exec, proxy): no group, so a
# kubelet that asks the apiserver (Webhook authorization) allows it only what RBAC
# grants this user.
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
READY_TIMEOUT = 90.0


@dataclass(frozen=True)
class KubeCluster:
    """A running control plane, as an admin (system:masters) sees it."""

    server: str  # https://127.0.0.1:<port>
    kubeconfig: Path
    ca: CertAuthority
    admin: CertPair
    etcd_url: str
    service_account_issuer: str
    workdir: Path

    def ssl_context(self) -> ssl.SSLContext:
        """Client TLS context trusting the apiserver and presenting the admin cert."""
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        ctx.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        return ctx

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> tuple[int, Any]:
        """One JSON API call as admin: (status, decoded body or text)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def issue_serving_cert(self, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> CertPair:
        """A serving cert the apiserver trusts (for webhooks served by a test)."""
        return self.ca.issue(name, common_name=name, hosts=hosts, server=True)


def _start_etcd(etcd: Path, workdir: Path, ports: PortAllocator) -> tuple[ManagedProcess, str]:
    client, peer = ports.take(), ports.take()
    url = f"http://127.0.0.1:{client}"
    peer_url = f"http://127.0.0.1:{peer}"
    proc = ManagedProcess(
        "etcd",
        [
            etcd,
            "--name=default",
            f"--data-dir={workdir / 'etcd-data'}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            # Throwaway data: fsync only costs time on a 2-core CI machine.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
        workdir / "etcd.log",
    )

    def healthy() -> bool:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return bool(json.loads(r.read()).get("health") == "true")

    try:
        proc.wait_ready(healthy, timeout=READY_TIMEOUT, what="healthy")
    except BaseException:
        proc.stop()
        raise
    return proc, url


def _write_kubeconfig(path: Path, server: str, ca: Path, admin: CertPair) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "modelway-test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "admin", "user": {"client-certificate": str(admin.cert), "client-key": str(admin.key)}}],
        "contexts": [
            {"name": "modelway-test", "context": {"cluster": "modelway-test", "user": "admin", "namespace": "default"}}
        ],
        "current-context": "modelway-test",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


class KubeControlPlane:
    """Starts etcd and kube-apiserver in ``workdir``; ``stop`` tears both down.

    ``processes`` is [etcd, kube-apiserver]; the apiserver can be stopped and
    started again (same port, same etcd, so all state is kept) to test how
    clients ride out an outage.
    """

    def __init__(
        self, *, apiserver: Path, etcd: Path, workdir: Path, ports: PortAllocator, node_address: str | None = None
    ) -> None:
        """``node_address``: an address of this machine that pods can reach (the
        test node's bridge). Given, the apiserver serves there too and runs as a
        cluster with nodes needs: the Node authorizer, ServiceAccount admission,
        the ``kubernetes`` Service's endpoints, and a client cert to call kubelets.
        """
        self._apiserver_bin = apiserver
        self._etcd_bin = etcd
        self.workdir = workdir
        self._ports = ports
        self._node_address = node_address
        self.processes: list[ManagedProcess] = []
        self._cluster: KubeCluster | None = None
        self._apiserver_argv: list[str] = []

    @property
    def cluster(self) -> KubeCluster:
        if self._cluster is None:
            raise RuntimeError("control plane not started")
        return self._cluster

    def start(self) -> KubeCluster:
        wd = self.workdir
        wd.mkdir(parents=True, exist_ok=True)
        pki = wd / "pki"
        ca = CertAuthority(pki)
        node_hosts = (self._node_address,) if self._node_address else ()
        serving = ca.issue(
            "apiserver",
            common_name="kube-apiserver",
            hosts=("127.0.0.1", "localhost", "10.0.0.1", "kubernetes", "kubernetes.default",
                   "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", *node_hosts),
            server=True,
        )  # fmt: skip
        admin = ca.issue("admin", common_name="modelway-admin", organizations=("system:masters",), client=True)
        sa = service_account_keys(pki)

        etcd, etcd_url = _start_etcd(self._etcd_bin, wd, self._ports)
        self.processes.append(etcd)

        port = self._ports.take()
        kubeconfig = wd / "kubeconfig"
        server = f"https://{self._node_address or '127.0.0.1'}:{port}"
        _write_kubeconfig(kubeconfig, server, ca.cert, admin)
        self._cluster = KubeCluster(
            server=server,
            kubeconfig=kubeconfig,
            ca=ca,
            admin=admin,
            etcd_url=etcd_url,
            service_account_issuer=SERVICE_ACCOUNT_ISSUER,
            workdir=wd,
        )
        self._apiserver_argv = [
            str(self._apiserver_bin),
            f"--etcd-servers={etcd_url}",
            f"--secure-port={port}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={ca.cert}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={sa.cert}",
            f"--service-account-signing-key-file={sa.key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]
        if self._node_address is None:
            self._apiserver_argv += [
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--authorization-mode=RBAC",
                # No controller-manager creates ServiceAccounts, so the SA
                # admission plugin would reject every Pod.
                "--disable-admission-plugins=ServiceAccount",
                # The endpoint reconcilers refuse a loopback advertise address
                # (since 1.37); nothing in-cluster dials the `kubernetes`
                # Service here, so its Endpoints need not be kept.
                "--endpoint-reconciler-type=none",
            ]
        else:
            kubelet_client = ca.issue("apiserver-kubelet-client", common_name=KUBELET_CLIENT_USER, client=True)
            self._apiserver_argv += [
                # The bridge only: pods reach it through the `kubernetes`
                # Service, the harness and the node's components directly.
                f"--bind-address={self._node_address}",
                f"--advertise-address={self._node_address}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={kubelet_client.cert}",
                f"--kubelet-client-key={kubelet_client.key}",
                # The node's name resolves nowhere; its InternalIP is the bridge.
                "--kubelet-preferred-address-types=InternalIP",
            ]
        self.start_apiserver()
        return self._cluster

    def _apiserver_index(self) -> int | None:
        return next((i for i, p in enumerate(self.processes) if p.name == "kube-apiserver"), None)

    def start_apiserver(self) -> None:
        """Start kube-apiserver (again) and wait until it serves."""
        cluster = self.cluster
        proc = ManagedProcess("kube-apiserver", self._apiserver_argv, self.workdir / "kube-apiserver.log")
        index = self._apiserver_index()
        if index is None:
            self.processes.append(proc)
        else:
            self.processes[index].stop()
            self.processes[index] = proc  # in place: the fixtures' log reports see it

        def ready() -> bool:
            status, _ = cluster.request("GET", "/readyz", timeout=3)
            return status == 200

        def default_namespace() -> bool:
            # Created by the apiserver's own system-namespaces controller,
            # shortly after /readyz; tests apply into it.
            status, _ = cluster.request("GET", "/api/v1/namespaces/default", timeout=3)
            return status == 200

        proc.wait_ready(ready, timeout=READY_TIMEOUT, what="ready (/readyz)")
        proc.wait_ready(default_namespace, timeout=30, what="serving namespace default")

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver only; etcd (and so all state) stays."""
        index = self._apiserver_index()
        if index is not None:
            self.processes[index].stop()

    def restart_apiserver(self) -> None:
        self.stop_apiserver()
        self.start_apiserver()

    def stop(self) -> None:
        # apiserver first: it would otherwise spin reconnecting to etcd.
        for proc in reversed(self.processes):
            proc.stop()
