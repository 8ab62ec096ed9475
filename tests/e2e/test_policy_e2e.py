"""ModelPolicy and ClusterModelPolicy end to end: kubectl -> kube-apiserver -> controller -> sidecars.

Two namespaces with different policies over the same kind of route: its
backends span an EU SaaS provider, a US SaaS provider and an in-cluster model
(all three are the fake OpenAI server under different upstream model names,
so the model in the recorded request says which one was used). The GDPR
ClusterModelPolicy binds only the namespace labelled `compliance=gdpr`.
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

EU_NS, US_NS = "policy-eu", "policy-us"
US, EU, IN_CLUSTER = "us-model", "eu-model", "cluster-model"
API = "modelway.io/v1alpha1"


def _provider(name: str, url: str, *, jurisdiction: str, hosting: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ModelProvider",
        "metadata": {"name": name},
        "spec": {
            "type": "openai-compatible",
            "baseURL": url + "/v1",
            "jurisdiction": jurisdiction,
            "hosting": hosting,
            "credentialsRef": {"name": "llm-keys", "key": "openai"},
        },
    }


def _resources(url: str) -> list[dict[str, Any]]:
    rule = {
        "name": "default",
        "retry": {"attempts": 1},
        "backends": [{"provider": "us-saas", "model": US}, {"provider": "eu-saas", "model": EU}],
        "fallbacks": [{"provider": "in-cluster", "model": IN_CLUSTER}],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "llm-keys", "labels": {"modelway.io/credentials": "true"}},
            "data": {"openai": b64(DEFAULT_KEYS["openai"])},
        },
        _provider("eu-saas", url, jurisdiction="eu", hosting="saas"),
        _provider("us-saas", url, jurisdiction="us", hosting="saas"),
        _provider("in-cluster", url, jurisdiction="eu", hosting="in-cluster"),
        {
            "apiVersion": API,
            "kind": "ModelRoute",
            "metadata": {"name": "chat"},
            "spec": {"model": "chat", "rules": [rule]},
        },
        {
            "apiVersion": API,
            "kind": "ModelRoute",
            "metadata": {"name": "saas"},
            "spec": {
                "model": "saas",
                "rules": [{"name": "default", "backends": [{"provider": "eu-saas", "model": EU}]}],
            },
        },
    ]


GDPR = {
    "apiVersion": API,
    "kind": "ClusterModelPolicy",
    "metadata": {"name": "gdpr"},
    "spec": {
        "namespaceSelector": {"matchLabels": {"compliance": "gdpr"}},
        "residency": [
            {"dataClass": "internal", "jurisdictions": ["eu"]},
            {"dataClass": "personal", "hosting": ["vpc", "in-cluster"]},
        ],
    },
}
EU_TEAM = {
    "apiVersion": API,
    "kind": "ModelPolicy",
    "metadata": {"name": "eu-team"},
    "spec": {"defaultDataClass": "internal", "detectPersonalData": True},
}


def us_team(public_jurisdictions: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ModelPolicy",
        "metadata": {"name": "us-team"},
        "spec": {
            "defaultDataClass": "public",
            "residency": [
                {"dataClass": "public", "jurisdictions": public_jurisdictions},
                {"dataClass": "restricted", "hosting": ["in-cluster"]},
            ],
        },
    }


@pytest.fixture(scope="module")
def cluster(kube, kubectl, fake_openai_process) -> Iterator[Any]:
    kubectl("apply", "-f", str(REPO / "crds"))
    kubectl(
        "wait",
        "--for=condition=Established",
        "crd/modelpolicies.modelway.io",
        "crd/clustermodelpolicies.modelway.io",
        "crd/modelroutes.modelway.io",
        "--timeout=60s",
    )
    kubectl.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": EU_NS, "labels": {"compliance": "gdpr"}}}
    )
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": US_NS}})
    for namespace in (EU_NS, US_NS):
        kubectl.apply(_resources(fake_openai_process.base_url), "-n", namespace)
    kubectl.apply(GDPR)
    kubectl.apply(EU_TEAM, "-n", EU_NS)
    kubectl.apply(us_team(["us", "eu"]), "-n", US_NS)
    yield kubectl


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("policy-e2e")


@pytest.fixture(scope="module")
def controller(cluster, kube, workdir) -> Iterator[ControllerProcess]:
    process = ControllerProcess(
        kube.kubeconfig, workdir, env={"POD_NAMESPACE": "default", "POD_NAME": "controller-policy"}
    ).start()
    yield process
    process.stop()


def _sidecar(cluster: Any, controller: ControllerProcess, workdir: Path, namespace: str) -> Iterator[SidecarProcess]:
    process = controller_sidecar(controller, pod_token(cluster, namespace, "web"), workdir, f"web-{namespace}")
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def eu_sidecar(cluster, controller, workdir) -> Iterator[SidecarProcess]:
    yield from _sidecar(cluster, controller, workdir, EU_NS)


@pytest.fixture(scope="module")
def us_sidecar(cluster, controller, workdir) -> Iterator[SidecarProcess]:
    yield from _sidecar(cluster, controller, workdir, US_NS)


def ask(
    sidecar: SidecarProcess, text: str = "summarise the plan", *, data_class: str | None = None, model: str = "chat"
) -> Any:
    client = openai.OpenAI(base_url=sidecar.base_url + "/v1", api_key="unused", max_retries=0, timeout=20)
    headers = {"x-modelway-data-class": data_class} if data_class else None
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], extra_headers=headers
    )


def used(fake: Any) -> set[str]:
    return {r["json"]["model"] for r in fake.requests() if r["path"].endswith("/chat/completions")}


def ends_at(sidecar: SidecarProcess, fake: Any, *, times: int = 10, **kwargs: Any) -> set[str]:
    """Where `times` requests went (the route splits 50/50 between US and EU before any policy)."""
    fake.reset()
    for _ in range(times):
        ask(sidecar, **kwargs)
    return used(fake)


def test_each_class_from_each_namespace_ends_at_an_allowed_provider(eu_sidecar, us_sidecar, fake_openai):
    # policy-eu: internal by default, GDPR keeps it in the EU, personal data only in-cluster
    assert ends_at(eu_sidecar, fake_openai) == {EU}
    assert ends_at(eu_sidecar, fake_openai, data_class="personal", times=3) == {IN_CLUSTER}
    assert ends_at(eu_sidecar, fake_openai, data_class="restricted", times=3) == {IN_CLUSTER}
    # policy-us: public by default, US or EU; restricted only in-cluster
    assert ends_at(us_sidecar, fake_openai, times=20) == {US, EU}
    assert ends_at(us_sidecar, fake_openai, data_class="restricted", times=3) == {IN_CLUSTER}


def test_an_app_header_cannot_lower_its_class(eu_sidecar, fake_openai):
    assert ends_at(eu_sidecar, fake_openai, data_class="public") == {EU}


def test_a_personal_data_prompt_without_a_header_goes_in_cluster(eu_sidecar, us_sidecar, fake_openai):
    prompt = "Refund card 4111 1111 1111 1111 for the customer"
    assert ends_at(eu_sidecar, fake_openai, text=prompt, times=3) == {IN_CLUSTER}
    assert "4111" not in eu_sidecar.logs()
    # policy-us does not ask for detection: the same prompt is just public there
    assert ends_at(us_sidecar, fake_openai, text=prompt, times=20) == {US, EU}


def test_a_failing_allowed_provider_never_falls_back_to_a_forbidden_one(eu_sidecar, fake_openai):
    fake_openai.reset()
    fake_openai.script([{"status": 503}])
    with pytest.raises(openai.APIStatusError) as failed:
        ask(eu_sidecar, data_class="personal")
    assert failed.value.status_code == 502
    assert used(fake_openai) == {IN_CLUSTER}


def test_nothing_allowed_is_a_403_naming_the_class_and_the_rule(eu_sidecar, fake_openai):
    fake_openai.reset()
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(eu_sidecar, data_class="personal", model="saas")
    message = refused.value.body["message"]
    assert "data class 'personal'" in message and "ClusterModelPolicy gdpr" in message
    assert "hosting saas is not in ['vpc', 'in-cluster']" in message
    assert fake_openai.requests() == []


def test_a_namespace_policy_cannot_widen_a_cluster_policy(cluster, eu_sidecar, fake_openai):
    version = eu_sidecar.admin("/readyz")[1]["version"]
    cluster.apply(
        {
            "apiVersion": API,
            "kind": "ModelPolicy",
            "metadata": {"name": "widen"},
            "spec": {"residency": [{"dataClass": "public", "jurisdictions": ["us", "eu"]}]},
        },
        "-n",
        EU_NS,
    )
    wait_until(lambda: eu_sidecar.admin("/readyz")[1]["version"] != version, what="the widened policy pushed")
    assert ends_at(eu_sidecar, fake_openai) == {EU}


def test_a_policy_change_with_kubectl_applies_to_the_next_request(cluster, us_sidecar, fake_openai):
    version = us_sidecar.admin("/readyz")[1]["version"]
    cluster.apply(us_team(["eu"]), "-n", US_NS)
    wait_until(lambda: us_sidecar.admin("/readyz")[1]["version"] != version, what="the new policy in the sidecar")
    assert ends_at(us_sidecar, fake_openai) == {EU}
    cluster.apply(us_team(["us", "eu"]), "-n", US_NS)


def _conditions(cluster: Any, *args: str) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in cluster.json("get", *args).get("status", {}).get("conditions", [])}


def test_status_on_policies_and_on_the_routes_they_restrict(cluster, controller):
    wait_until(
        lambda: _conditions(cluster, "clustermodelpolicy", "gdpr").get("Accepted", {}).get("status") == "True",
        what="ClusterModelPolicy gdpr Accepted=True",
    )
    assert _conditions(cluster, "modelpolicy", "eu-team", "-n", EU_NS)["Accepted"]["status"] == "True"
    restricted = wait_until(
        lambda: _conditions(cluster, "modelroute", "chat", "-n", EU_NS).get("PolicyRestricted"),
        what="PolicyRestricted on the EU route",
    )
    assert restricted["status"] == "True"
    assert (
        "ClusterModelPolicy gdpr removes us-saas/us-model for data classes internal, personal, restricted"
        in restricted["message"]
    )
    us_restricted = _conditions(cluster, "modelroute", "chat", "-n", US_NS)["PolicyRestricted"]
    assert "ClusterModelPolicy gdpr" not in us_restricted["message"]  # gdpr does not select policy-us


def test_the_api_server_refuses_a_malformed_policy(cluster):
    bad = {
        "apiVersion": API,
        "kind": "ModelPolicy",
        "metadata": {"name": "bad"},
        "spec": {"residency": [{"dataClass": "personal"}]},
    }
    result = cluster.apply(bad, "-n", EU_NS, check=False)
    assert result.returncode != 0
    assert "a residency rule needs at least one of jurisdictions, regions, hosting" in result.stderr
