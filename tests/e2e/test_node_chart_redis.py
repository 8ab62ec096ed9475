"""helm install with redis.enabled=true on the harness's node: the chart's Redis for the limit
counters really runs (non-root, read-only root filesystem, nothing on disk), answers through
its Service only to the password in the chart's Secret, the controller finds it by the URL in
that Secret and reads budget spend from it into a policy's status, helm upgrade keeps the
password, and helm uninstall takes it all away.

The node reaches no registry, so not Docker Hub's redis either: the image is Debian's
redis-server (tests/tools/image/redis.sh), started by the chart's own command and arguments.

The steps share one release and run in file order.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness.cli import Helm, Kubectl
from tests.harness.fixtures import HarnessSession, tool
from tests.harness.node import NodeCluster
from tests.integration.sidecar import REPO

pytestmark = pytest.mark.e2e

CHART = REPO / "charts" / "modelway"
NS = "limits-redis-test"
RELEASE = "limits"  # objects are named limits-modelway-*
REDIS = "limits-modelway-redis"
CONTROLLER = "limits-modelway-controller"
TEAM = "limits-redis-team"  # where the budget's policy lives


@pytest.fixture(scope="module")
def node_helm(harness: HarnessSession, node: NodeCluster) -> Helm:
    return Helm(tool("helm"), node.kubeconfig, harness.workdir / "node-helm-redis")


def _wait(predicate: Callable[[], bool], timeout: float, what: str, kubectl: Kubectl) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    pods = kubectl("get", "pods", "-n", NS, "-o", "wide", check=False).stdout
    events = kubectl("get", "events", "-n", NS, "--sort-by=.lastTimestamp", check=False).stdout
    logs = kubectl("logs", "-n", NS, f"deploy/{REDIS}", "--tail=30", check=False)
    pytest.fail(f"{what} not within {timeout:.0f}s\n--- pods ---\n{pods}\n--- events ---\n{events}"
                f"\n--- redis logs ---\n{logs.stdout}{logs.stderr}")  # fmt: skip


def _values(node: NodeCluster) -> list[str]:
    repository, tag = node.images["modelway"].rsplit(":", 1)
    redis_repository, redis_tag = node.images["redis"].rsplit(":", 1)
    sets = [
        f"image.repository={repository}",
        f"image.tag={tag}",
        "image.pullPolicy=Never",
        "injection.enabled=false",  # the other chart tests own the webhook
        "controller.replicas=1",
        "redis.enabled=true",
        f"redis.image.repository={redis_repository}",
        "redis.image.pullPolicy=Never",
    ]
    # A tag such as 7 is a number to --set; the chart's schema wants the string.
    return [a for s in sets for a in ("--set", s)] + ["--set-string", f"redis.image.tag={redis_tag}"]


def _redis_cli(kubectl: Kubectl, node: NodeCluster, name: str, script: str, *, password: bool) -> str:
    """Run `script` (redis-cli calls to $REDIS) in a pod of its own; its output."""
    env: list[dict[str, Any]] = [{"name": "REDIS", "value": f"{REDIS}.{NS}.svc"}]
    if password:  # redis-cli reads it from REDISCLI_AUTH
        env.append({"name": "REDISCLI_AUTH", "valueFrom": {"secretKeyRef": {"name": REDIS, "key": "password"}}})
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "containers": [
                    {
                        "name": "cli",
                        "image": node.images["redis"],
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", script],
                        "env": env,
                    }
                ],
            },
        }
    )

    def done() -> bool:
        phase = kubectl.json("get", "pod", name, "-n", NS).get("status", {}).get("phase")
        return phase in ("Succeeded", "Failed")

    _wait(done, 90, f"pod {name} finished", kubectl)
    return kubectl("logs", "-n", NS, name).stdout


def test_install_runs_the_redis_locked_down(node: NodeCluster, node_helm: Helm, node_kubectl: Kubectl) -> None:
    kubectl = node_kubectl
    node_helm("install", RELEASE, str(CHART), "-n", NS, "--create-namespace", *_values(node), timeout=180)

    def ready() -> bool:
        deploy = kubectl.json("get", "deployment", REDIS, "-n", NS)
        return deploy.get("status", {}).get("readyReplicas") == 1

    _wait(ready, 180, "the chart's Redis Ready", kubectl)
    (pod,) = kubectl.json("get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=limits-redis")["items"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == node.images["redis"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 999
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] is True and status["restartCount"] == 0, status


def test_it_answers_through_its_service_only_to_the_password(node: NodeCluster, node_kubectl: Kubectl) -> None:
    kubectl = node_kubectl
    stranger = _redis_cli(kubectl, node, "no-password", 'redis-cli -h "$REDIS" ping', password=False)
    assert "NOAUTH" in stranger and "PONG" not in stranger
    script = (
        'redis-cli -h "$REDIS" ping; redis-cli -h "$REDIS" set "{modelway}:probe" 1; '
        "for key in save appendonly maxmemory-policy; do "
        'echo "$key=$(redis-cli -h "$REDIS" config get $key | tail -n 1)"; done'
    )
    lines = _redis_cli(kubectl, node, "with-password", script, password=True).splitlines()
    # Nothing on disk (no snapshots, no append-only file); full, it refuses rather than evicts.
    assert lines == ["PONG", "OK", "save=", "appendonly=no", "maxmemory-policy=noeviction"], lines


def test_the_controller_reads_budget_spend_from_it(node_kubectl: Kubectl) -> None:
    kubectl = node_kubectl

    def ready() -> bool:
        deploy = kubectl.json("get", "deployment", CONTROLLER, "-n", NS)
        return deploy.get("status", {}).get("readyReplicas") == 1

    _wait(ready, 180, "the controller Ready", kubectl)
    kubectl("create", "namespace", TEAM)
    kubectl.apply(
        {
            "apiVersion": "modelway.io/v1alpha1",
            "kind": "ModelPolicy",
            "metadata": {"name": "budget", "namespace": TEAM},
            "spec": {"limits": [{"name": "daily", "usdPerDay": 50, "per": "namespace"}]},
        }
    )

    def read() -> bool:
        status = kubectl.json("get", "mwpol", "budget", "-n", TEAM).get("status", {})
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        return conditions.get("SpendReported", {}).get("reason") == "Read"

    _wait(read, 120, "the policy's spend read from the chart's Redis (SpendReported, reason Read)", kubectl)
    assert "$0.00/$50 day" in kubectl("get", "mwpol", "-n", TEAM).stdout
    password = kubectl.json("get", "secret", REDIS, "-n", NS)["data"]["password"]
    logs = kubectl("logs", "-n", NS, f"deploy/{CONTROLLER}", "--tail=-1").stdout
    assert "redis://" not in logs and base64.b64decode(password).decode() not in logs


def test_an_upgrade_keeps_the_password_and_the_counters(
    node: NodeCluster, node_helm: Helm, node_kubectl: Kubectl
) -> None:
    """helm upgrade finds the password in the release's Secret: Redis is not restarted, and the
    counters it holds stay."""
    kubectl = node_kubectl
    before = kubectl.json("get", "secret", REDIS, "-n", NS)["data"]
    (pod,) = kubectl.json("get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=limits-redis")["items"]
    node_helm("upgrade", RELEASE, str(CHART), "-n", NS, *_values(node), "--set", "logLevel=debug", timeout=180)
    assert kubectl.json("get", "secret", REDIS, "-n", NS)["data"] == before
    time.sleep(3)  # a rollout, were there one, would have begun
    (after,) = kubectl.json("get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=limits-redis")["items"]
    assert after["metadata"]["uid"] == pod["metadata"]["uid"]
    assert after["status"]["containerStatuses"][0]["restartCount"] == 0
    probe = 'redis-cli -h "$REDIS" get "{modelway}:probe"'
    assert _redis_cli(kubectl, node, "after-upgrade", probe, password=True).split() == ["1"]


def test_uninstall_takes_the_redis_away(node_helm: Helm, node_kubectl: Kubectl) -> None:
    kubectl = node_kubectl
    node_helm("uninstall", RELEASE, "-n", NS, "--wait", timeout=180)

    def gone() -> bool:
        left = kubectl("get", "deployment,service,secret", "-n", NS, "-o", "name").stdout.split()
        return not [name for name in left if name.endswith(f"/{REDIS}")]

    _wait(gone, 120, "the chart's Redis, its Service and Secret gone", kubectl)
    kubectl("delete", "namespace", NS, TEAM, "--wait=false")
