"""Cluster, object and token setup for `python -m bench.controller` (bench/controller.py).

The objects the benchmark creates, as plain dicts: a labelled Secret and four
ModelProviders per namespace, realistic ModelRoutes (a header-matched premium
rule and a default rule, weighted backends, fallbacks; one route per namespace
with a workload selector) and Pods (API objects only, no kubelet) in `bench-0`
with a configurable number of distinct label sets. `populate` creates them all
over the raw API as the cluster admin, CREATE_CONCURRENCY requests at a time,
and returns one pod-bound ServiceAccount token (audience `modelway`,
TokenRequest API) per pod. During the run: `hold_lease` (another replica leads,
for --follower) and `route_status` (the measured route's status, read back).

`BenchBroken` and `say` live here too, so that the driver and this module share
one exception class and one way of printing progress.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import time
from collections.abc import Callable
from typing import Any

from tests.harness.kube import KubeCluster

NAMESPACE = "bench-0"
SERVICE_ACCOUNT = "app"
ROUTES_PER_NAMESPACE = 10
FAKE_BASE_URL = "http://127.0.0.1:9/v1"  # nothing calls it
CREATE_CONCURRENCY = 32


class BenchBroken(Exception):
    """Something failed that makes the figures meaningless: exit non-zero."""


def say(message: str) -> None:
    print(message, flush=True)


# --- the objects ----------------------------------------------------------------------


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def secret(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "llm-keys", "namespace": namespace, "labels": {"modelway.io/credentials": "true"}},
        "data": {
            "openai": _b64(f"sk-bench-openai-{namespace}"),
            "anthropic": _b64(f"sk-bench-ant-{namespace}"),
            "azure": _b64(f"bench-azure-{namespace}"),
        },
    }


def providers(namespace: str) -> list[dict[str, Any]]:
    def provider(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "modelway.io/v1alpha1",
            "kind": "ModelProvider",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"baseURL": FAKE_BASE_URL, **spec},
        }

    pricing = [
        {"name": "gpt-4o", "inputPricePerMillion": 2.5, "outputPricePerMillion": 10},
        {"name": "gpt-4o-mini", "inputPricePerMillion": 0.15, "outputPricePerMillion": 0.6},
    ]
    return [
        provider(
            "openai",
            {
                "type": "openai",
                "credentialsRef": {"name": "llm-keys", "key": "openai"},
                "region": "us-east-1",
                "jurisdiction": "US",
                "models": pricing,
            },
        ),
        provider(
            "azure",
            {
                "type": "azure-openai",
                "azure": {"apiVersion": "2024-10-21"},
                "credentialsRef": {"name": "llm-keys", "key": "azure"},
                "region": "westeurope",
                "jurisdiction": "EU",
                "hosting": "vpc",
                "models": pricing,
            },
        ),
        provider(
            "claude",
            {
                "type": "anthropic",
                "credentialsRef": {"name": "llm-keys", "key": "anthropic"},
                "region": "us-west-2",
                "jurisdiction": "US",
            },
        ),
        provider("vllm", {"type": "openai-compatible", "hosting": "in-cluster"}),
    ]


def route(namespace: str, index: int, *, revision: int = 0) -> dict[str, Any]:
    """A realistic route: a header-matched premium rule and a default rule, weights and fallbacks."""
    spec: dict[str, Any] = {
        "model": f"model-{index}",
        "rules": [
            {
                "name": "premium",
                "matches": {"headers": [{"name": "x-modelway-tier", "value": "premium"}]},
                "backends": [
                    {"provider": "openai", "model": "gpt-4o", "weight": 80},
                    {"provider": "azure", "model": "gpt-4o", "weight": 20},
                ],
                "fallbacks": [{"provider": "claude", "model": "claude-sonnet-4-5"}],
                "retry": {"attempts": 3, "backoffBase": "200ms", "backoffMax": "2s"},
                "timeouts": {"total": "60s", "firstToken": "10s"},
            },
            {
                "name": "default",
                "backends": [
                    {"provider": "openai", "model": f"gpt-4o-mini-r{revision}", "weight": 90},
                    {"provider": "vllm", "model": f"llama-3.1-8b-r{revision}", "weight": 10},
                ],
                "fallbacks": [{"provider": "claude", "model": "claude-haiku-4-5"}],
                "timeouts": {"total": "30s"},
            },
        ],
    }
    if index % ROUTES_PER_NAMESPACE == ROUTES_PER_NAMESPACE - 1:
        spec["workloadSelector"] = {"matchLabels": {"tier": "batch"}}  # one route per namespace is selective
    return {
        "apiVersion": "modelway.io/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": f"route-{index}", "namespace": namespace},
        "spec": spec,
    }


def pod(index: int, workloads: int) -> dict[str, Any]:
    workload = index % workloads
    labels = {"app": f"app-{workload}", "pod-template-hash": f"{workload:010x}"}
    if workload % 5 == 0:
        labels["tier"] = "batch"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"app-{index}", "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "serviceAccountName": SERVICE_ACCOUNT,
            "containers": [{"name": "app", "image": "example.invalid/app:1"}],
        },
    }


# --- bulk creation over the raw API ---------------------------------------------------


class Api:
    """A small aiohttp client as the cluster admin, for creating thousands of objects quickly."""

    def __init__(self, cluster: KubeCluster) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self._server = cluster.server
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=cluster.ssl_context(), limit=64))

    async def close(self) -> None:
        await self._session.close()

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(5):
            async with self._session.post(
                self._server + path, json=body, timeout=self._aiohttp.ClientTimeout(total=60)
            ) as resp:
                text = await resp.text()
                if resp.status in (200, 201):
                    return json.loads(text)
                if resp.status in (429, 500, 503, 504) and attempt < 4:  # the apiserver is busy: back off
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                raise BenchBroken(f"POST {path}: HTTP {resp.status}: {text[:500]}")
        raise AssertionError("unreachable")


def _path(obj: dict[str, Any]) -> str:
    namespace = obj["metadata"].get("namespace")
    kind = obj["kind"]
    if obj["apiVersion"] == "v1":
        plural = {"Namespace": "namespaces", "Secret": "secrets", "Pod": "pods", "ServiceAccount": "serviceaccounts"}[
            kind
        ]
        return f"/api/v1/namespaces/{namespace}/{plural}" if namespace else f"/api/v1/{plural}"
    plural = {"ModelProvider": "modelproviders", "ModelRoute": "modelroutes"}[kind]
    return f"/apis/{obj['apiVersion']}/namespaces/{namespace}/{plural}"


async def _bounded(items: list[Any], work: Callable[[Any], Any], *, what: str, progress: bool) -> list[Any]:
    """Run `work` on every item, CREATE_CONCURRENCY at a time, saying how far it got."""
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)
    done = 0
    step = max(1, len(items) // 5)
    started = time.monotonic()

    async def one(item: Any) -> Any:
        nonlocal done
        async with gate:
            result = await work(item)
        done += 1
        if progress and (done % step == 0 or done == len(items)):
            say(f"  {what}: {done}/{len(items)} ({time.monotonic() - started:.1f} s)")
        return result

    return list(await asyncio.gather(*(one(i) for i in items)))


async def populate(cluster: KubeCluster, *, routes: int, sidecars: int, workloads: int) -> list[str]:
    """Namespaces, Secrets, providers, routes, then the pods and one pod-bound token each."""
    namespaces = [f"bench-{i}" for i in range(max(1, math.ceil(routes / ROUTES_PER_NAMESPACE)))]
    api = Api(cluster)
    try:
        await _bounded(
            [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces],
            lambda o: api.post(_path(o), o),
            what="namespaces",
            progress=False,
        )
        config = [obj for ns in namespaces for obj in (secret(ns), *providers(ns))]
        await _bounded(config, lambda o: api.post(_path(o), o), what="secrets and providers", progress=True)
        route_objs = [route(namespaces[i // ROUTES_PER_NAMESPACE], i % ROUTES_PER_NAMESPACE) for i in range(routes)]
        await _bounded(route_objs, lambda o: api.post(_path(o), o), what="routes", progress=True)

        sa = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE},
        }
        await api.post(_path(sa), sa)
        created = await _bounded(
            [pod(i, workloads) for i in range(sidecars)], lambda o: api.post(_path(o), o), what="pods", progress=True
        )

        async def token(p: dict[str, Any]) -> str:
            body = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": ["modelway"],
                    "expirationSeconds": 7200,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": p["metadata"]["name"],
                        "uid": p["metadata"]["uid"],
                    },
                },
            }
            answer = await api.post(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{SERVICE_ACCOUNT}/token", body)
            return str(answer["status"]["token"])

        return await _bounded(created, token, what="pod-bound tokens", progress=True)
    finally:
        await api.close()


# --- during the run -------------------------------------------------------------------


def hold_lease(cluster: KubeCluster) -> None:
    """Another replica leads: the controller under test serves sidecars but writes no status."""
    from datetime import UTC, datetime

    from controller.leader import DEFAULT_LEASE_NAME

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": DEFAULT_LEASE_NAME, "namespace": "default"},
        "spec": {
            "holderIdentity": "another-replica_bench",
            "leaseDurationSeconds": 86400,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        },
    }
    status, body = cluster.request("POST", "/apis/coordination.k8s.io/v1/namespaces/default/leases", lease)
    if status not in (200, 201):
        raise BenchBroken(f"could not create the Lease for --follower: HTTP {status}: {body}")
    say(f"  Lease default/{DEFAULT_LEASE_NAME} held by another replica: the controller follows")


def route_status(cluster: KubeCluster, name: str) -> dict[str, Any]:
    """The measured route's status as the controller wrote it (nothing when it does not lead)."""
    time.sleep(1.5)  # the status writer coalesces for 200 ms; give it time to write the last counts
    code, body = cluster.request("GET", f"/apis/modelway.io/v1alpha1/namespaces/{NAMESPACE}/modelroutes/{name}")
    if code != 200 or not isinstance(body, dict):
        return {}
    status = body.get("status") or {}
    return {
        "generation": body.get("metadata", {}).get("generation"),
        "observedGeneration": status.get("observedGeneration"),
        "syncedSidecars": status.get("syncedSidecars"),
        "totalSidecars": status.get("totalSidecars"),
        "programmed": next(
            (
                f"{c.get('status')} {c.get('reason')}: {c.get('message')}"
                for c in status.get("conditions") or []
                if c.get("type") == "Programmed"
            ),
            None,
        ),
    }


