"""helm install of charts/modelway on the harness's node, with the image built
from the project's Dockerfile: the controller's pods really run (read-only
root filesystem, non-root user, the chart's probes), make their webhook
certificate and patch the webhook's caBundle themselves; helm uninstall
leaves only the CRDs.

The steps share one release and run in file order.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import pytest

from tests.harness.cli import Helm, Kubectl
from tests.harness.fixtures import HarnessSession, tool
from tests.harness.node import NodeCluster
from tests.integration.sidecar import REPO

pytestmark = pytest.mark.e2e

CHART = REPO / "charts" / "modelway"
NS = "modelway-system"
RELEASE = "modelway"
HOOK = "modelway-sidecar-injector"


@pytest.fixture(scope="module")
def node_helm(harness: HarnessSession, node: NodeCluster) -> Helm:
    return Helm(tool("helm"), node.kubeconfig, harness.workdir / "node-helm")


def _wait(predicate: Callable[[], bool], timeout: float, what: str, kubectl: Kubectl) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    pods = kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
    events = kubectl("get", "events", "-n", NS, "--sort-by=.lastTimestamp", check=False).stdout
    logs = kubectl("logs", "-n", NS, "-l", "app.kubernetes.io/component=controller", "--tail=30",
                   "--prefix", check=False)  # fmt: skip
    pytest.fail(
        f"{what} not within {timeout:.0f}s\n--- pods ---\n{pods}\n--- events ---\n{events}"
        f"\n--- controller logs ---\n{logs.stdout}{logs.stderr}"
    )


def _image_values(node: NodeCluster) -> list[str]:
    repository, tag = node.images["modelway"].rsplit(":", 1)
    return ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
            "--set", "image.pullPolicy=Never"]  # fmt: skip


def test_install_runs_both_controller_replicas(node: NodeCluster, node_helm: Helm, node_kubectl: Kubectl) -> None:
    kubectl = node_kubectl
    node_helm("install", RELEASE, str(CHART), "-n", NS, "--create-namespace", *_image_values(node), timeout=180)

    def rolled_out() -> bool:
        deploy = kubectl.json("get", "deployment", "modelway-controller", "-n", NS)
        return deploy.get("status", {}).get("readyReplicas") == 2

    _wait(rolled_out, 240, "2 controller replicas Ready", kubectl)
    pods = kubectl.json("get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=controller")["items"]
    assert len(pods) == 2
    for pod in pods:
        (container,) = pod["spec"]["containers"]
        assert container["image"] == node.images["modelway"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["spec"]["securityContext"]["runAsUser"] == 65532
        (status,) = pod["status"]["containerStatuses"]
        assert status["ready"] is True and status["restartCount"] == 0, status


def test_controller_made_its_certificate_and_patched_the_webhook(node_kubectl: Kubectl) -> None:
    kubectl = node_kubectl

    def patched() -> bool:
        hook = kubectl.json("get", "mutatingwebhookconfiguration", HOOK)
        return all(w["clientConfig"].get("caBundle") for w in hook["webhooks"])

    _wait(patched, 60, "the webhook's caBundle patched", kubectl)
    secret = kubectl.json("get", "secret", "modelway-certs", "-n", NS)
    ca = base64.b64decode(secret["data"]["ca.crt"])
    assert ca.startswith(b"-----BEGIN CERTIFICATE-----")
    hook = kubectl.json("get", "mutatingwebhookconfiguration", HOOK)
    for webhook in hook["webhooks"]:
        assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == ca


def test_uninstall_leaves_only_the_crds(node_helm: Helm, node_kubectl: Kubectl) -> None:
    kubectl = node_kubectl
    node_helm("uninstall", RELEASE, "-n", NS, "--wait", timeout=180)

    def pods_gone() -> bool:
        return not kubectl.json("get", "pods", "-n", NS)["items"]

    _wait(pods_gone, 120, "the controller pods gone", kubectl)
    assert kubectl("get", "mutatingwebhookconfiguration", HOOK, check=False).returncode != 0
    assert kubectl("get", "clusterrole", "modelway-controller", check=False).returncode != 0
    crds = kubectl("get", "crd", "-o", "name").stdout.split()
    assert crds and all(c.endswith(".modelway.io") for c in crds), crds
