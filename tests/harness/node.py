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
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, ClassVar

import yaml

from .certs import CertPair
from .kube import KUBELET_CLIENT_USER, KubeCluster, KubeControlPlane
from .ports import PortAllocator
from .process import ManagedProcess

NODE_NAME = "modelway-node"
BRIDGE = "mwbr0"
POD_CIDR = "10.244.0.0/24"
NODE_IP = "10.244.0.1"  # the bridge's address: the pods' gateway, the apiserver's
DNS_IP = "10.0.0.10"  # in kube.SERVICE_CLUSTER_IP_RANGE
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = Path("/usr/lib/cni")
LOCK_FILE = Path("/run/modelway-test-node.lock")
READY_TIMEOUT = 120.0
COREDNS_ACCOUNT = ("kube-system", "coredns")  # namespace, ServiceAccount
# CoreDNS's token: a process, not a pod, so nothing renews it; long enough for
# any test session and a week of `make node-up`.
COREDNS_TOKEN_SECONDS = 7 * 24 * 3600
RBAC = "rbac.authorization.k8s.io"

PAUSE_IMAGE = "localhost/modelway-pause:1"
# name in .tools/images -> the reference it is imported as.
IMAGES = {
    "pause": PAUSE_IMAGE,
    "base": "localhost/modelway-base:bookworm",
    "modelway": "localhost/modelway:test",
    "app": "localhost/modelway-test-app:1",  # the base + the official openai SDK + OpenTelemetry
    "redis": "localhost/modelway-redis:7",  # Debian's redis-server, for the chart's redis.enabled
}


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


