"""Budgets end to end: kubectl -> kube-apiserver -> controller process -> sidecar, spend back into status.

A ModelPolicy with a daily budget (per workload) and a ClusterModelPolicy with a monthly one (per
namespace), a controller started with `$MODELWAY_LIMITS_REDIS_URL` (a Redis with a password), and a
sidecar connected to it. The sidecar's snapshot carries the limits and the store (masked in its dump);
spend is charged on the very counters that snapshot names, through the sidecars' RedisLimiter; then
`kubectl get mwpol` / `kubectl get mwcpol` show it in the SPEND column, and the password is nowhere
the project writes: logs, status, Events, metrics, the sidecar's /config.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.limits.binding import limit_counters
from proxy.limits.model import Counter, Demand, Usage
from proxy.limits.redis_store import RedisLimiter, connect
from proxy.snapshot import Limit, parse_struct
from tests.e2e.controlplane import ControllerProcess, controller_sidecar, pod_token, wait_until
from tests.e2e.status_support import provider, route, secret
from tests.harness.cli import Kubectl
from tests.harness.fixtures import HarnessSession, tool
from tests.harness.kube import KubeCluster
from tests.harness.process import ManagedProcess
from tests.integration.sidecar import SidecarProcess

pytestmark = pytest.mark.e2e

PASSWORD = "e2e-spend-redis-secret"
API = "modelway.io/v1alpha1"
# $10 per million input tokens, $30 per million output tokens: 100k in + 100k out is $4.00.
PRICES = {"input_micro_usd_per_token": 10.0, "output_micro_usd_per_token": 30.0}


@pytest.fixture
def redis_url(harness: HarnessSession, tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own that asks for a password (the session's shared one has none)."""
    port = harness.ports.take()
    workdir = tmp_path / "redis"
    workdir.mkdir()
    argv = [tool("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", str(workdir), "--daemonize", "no", "--logfile", "", "--requirepass", PASSWORD]  # fmt: skip
    process = ManagedProcess("redis-server", argv, workdir / "redis.log")
    process.wait_ready(lambda: _answers("127.0.0.1", port), timeout=30)
    yield f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    process.stop()


def _answers(host: str, port: int) -> bool:
    """PING after AUTH (a plain PING is refused without the password)."""
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(f"AUTH {PASSWORD}\r\nPING\r\n".encode())
        reply = b""
        while reply.count(b"\r\n") < 2:
            chunk = s.recv(64)
            if not chunk:
                return False
            reply += chunk
        return reply == b"+OK\r\n+PONG\r\n"


def policies(namespace: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": API,
            "kind": "ModelPolicy",
            "metadata": {"name": "budget", "namespace": namespace},
            "spec": {"limits": [{"name": "daily", "usdPerDay": 50}]},
        },
        {
            "apiVersion": API,
            "kind": "ClusterModelPolicy",
            "metadata": {"name": f"org-{namespace}"},
            "spec": {
                "namespaceSelector": {"matchLabels": {"modelway.io/spend-e2e": namespace}},
                "limits": [{"name": "monthly", "usdPerMonth": 200, "per": "namespace"}],
            },
        },
    ]


def start(
    kube: KubeCluster, kubectl: Kubectl, namespace: str, tmp_path: Path, env: dict[str, str]
) -> tuple[ControllerProcess, SidecarProcess]:
    kubectl("label", "namespace", namespace, f"modelway.io/spend-e2e={namespace}")
    kubectl.apply([secret(namespace), provider("openai", namespace), route("chat", namespace, "openai")])
    kubectl.apply(policies(namespace))
    controller = ControllerProcess(
        kube.kubeconfig,
        tmp_path,
        extra_args=["--spend-read-interval", "1"],
        env={"POD_NAMESPACE": namespace, "POD_NAME": "controller-spend", **env},
    ).start()
    sidecar = controller_sidecar(controller, pod_token(kubectl, namespace, "web"), tmp_path, "web")
    sidecar.start()
    return controller, sidecar


def get(kubectl: Kubectl, *args: str) -> str:
    return kubectl("get", *args).stdout


def config(sidecar: SidecarProcess) -> dict[str, Any]:
    status, body = sidecar.admin("/config")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def charge(url: str, counters: list[Counter], times: int) -> None:
    """Requests as a sidecar runs them: reserve more than they will cost, settle what they did ($4.00 each)."""
    limiter = RedisLimiter(connect(url, timeout=2.0), timeout=2.0)
    try:
        for _ in range(times):
            demand = Demand(input_tokens=100_000, output_tokens=200_000, **PRICES)
            decision = await limiter.reserve(counters, demand, lease_seconds=30)
            assert decision.allowed and decision.reservation is not None, decision
            await limiter.settle(decision.reservation, Usage(input_tokens=100_000, output_tokens=100_000))
    finally:
        await limiter.close()


