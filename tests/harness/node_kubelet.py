"""What the test node's agents run with: the kubelet's and kube-proxy's configuration, the
apiserver's right to call the kubelet, and CoreDNS (its Corefile, its own ServiceAccount and token,
and the ``kube-dns`` Service whose EndpointSlice points at it)."""

from __future__ import annotations

from pathlib import Path

import yaml

from .kube import KUBELET_CLIENT_USER, KubeCluster
from .node_host import CLUSTER_DOMAIN, DNS_IP, NODE_IP, NODE_NAME, POD_CIDR, expect
from .ports import PortAllocator

COREDNS_ACCOUNT = ("kube-system", "coredns")  # namespace, ServiceAccount
# CoreDNS's token: a process, not a pod, so nothing renews it; long enough for
# any test session and a week of `make node-up`.
COREDNS_TOKEN_SECONDS = 7 * 24 * 3600
RBAC = "rbac.authorization.k8s.io"


def kubelet_config(workdir: Path, *, sock: Path, client_ca: Path, ports: PortAllocator) -> Path:
    """The kubelet's config file: cgroupfs on cgroup v1, containerd at ``sock``, only clients with a
    cert from ``client_ca``, each allowed what the apiserver says (Webhook authorization)."""
    root = workdir / "kubelet"
    root.mkdir(parents=True, exist_ok=True)
    resolv = workdir / "resolv.conf"
    resolv.write_text("# the node's own: pods use the cluster DNS\n")
    config = workdir / "kubelet.yaml"
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
                "port": ports.take(),
                "readOnlyPort": 0,
                "healthzBindAddress": "127.0.0.1",
                "healthzPort": ports.take(),
                "authentication": {
                    "anonymous": {"enabled": False},
                    "webhook": {"enabled": False},
                    "x509": {"clientCAFile": str(client_ca)},
                },
                # Only holders of a session-CA cert get past authentication,
                # and each may do what the apiserver's authorizers say (a
                # SubjectAccessReview, which the Node authorizer lets a node make).
                "authorization": {"mode": "Webhook"},
                "clusterDNS": [DNS_IP],
                "clusterDomain": CLUSTER_DOMAIN,
                "resolvConf": str(resolv),
                "podLogsDir": str(workdir / "pod-logs"),
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
    return config


def kube_proxy_config(workdir: Path, *, kubeconfig: Path, ports: PortAllocator) -> Path:
    """kube-proxy's config file: iptables mode, bound to the node's address."""
    config = workdir / "kube-proxy.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                "kind": "KubeProxyConfiguration",
                "mode": "iptables",
                "clientConnection": {"kubeconfig": str(kubeconfig)},
                "hostnameOverride": NODE_NAME,
                "bindAddress": NODE_IP,
                "clusterCIDR": POD_CIDR,
                "healthzBindAddress": f"127.0.0.1:{ports.take()}",
                "metricsBindAddress": f"127.0.0.1:{ports.take()}",
                # Leave the host's conntrack sysctls alone.
                "conntrack": {"maxPerCore": 0},
                "iptables": {"localhostNodePorts": False},
            }
        )
    )
    return config


def allow_apiserver_to_kubelet(kube: KubeCluster) -> None:
    """The apiserver's calls to the kubelet (logs, exec, port-forward) as kubeadm allows them."""
    binding = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "modelway-test:apiserver-kubelet-api-admin"},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "system:kubelet-api-admin"},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": KUBELET_CLIENT_USER}],
    }
    expect(kube.request("POST", f"/apis/{RBAC}/v1/clusterrolebindings", binding), "the apiserver's kubelet rights")


def corefile(workdir: Path, *, kubeconfig: Path, health: int, ready: int) -> Path:
    """CoreDNS on the bridge address, serving the cluster domain from the apiserver (no upstream)."""
    path = workdir / "Corefile"
    path.write_text(
        f""".:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{health}
    ready 127.0.0.1:{ready}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} node
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
    loadbalance
}}
"""
    )
    return path


def publish_dns(kube: KubeCluster) -> None:
    """The ``kube-dns`` Service (ClusterIP ``DNS_IP``) and an EndpointSlice pointing at CoreDNS."""
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
    expect(kube.request("POST", "/api/v1/namespaces/kube-system/services", svc), "kube-dns Service")
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
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
    }
    expect(
        kube.request("POST", "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices", slice_),
        "kube-dns EndpointSlice",
    )


def coredns_kubeconfig(kube: KubeCluster, workdir: Path) -> Path:
    """A kubeconfig for CoreDNS's own ServiceAccount, allowed to list and watch
    Services, EndpointSlices and Namespaces (with ``pods insecure`` it reads no
    Pods), and a token for it."""
    namespace, name = COREDNS_ACCOUNT
    role = f"modelway-test:{name}"
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
    expect(kube.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", account), "CoreDNS's account")
    cluster_role = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": role},
        "rules": [
            {"apiGroups": [""], "resources": ["services", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    }
    expect(kube.request("POST", f"/apis/{RBAC}/v1/clusterroles", cluster_role), "CoreDNS's ClusterRole")
    binding = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": role},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }
    expect(kube.request("POST", f"/apis/{RBAC}/v1/clusterrolebindings", binding), "CoreDNS's binding")
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": COREDNS_TOKEN_SECONDS},
    }
    status, body = kube.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", request)
    expect((status, body), "CoreDNS's token")
    token = workdir / "coredns.token"
    token.touch(mode=0o600)
    token.write_text(body["status"]["token"])
    # tokenFile, not token: client-go reads the file again each minute, so a token
    # written there later (a renewal) takes over without restarting CoreDNS.
    kubeconfig = workdir / "coredns.kubeconfig"
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