def _run(*argv: str | os.PathLike[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({res.returncode}):\n{res.stderr}{res.stdout}")
    return res


def _kubeconfig(path: Path, server: str, ca: Path, client: CertPair, user: str) -> Path:
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
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        # Mangle FORWARD runs after kube-proxy's DNAT and before any filter
        # rule kube-proxy adds: a pod's packet to an address that is neither a
        # pod nor this host (those go to INPUT) is dropped, never routed out.
        if _run("iptables", "-t", "mangle", "-C", *self._DROP, check=False).returncode != 0:
            _run("iptables", "-t", "mangle", "-I", *self._DROP)
        if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
            _run("modprobe", "br_netfilter", check=False)
        # Pod -> ClusterIP -> pod on the same bridge: routed (DNAT), and the
        # bridged reply must pass iptables to be un-NATed.
        self._sysctl("net.ipv4.ip_forward", "1")
        self._sysctl("net.bridge.bridge-nf-call-iptables", "1")

    def down_bridge(self) -> None:
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            _run("ip", "link", "del", BRIDGE, check=False)

    def down(self, kube_proxy: Path | None) -> None:
        self.down_bridge()
        while _run("iptables", "-t", "mangle", "-D", *self._DROP, check=False).returncode == 0:
            pass
        for key, value in self._saved_sysctls.items():
            (Path("/proc/sys") / key.replace(".", "/")).write_text(value)
        _flush_kube_rules(kube_proxy)


def _remove_pod_cgroups() -> None:
    """The kubelet's (now empty) kubepods cgroups on every v1 hierarchy."""
    root = Path("/sys/fs/cgroup")
    for top in root.glob("*/kubepods") if root.is_dir() else ():
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):  # still in use, or not a cgroup directory
                os.rmdir(dirpath)


def _flush_kube_rules(kube_proxy: Path | None) -> None:
    """Remove what kube-proxy and the kubelet added to iptables: `kube-proxy
    --cleanup`, then any KUBE-* chain left (the kubelet's canaries, IPv6)."""
    if kube_proxy is not None:
        _run(kube_proxy, "--cleanup", check=False)
    for save, tables in (("iptables-save", "iptables"), ("ip6tables-save", "ip6tables")):
        for table in ("filter", "nat", "mangle"):
            lines = _run(save, "-t", table, check=False).stdout.splitlines()
            chains = [line[1:].split()[0] for line in lines if line.startswith(":KUBE-")]
            for line in lines:
                words = shlex.split(line)
                if line.startswith("-A ") and "KUBE-" in line and not words[1].startswith("KUBE-"):
                    _run(tables, "-t", table, "-D", *words[1:], check=False)
            for chain in chains:
                _run(tables, "-t", table, "-F", chain, check=False)
            for chain in chains:
                _run(tables, "-t", table, "-X", chain, check=False)


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
        self._import_images(socket)
        self._start_controller_manager(kube)
        self._start_scheduler(kube)
        self._start_kube_proxy(kube)
        self._allow_apiserver_to_kubelet(kube)
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
            self._remove_all_containers(sock)
            containerd.stop()
        self._reap_leftovers(sock)
        if self.plane is not None:
            self.plane.stop()
        self._unmount_under(self.workdir)
        # The kubelet links every container's log into /var/log/containers
        # (a fixed path); the links into this work dir are ours to remove.
        containers_logs = Path("/var/log/containers")
        for link in containers_logs.glob("*.log") if containers_logs.is_dir() else ():
            if link.is_symlink() and str(self.workdir) in os.readlink(link):
                link.unlink(missing_ok=True)
        self._net.down(self._tools.get("kube-proxy"))
        _remove_pod_cgroups()
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
        return _kubeconfig(self.workdir / f"{name}.kubeconfig", kube.server, kube.ca.cert, pair, cn)

    def _start(self, name: str, argv: list[str | os.PathLike[str]], **kw: object) -> ManagedProcess:
        proc = ManagedProcess(name, argv, self.workdir / f"{name}.log", **kw)  # type: ignore[arg-type]
        self.processes.append(proc)
        return proc

    def _start_containerd(self) -> Path:
        d = self.workdir / "containerd"
        cni_conf = self.workdir / "cni" / "net.d"
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
                                "dataDir": str(self.workdir / "cni" / "ipam"),
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
        proc = self._start("containerd", [self._tools["containerd"], "--config", config, "--log-level", "info"])

        def serving() -> bool:
            return _run(self._tools["ctr"], "--address", sock, "version", check=False).returncode == 0

        proc.wait_ready(serving, timeout=READY_TIMEOUT, what="serving")
        return sock

    def _import_images(self, sock: Path) -> None:
        for name, ref in IMAGES.items():
            archive = self._images_dir / f"{name}.tar"
            if not archive.is_file():
                raise RuntimeError(
                    f"image archive {archive} missing: run `make tools` (tests/tools/image/build.sh builds it)"
                )
            _run(self._tools["ctr"], "--address", sock, "-n", "k8s.io", "images", "import", archive)
            have = _run(self._tools["ctr"], "--address", sock, "-n", "k8s.io", "images", "ls", "-q").stdout
            if ref not in have.split():
                raise RuntimeError(f"{archive} imported, but containerd lists no {ref}:\n{have}")

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
        config = self.workdir / "kube-proxy.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "mode": "iptables",
                    "clientConnection": {"kubeconfig": str(kc)},
                    "hostnameOverride": NODE_NAME,
                    "bindAddress": NODE_IP,
                    "clusterCIDR": POD_CIDR,
                    "healthzBindAddress": f"127.0.0.1:{self._ports.take()}",
                    "metricsBindAddress": f"127.0.0.1:{self._ports.take()}",
                    # Leave the host's conntrack sysctls alone.
                    "conntrack": {"maxPerCore": 0},
                    "iptables": {"localhostNodePorts": False},
                }
            )
        )
        self._start("kube-proxy", [self._tools["kube-proxy"], f"--config={config}", "--v=1"])

    def _allow_apiserver_to_kubelet(self, kube: KubeCluster) -> None:
        """The apiserver's calls to the kubelet (logs, exec, port-forward) as kubeadm allows them."""
        binding = {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "modelway-test:apiserver-kubelet-api-admin"},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "system:kubelet-api-admin"},
            "subjects": [{"apiGroup": RBAC, "kind": "User", "name": KUBELET_CLIENT_USER}],
        }
        _expect(kube.request("POST", f"/apis/{RBAC}/v1/clusterrolebindings", binding), "the apiserver's kubelet rights")

    def _start_kubelet(self, kube: KubeCluster, sock: Path) -> None:
        kc = self._client(kube, "kubelet", f"system:node:{NODE_NAME}", ("system:nodes",))
        root = self.workdir / "kubelet"
        root.mkdir(parents=True, exist_ok=True)
        resolv = self.workdir / "resolv.conf"
        resolv.write_text("# the node's own: pods use the cluster DNS\n")
        config = self.workdir / "kubelet.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    # This machine has cgroup v1 only.
                    "failCgroupV1": False,
                    "cgroupDriver": "cgroupfs",
                    "failSwapOn": False,
                    "containerRuntimeEndpoint": f"unix://{sock}",
                    "address": NODE_IP,
                    "port": self._ports.take(),
                    "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": self._ports.take(),
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": False},
                        "x509": {"clientCAFile": str(kube.ca.cert)},
                    },
                    # Only holders of a session-CA cert get past authentication,
                    # and each may do what the apiserver's authorizers say (a
                    # SubjectAccessReview, which the Node authorizer lets a node make).
                    "authorization": {"mode": "Webhook"},
                    "clusterDNS": [DNS_IP],
                    "clusterDomain": CLUSTER_DOMAIN,
                    "resolvConf": str(resolv),
                    "podLogsDir": str(self.workdir / "pod-logs"),
                    "evictionHard": {
                        "memory.available": "100Mi",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                        "nodefs.inodesFree": "1%",
                    },
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "serializeImagePulls": False,
                    "protectKernelDefaults": False,
                    "localStorageCapacityIsolation": True,
                    "shutdownGracePeriod": "0s",
                    "registerNode": True,
                    "maxPods": 60,
                },
                sort_keys=False,
            )
        )
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
        kc = self._coredns_kubeconfig(kube)
        health, ready = self._ports.take(), self._ports.take()
        corefile = self.workdir / "Corefile"
        corefile.write_text(
            f""".:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{health}
    ready 127.0.0.1:{ready}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kc} node
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
    loadbalance
}}
"""
        )
        proc = self._start("coredns", [self._tools["coredns"], "-conf", corefile])

        def dns_ready() -> bool:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{ready}/ready", timeout=2) as r:
                return r.status == 200

        proc.wait_ready(dns_ready, timeout=READY_TIMEOUT, what="ready")
        svc = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
            "spec": {
                "clusterIP": DNS_IP,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        }
        _expect(kube.request("POST", "/api/v1/namespaces/kube-system/services", svc), "kube-dns Service")
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-coredns",
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": "modelway-test-harness",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ],
        }
        _expect(
            kube.request("POST", "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices", slice_),
            "kube-dns EndpointSlice",
        )

    def _coredns_kubeconfig(self, kube: KubeCluster) -> Path:
        """A kubeconfig for CoreDNS's own ServiceAccount, allowed to list and watch
        Services, EndpointSlices and Namespaces (with ``pods insecure`` it reads no
        Pods), and a token for it."""
        namespace, name = COREDNS_ACCOUNT
        role = f"modelway-test:{name}"
        account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
        _expect(kube.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", account), "CoreDNS's account")
        cluster_role = {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": role},
            "rules": [
                {"apiGroups": [""], "resources": ["services", "namespaces"], "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        }
        _expect(kube.request("POST", f"/apis/{RBAC}/v1/clusterroles", cluster_role), "CoreDNS's ClusterRole")
        binding = {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        }
        _expect(kube.request("POST", f"/apis/{RBAC}/v1/clusterrolebindings", binding), "CoreDNS's binding")
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": COREDNS_TOKEN_SECONDS},
        }
        status, body = kube.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", request)
        _expect((status, body), "CoreDNS's token")
        token = self.workdir / "coredns.token"
        token.touch(mode=0o600)
        token.write_text(body["status"]["token"])
        # tokenFile, not token: client-go reads the file again each minute, so a token
        # written there later (a renewal) takes over without restarting CoreDNS.
        kubeconfig = self.workdir / "coredns.kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "node", "cluster": {"server": kube.server, "certificate-authority": str(kube.ca.cert)}}
                    ],
                    "users": [{"name": name, "user": {"tokenFile": str(token)}}],
                    "contexts": [{"name": "node", "context": {"cluster": "node", "user": name}}],
                    "current-context": "node",
                },
                sort_keys=False,
            )
        )
        return kubeconfig

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

    # -- teardown helpers ------------------------------------------------

    def _remove_all_containers(self, sock: Path) -> None:
        """Stop every pod sandbox the kubelet made (their shims outlive it)."""
        ctr = str(self._tools["ctr"])
        tasks = _run(ctr, "--address", sock, "-n", "k8s.io", "tasks", "ls", "-q", check=False).stdout.split()
        for task in tasks:
            _run(ctr, "--address", sock, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", task, check=False)
        deadline = time.monotonic() + 15
        for task in tasks:
            while time.monotonic() < deadline:
                if _run(ctr, "--address", sock, "-n", "k8s.io", "tasks", "delete", task, check=False).returncode == 0:
                    break
                time.sleep(0.2)
            _run(ctr, "--address", sock, "-n", "k8s.io", "containers", "delete", task, check=False)
        # Their network namespaces (the CNI veths go with them).
        netns_dir = Path("/var/run/netns")
        for ns in netns_dir.glob("cni-*") if netns_dir.exists() else ():
            _run("umount", ns, check=False)
            ns.unlink(missing_ok=True)

    def _reap_leftovers(self, sock: Path) -> None:
        """What a failed teardown can leave: runc containers in this node's
        runc root, and shims serving this node's containerd socket."""
        runc_root = self.workdir / "containerd" / "runc" / "k8s.io"
        if runc_root.is_dir():
            for cid in _run("runc", "--root", runc_root, "list", "-q", check=False).stdout.split():
                _run("runc", "--root", runc_root, "delete", "--force", cid, check=False)
        marker = f"-address\0{sock}\0".encode()
        for proc_dir in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc_dir / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and marker in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc_dir.name), 9)

    @staticmethod
    def _unmount_under(path: Path) -> None:
        """Lazily unmount what containerd and the kubelet left mounted in ``path``."""
        prefix = str(path.resolve())
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
            _run("umount", "-l", mount, check=False)


def _expect(result: tuple[int, object], what: str) -> None:
    status, body = result
    if status not in (200, 201):
        raise RuntimeError(f"creating {what}: HTTP {status}: {body}")