_REQUESTS = re.compile(r"^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def api_writes(cluster: KubeCluster) -> dict[str, int]:
    """The API server's own count of the writes a status pass makes, from its /metrics: status writes
    to modelway.io objects (apply or patch of the status subresource) and Events created."""
    code, body = cluster.request("GET", "/metrics", timeout=30)
    if code != 200 or not isinstance(body, str):
        return {"status_writes": -1, "events": -1}
    counts = {"status_writes": 0, "events": 0}
    for labels_text, value in _REQUESTS.findall(body):
        labels = dict(_LABEL.findall(labels_text))
        if labels.get("group") == "modelway.io" and labels.get("subresource") == "status":
            if labels.get("verb") in ("APPLY", "PATCH", "PUT"):
                counts["status_writes"] += int(float(value))
        elif labels.get("resource") == "events" and labels.get("verb") == "POST":
            counts["events"] += int(float(value))
    return counts


class WriteSampler:
    """Samples `api_writes` every `every` seconds in a thread, from the controller's start until stopped:
    when the status pass's writes stopped, and how many there were by each moment asked about."""

    def __init__(self, cluster: KubeCluster, every: float = 2.0) -> None:
        import threading

        self._cluster, self._every = cluster, every
        self.started = time.monotonic()
        self.samples: list[tuple[float, dict[str, int]]] = [(self.started, api_writes(cluster))]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="api-writes")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.samples.append((time.monotonic(), api_writes(self._cluster)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        self.samples.append((time.monotonic(), api_writes(self._cluster)))

    def wait_still(self, still: float = 6.0, timeout: float = 600.0) -> None:
        """Until no status write or Event for `still` seconds: the status pass has ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.samples) > 1 and time.monotonic() - self.last_write_at() >= still:
                return
            time.sleep(self._every)
        say(f"  the API server still sees status writes after {timeout:.0f} s: measuring anyway")

    def writes_since_start(self) -> dict[str, int]:
        first, last = self.samples[0][1], self.samples[-1][1]
        return {k: last[k] - first[k] for k in first}

    def last_write_at(self) -> float:
        """When (monotonic) the last sample that saw new status writes or Events was taken."""
        when, before = self.samples[0]
        for at, counts in self.samples[1:]:
            if counts != before:
                when = at
            before = counts
        return when
