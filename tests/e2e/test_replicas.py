"""Two controller replicas, one sidecar on each: the leader's status counts both.

Real kube-apiserver (the harness), two real controller processes sharing one
Lease namespace, real sidecars with pod-bound tokens. Each replica publishes
its sidecar counts on its own Lease; the leader sums them into the route's
status (controller/replicas.py).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from controller.replicas import ANNOTATION, SELECTOR
from tests.e2e.controlplane import ControllerProcess, b64, controller_sidecar, pod_token, wait_until
from tests.fakes.server import DEFAULT_KEYS
from tests.integration.sidecar import REPO, SidecarProcess

pytestmark = pytest.mark.e2e

NS = "replicas-e2e"  # the route and the sidecars' pods
LEASE_NS = "replicas-e2e-system"  # where the replicas elect a leader and publish their counts


def _replica(kubeconfig: Path, workdir: Path, pod_name: str) -> ControllerProcess:
    return ControllerProcess(
        kubeconfig, workdir, name=pod_name, extra_args=["--lease-namespace", LEASE_NS, "--pod-name", pod_name]
    )


def _resources(openai_url: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "llm-keys", "labels": {"modelway.io/credentials": "true"}},
            "data": {"openai": b64(DEFAULT_KEYS["openai"])},
        },
        {
            "apiVersion": "modelway.io/v1alpha1",
            "kind": "ModelProvider",
            "metadata": {"name": "openai"},
            "spec": {
                "type": "openai",
                "baseURL": openai_url + "/v1",
                "credentialsRef": {"name": "llm-keys", "key": "openai"},
            },
        },
    ]


def _route(model: str) -> dict[str, Any]:  # no workload selector: every pod of the namespace
    return {
        "apiVersion": "modelway.io/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "chat"},
        "spec": {"model": "chat", "rules": [{"name": "default", "backends": [{"provider": "openai", "model": model}]}]},
    }


@pytest.fixture(scope="module")
def cluster(kube, kubectl, fake_openai_process) -> Iterator[Any]:
    kubectl("apply", "-f", str(REPO / "crds"))
    kubectl(
        "wait",
        "--for=condition=Established",
        "crd/modelroutes.modelway.io",
        "crd/modelproviders.modelway.io",
        "--timeout=60s",
    )
    for namespace in (NS, LEASE_NS):
        kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    kubectl.apply(_resources(fake_openai_process.base_url), "-n", NS)
    kubectl.apply(_route("gpt-4o"), "-n", NS)
    yield kubectl
    kubectl("delete", "namespace", NS, LEASE_NS, "--wait=false", check=False)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("replicas-e2e")


def _leader(kubectl: Any) -> str:
    lease = kubectl("get", "lease", "modelway-controller", "-n", LEASE_NS, "-o", "json", check=False)
    if lease.returncode != 0:
        return ""
    return str((json.loads(lease.stdout).get("spec") or {}).get("holderIdentity") or "")


@pytest.fixture(scope="module")
def replicas(cluster, kube, workdir) -> Iterator[tuple[ControllerProcess, ControllerProcess]]:
    """(leader, follower): the first started leads; the second joins once it does."""
    leader = _replica(kube.kubeconfig, workdir, "ctl-a").start()
    follower = _replica(kube.kubeconfig, workdir, "ctl-b")
    try:
        wait_until(lambda: _leader(cluster).startswith("ctl-a_"), what="ctl-a leading")
        follower.start()
        yield leader, follower
    finally:
        follower.stop()
        leader.stop()


@pytest.fixture(scope="module")
def sidecars(cluster, replicas, workdir) -> Iterator[tuple[SidecarProcess, SidecarProcess]]:
    leader, follower = replicas
    on_leader = controller_sidecar(leader, pod_token(cluster, NS, "web-a"), workdir, "web-a")
    on_follower = controller_sidecar(follower, pod_token(cluster, NS, "web-b"), workdir, "web-b")
    try:
        on_leader.start()
        on_follower.start()
        yield on_leader, on_follower
    finally:
        on_leader.stop()
        on_follower.stop()


def _status(kubectl: Any) -> tuple[int, dict[str, Any]]:
    obj = kubectl.json("get", "modelroute", "chat", "-n", NS)
    return obj["metadata"]["generation"], obj.get("status") or {}


def _counts(kubectl: Any) -> tuple[int, int, str] | None:
    """(synced, total, Programmed) for the route's current generation, None while status lags behind."""
    generation, status = _status(kubectl)
    programmed = next((c for c in status.get("conditions", []) if c["type"] == "Programmed"), None)
    if programmed is None or programmed["observedGeneration"] != generation:
        return None
    return status.get("syncedSidecars", 0), status.get("totalSidecars", 0), programmed["status"]