def test_spend_charged_in_redis_shows_in_kubectl_get_and_the_url_stays_secret(
    kube: KubeCluster, kubectl: Kubectl, namespace: str, redis_url: str, tmp_path: Path
) -> None:
    controller, sidecar = start(kube, kubectl, namespace, tmp_path, {"MODELWAY_LIMITS_REDIS_URL": redis_url})
    try:
        # The sidecar's snapshot: the policies' limits, and the store, its URL masked in the dump.
        snapshot = config(sidecar)["snapshot"]
        assert snapshot["limitStore"]["url"] == "<redacted>" and snapshot["limitStore"]["timeoutSeconds"] == 0.1
        limits = [parse_struct(Limit, item) for item in snapshot["policy"]["limits"]]
        assert {(lim.name, lim.key) for lim in limits} == {
            ("daily", f"ModelPolicy/{namespace}/budget/daily/workload/{namespace}/app"),
            ("monthly", f"ClusterModelPolicy/org-{namespace}/monthly/namespace/{namespace}"),
        }

        # Before any spend: the column shows the budgets, nothing spent.
        wait_until(lambda: "$0.00/$50 day" in get(kubectl, "mwpol", "-n", namespace), what="SPEND before spending")

        counters = [c for lim in limits for c in limit_counters(lim) if c.measure.startswith("usd_")]
        asyncio.run(charge(redis_url, counters, times=3))  # $12.00

        def spent() -> str:
            out = get(kubectl, "mwpol", "-n", namespace)
            return out if "$12.00/$50 day" in out else ""

        table = wait_until(spent, what="SPEND after spending")
        header, row = table.splitlines()[:2]
        assert "SPEND" in header.split() and row.split()[0] == "budget", table
        cluster = get(kubectl, "mwcpol", f"org-{namespace}")
        assert "$12.00/$200 month" in cluster, cluster

        status = kubectl.json("get", "mwpol", "budget", "-n", namespace)["status"]
        (daily,) = status["spend"]["budgets"]
        assert (daily["spentUSD"], daily["budgetUSD"], daily["window"], daily["per"]) == (12.0, 50.0, "day", "workload")
        assert daily["top"] == [{"subject": f"{namespace}/app", "spentUSD": 12.0}] and status["spend"]["readAt"]
        reported = {c["type"]: c for c in status["conditions"]}["SpendReported"]
        assert (reported["status"], reported["reason"]) == ("True", "Read")

        # Read every second, written only when it moves: nothing new spent, no new write.
        version = kubectl.json("get", "mwpol", "budget", "-n", namespace)["metadata"]["resourceVersion"]
        time.sleep(4)
        assert kubectl.json("get", "mwpol", "budget", "-n", namespace)["metadata"]["resourceVersion"] == version

        # The password is in no byte the project writes.
        with urllib.request.urlopen(f"http://127.0.0.1:{controller.admin_port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        seen = {
            "controller log": controller.logs(),
            "sidecar log": sidecar.logs(),
            "sidecar /config": json.dumps(config(sidecar)),
            "policy": get(kubectl, "mwpol", "budget", "-n", namespace, "-o", "yaml"),
            "cluster policy": get(kubectl, "mwcpol", f"org-{namespace}", "-o", "yaml"),
            "events": get(kubectl, "events", "-n", namespace, "-o", "yaml"),
            "controller metrics": metrics,
        }
        assert not [where for where, text in seen.items() if PASSWORD in text]
    finally:
        sidecar.stop()
        controller.stop()
        kubectl("delete", "clustermodelpolicy", f"org-{namespace}", "--wait=false", check=False)


def test_without_a_store_status_says_spend_is_not_shared(
    kube: KubeCluster, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    controller, sidecar = start(kube, kubectl, namespace, tmp_path, {"MODELWAY_LIMITS_REDIS_URL": ""})
    try:
        assert config(sidecar)["snapshot"].get("limitStore") is None
        wait_until(
            lambda: "not shared (no limit store)" in get(kubectl, "mwpol", "-n", namespace),
            what="SPEND says no shared store",
        )
        status = kubectl.json("get", "mwpol", "budget", "-n", namespace)["status"]
        reported = {c["type"]: c for c in status["conditions"]}["SpendReported"]
        assert (reported["status"], reported["reason"]) == ("False", "NoLimitStore")
        assert not status["spend"].get("budgets")  # no numbers invented
    finally:
        sidecar.stop()
        controller.stop()
        kubectl("delete", "clustermodelpolicy", f"org-{namespace}", "--wait=false", check=False)
