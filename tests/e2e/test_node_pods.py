"""Real pods on the harness's node: scheduled, started by containerd and runc,
on the pod network, reachable through a ClusterIP Service by its DNS name."""

from __future__ import annotations

import ipaddress
import json
import time

import pytest

from tests.harness.cli import Kubectl
from tests.harness.node import NodeCluster
from tests.harness.node_host import POD_CIDR

pytestmark = pytest.mark.e2e

NS = "node-pods"
GREETING = "hello from a real pod"


def _wait(predicate, timeout: float, what: str, kubectl: Kubectl) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    pods = kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
    events = kubectl("get", "events", "-n", NS, "--sort-by=.lastTimestamp", check=False).stdout
    pytest.fail(f"{what} not within {timeout:.0f}s\n--- pods ---\n{pods}\n--- events ---\n{events}")


def _pod(name: str, image: str, command: list[str], **spec: object) -> dict:
    container = {
        "name": name,
        "image": image,
        "imagePullPolicy": "Never",  # no registry: the harness imported it
        "command": command,
        "securityContext": {
            "runAsUser": 65532,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    container.update(spec.pop("container", {}))  # type: ignore[arg-type]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": {"containers": [container], "volumes": [{"name": "tmp", "emptyDir": {}}], **spec},
    }


def test_pod_runs_and_is_reached_through_a_service_by_dns_name(node: NodeCluster, node_kubectl: Kubectl) -> None:
    kubectl = node_kubectl
    image = node.images["base"]
    kubectl("create", "namespace", NS)
    # The controller-manager's ServiceAccount controller makes `default`;
    # ServiceAccount admission refuses pods until it exists.
    _wait(lambda: kubectl("get", "sa", "default", "-n", NS, check=False).returncode == 0, 60,
          "ServiceAccount default", kubectl)  # fmt: skip

    serve = (
        f"mkdir -p /tmp/www && echo '{GREETING}' > /tmp/www/index.html"
        " && exec python3 -m http.server 8080 --directory /tmp/www"
    )
    web = _pod(
        "web",
        image,
        ["sh", "-c", serve],
        container={
            "ports": [{"containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
        },
    )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    kubectl.apply([web, service])

    def web_ready() -> bool:
        pod = kubectl.json("get", "pod", "web", "-n", NS)
        conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        return pod["status"].get("phase") == "Running" and conditions.get("Ready") == "True"

    _wait(web_ready, 180, "pod web Running and Ready", kubectl)
    pod = kubectl.json("get", "pod", "web", "-n", NS)
    assert pod["spec"]["nodeName"] == node.node_name
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(POD_CIDR)

    fetch = (
        "import urllib.request\n"
        f"for url in ('http://web.{NS}.svc.cluster.local/', 'http://web/'):\n"
        "    print(url, urllib.request.urlopen(url, timeout=10).read().decode().strip(), flush=True)\n"
    )
    client = _pod("client", image, ["python3", "-c", fetch], restartPolicy="Never")
    kubectl.apply(client)

    def client_done() -> bool:
        phase = kubectl.json("get", "pod", "client", "-n", NS)["status"].get("phase")
        return phase in ("Succeeded", "Failed")

    _wait(client_done, 120, "pod client finished", kubectl)
    logs = kubectl("logs", "client", "-n", NS, check=False)
    phase = kubectl.json("get", "pod", "client", "-n", NS)["status"]["phase"]
    assert phase == "Succeeded", f"client pod {phase}; logs:\n{logs.stdout}{logs.stderr}"
    lines = logs.stdout.splitlines()
    assert lines == [f"http://web.{NS}.svc.cluster.local/ {GREETING}", f"http://web/ {GREETING}"], json.dumps(lines)
