"""The control plane end to end: kubectl -> kube-apiserver -> controller process -> sidecar process.

Real kube-apiserver and etcd (the harness), the real controller in Kubernetes
mode, real sidecars authenticating with pod-bound projected tokens, and fake
providers behind them. Pods exist as API objects only (no kubelet): enough for
TokenReview to name them and for the controller to read their labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.controlplane import ControllerProcess, b64, controller_sidecar, pod_token, wait_until
from tests.fakes.server import DEFAULT_KEYS
from tests.integration.sidecar import REPO, SidecarProcess

NS = "team-e2e"
OTHER_NS = "team-other"


def _providers(openai_url: str, anthropic_url: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "llm-keys", "labels": {"modelway.io/credentials": "true"}},
            "data": {"openai": b64(DEFAULT_KEYS["openai"]), "anthropic": b64(DEFAULT_KEYS["anthropic"])},
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
        {
            "apiVersion": "modelway.io/v1alpha1",
            "kind": "ModelProvider",
            "metadata": {"name": "claude"},
            "spec": {
                "type": "anthropic",
                "baseURL": anthropic_url,
                "credentialsRef": {"name": "llm-keys", "key": "anthropic"},
            },
        },
    ]


def _route(provider: str, model: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelway.io/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "chat"},
        "spec": {"model": "chat", "rules": [{"name": "default", "backends": [{"provider": provider, "model": model}]}]},
    }


@pytest.fixture(scope="module")
def cluster(kube, kubectl, fake_openai_process, fake_anthropic_process) -> Iterator[Any]:
    kubectl("apply", "-f", str(REPO / "crds"))
    kubectl(
        "wait",
        "--for=condition=Established",
        "crd/modelroutes.modelway.io",
        "crd/modelproviders.modelway.io",
        "--timeout=60s",
    )
    for namespace in (NS, OTHER_NS):
        kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    kubectl.apply(_providers(fake_openai_process.base_url, fake_anthropic_process.base_url), "-n", NS)
    kubectl.apply(_route("openai", "gpt-4o"), "-n", NS)
    yield kubectl


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("controller-e2e")


@pytest.fixture(scope="module")
def controller(cluster, kube, workdir) -> Iterator[ControllerProcess]:
    process = ControllerProcess(
        kube.kubeconfig, workdir, env={"POD_NAMESPACE": NS, "POD_NAME": "controller-e2e"}
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def sidecar(cluster, controller, workdir) -> Iterator[SidecarProcess]:
    process = controller_sidecar(controller, pod_token(cluster, NS, "web"), workdir, "web")
    process.start()
    yield process
    process.stop()


def _ask(sidecar: SidecarProcess) -> str:
    client = openai.OpenAI(base_url=sidecar.base_url + "/v1", api_key="unused", max_retries=0, timeout=20)
    return client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}]).model


def _version(sidecar: SidecarProcess) -> str:
    return sidecar.admin("/readyz")[1].get("version", "")


def _route_object(kubectl: Any) -> dict[str, Any]:
    return kubectl.json("get", "modelroute", "chat", "-n", NS)


def _condition(kubectl: Any, kind: str, status: str | None = None) -> dict[str, Any] | None:
    for condition in _route_object(kubectl).get("status", {}).get("conditions", []):
        if condition["type"] == kind and (status is None or condition["status"] == status):
            return condition
    return None


def test_a_route_change_with_kubectl_reaches_the_sidecar(cluster, sidecar):
    assert _ask(sidecar) == "gpt-4o"
    before = _version(sidecar)
    cluster.apply(_route("claude", "claude-sonnet-4-5"), "-n", NS)
    wait_until(lambda: _version(sidecar) != before, what="the new snapshot in the sidecar")
    assert _ask(sidecar) == "claude-sonnet-4-5"


def test_status_reports_conditions_and_the_synced_sidecars(cluster, sidecar):
    generation = _route_object(cluster)["metadata"]["generation"]

    def programmed() -> bool:
        status = _route_object(cluster).get("status", {})
        condition = _condition(cluster, "Programmed", status="True")
        return bool(condition and condition["observedGeneration"] == generation and status.get("syncedSidecars") == 1)

    wait_until(programmed, what="Programmed=True with 1 synced sidecar")
    for kind in ("Accepted", "ResolvedRefs"):
        assert _condition(cluster, kind)["status"] == "True"
    table = cluster("get", "mwr", "-n", NS).stdout
    assert "chat" in table and "True" in table and " 1 " in f" {table.split()[-2]} "


def test_a_bad_reference_leaves_the_sidecar_on_its_last_good_rules(cluster, sidecar, controller):
    cluster.apply(_route("claude", "claude-sonnet-4-5"), "-n", NS)
    wait_until(lambda: _ask(sidecar) == "claude-sonnet-4-5", what="claude route")
    before = _version(sidecar)
    cluster.apply(_route("no-such-provider", "x"), "-n", NS)
    refs = wait_until(lambda: _condition(cluster, "ResolvedRefs", status="False"), what="ResolvedRefs=False")
    assert refs["reason"] == "BackendNotFound" and "no-such-provider" in refs["message"]
    assert refs["observedGeneration"] == _route_object(cluster)["metadata"]["generation"]
    assert _condition(cluster, "Programmed")["status"] == "False"  # sidecars keep the last good generation
    assert _version(sidecar) == before
    assert _ask(sidecar) == "claude-sonnet-4-5"
    cluster.apply(_route("openai", "gpt-4o"), "-n", NS)  # fixed: the fix goes out
    wait_until(lambda: _version(sidecar) != before, what="the fixed route")
    assert _ask(sidecar) == "gpt-4o"


def test_a_token_from_another_namespace_gets_nothing_of_this_one(cluster, controller, workdir):
    other = controller_sidecar(controller, pod_token(cluster, OTHER_NS, "intruder"), workdir, "intruder")
    other.start_process()
    try:
        wait_until(lambda: other.admin("/readyz")[0] == 200, what="the other sidecar's (empty) snapshot")
        _, config = other.admin("/config")
        assert config["snapshot"]["routes"] == [] and config["snapshot"]["providers"] == []
        with pytest.raises(openai.NotFoundError):
            _ask(other)
    finally:
        other.stop()


def test_a_token_for_another_audience_is_refused(cluster, controller, workdir):
    token = cluster("create", "token", "app", "-n", NS).stdout.strip()  # audience: the apiserver, not modelway
    stranger = controller_sidecar(controller, token, workdir, "stranger")
    stranger.start_process()
    try:
        wait_until(lambda: "HTTP 401" in stranger.logs(), what="the refusal")
        assert stranger.admin("/readyz")[0] == 503
    finally:
        stranger.stop()


def test_controller_restart_loses_nothing(cluster, controller, sidecar):
    cluster.apply(_route("openai", "gpt-4o"), "-n", NS)
    wait_until(lambda: _ask(sidecar) == "gpt-4o", what="openai route")
    controller.stop()
    assert _ask(sidecar) == "gpt-4o"  # the sidecar serves on while the controller is away
    cluster.apply(_route("claude", "claude-sonnet-4-5"), "-n", NS)  # a change made while it was down
    controller.start()
    wait_until(lambda: _ask(sidecar) == "claude-sonnet-4-5", timeout=30, what="the change made during the outage")


def test_kube_apiserver_restart_the_watch_resumes(cluster, controller, sidecar, kube_control_plane):
    cluster.apply(_route("openai", "gpt-4o"), "-n", NS)
    wait_until(lambda: _ask(sidecar) == "gpt-4o", what="openai route")
    kube_control_plane.stop_apiserver()
    assert _ask(sidecar) == "gpt-4o"  # the data plane does not need the API server
    kube_control_plane.start_apiserver()
    cluster.apply(_route("claude", "claude-sonnet-4-5"), "-n", NS)
    wait_until(
        lambda: _ask(sidecar) == "claude-sonnet-4-5", timeout=45, what="a change made after the API server came back"
    )