def _replica_leases(kubectl: Any) -> dict[str, dict[str, Any]]:
    items = kubectl.json("get", "leases", "-n", LEASE_NS, "-l", SELECTOR)["items"]
    return {item["spec"]["holderIdentity"]: item for item in items}


def _ask(sidecar: SidecarProcess) -> str:
    client = openai.OpenAI(base_url=sidecar.base_url + "/v1", api_key="unused", max_retries=0, timeout=20)
    return client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}]).model


def test_the_leader_counts_the_other_replicas_sidecars(cluster, sidecars):
    on_leader, on_follower = sidecars
    assert _ask(on_leader) == _ask(on_follower) == "gpt-4o"
    wait_until(lambda: _counts(cluster) == (2, 2, "True"), what="2/2 sidecars, Programmed=True")
    leases = _replica_leases(cluster)
    assert sorted(holder.split("_")[0] for holder in leases) == ["ctl-a", "ctl-b"]
    generation, _ = _status(cluster)
    follower_lease = next(lease for holder, lease in leases.items() if holder.startswith("ctl-b_"))
    assert follower_lease["metadata"]["annotations"][ANNOTATION] == f'{{"{NS}/chat":[1,1,{generation}]}}'


def test_an_edit_is_programmed_once_both_replicas_sidecars_run_it(cluster, sidecars):
    on_leader, on_follower = sidecars
    before, _ = _status(cluster)
    cluster.apply(_route("gpt-4o-mini"), "-n", NS)
    wait_until(lambda: _status(cluster)[0] > before, what="the new generation")
    wait_until(lambda: _counts(cluster) == (2, 2, "True"), what="2/2 sidecars on the new generation")
    assert _ask(on_leader) == _ask(on_follower) == "gpt-4o-mini"


def test_a_sidecar_leaving_the_other_replica_is_counted_out(cluster, sidecars):
    _, on_follower = sidecars
    wait_until(lambda: _counts(cluster) == (2, 2, "True"), what="2/2 sidecars")
    on_follower.stop()
    wait_until(lambda: _counts(cluster) == (1, 1, "True"), timeout=5, what="back to 1/1")
    on_follower.start()  # same pod, same token: it comes back
    wait_until(lambda: _counts(cluster) == (2, 2, "True"), timeout=10, what="2/2 again")


def test_a_stopped_replica_takes_its_lease_and_counts_along(cluster, replicas, sidecars):
    _, follower = replicas
    wait_until(lambda: _counts(cluster) == (2, 2, "True"), what="2/2 sidecars")
    follower.stop()  # clean: deletes its Lease (its sidecar keeps retrying a dead address)
    assert not any(holder.startswith("ctl-b_") for holder in _replica_leases(cluster))
    wait_until(lambda: _counts(cluster) == (1, 1, "True"), timeout=5, what="the follower's counts gone")


def test_a_killed_replicas_counts_go_when_its_lease_expires(cluster, replicas, sidecars):
    _, follower = replicas
    follower.start()  # same port: its sidecar reconnects
    wait_until(lambda: _counts(cluster) == (2, 2, "True"), timeout=15, what="2/2 with the follower back")
    killed_at = time.monotonic()
    follower.stop(signal.SIGKILL)  # no chance to delete its Lease
    assert any(holder.startswith("ctl-b_") for holder in _replica_leases(cluster))
    wait_until(lambda: _counts(cluster) == (1, 1, "True"), timeout=25, what="the dead replica's counts gone")
    assert time.monotonic() - killed_at > 5  # not before its Lease (15 s, renewed every 5 s) expired
