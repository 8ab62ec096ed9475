"""A bad object never costs a good one, against the real API server, controller and a sidecar.

What the CRD schema cannot check (a regex that does not compile, a URL the provider
client cannot use) is found by the controller with the sidecar's own checks: the
object is marked Accepted=False with a reason at its current generation, its last
valid version keeps serving, and nothing else in the namespace is held back.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.controlplane import ControllerProcess, b64, controller_sidecar, pod_token, wait_until
from tests.fakes.server import DEFAULT_KEYS
from tests.integration.sidecar import REPO, SidecarProcess

NS = "team-truth"
API = "modelway.io/v1alpha1"


def _provider(name: str, base_url: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ModelProvider",
        "metadata": {"name": name},
        "spec": {"type": "openai", "baseURL": base_url, "credentialsRef": {"name": "llm-keys", "key": "openai"}},
    }


def _route(
    name: str, model: str, *, beta_regex: str, beta_model: str = "gpt-4o", provider: str = "openai"
) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ModelRoute",
        "metadata": {"name": name},
        "spec": {
            "model": model,
            "rules": [
                {
                    "name": "beta",
                    "matches": {"headers": [{"name": "x-tier", "regex": beta_regex}]},
                    "backends": [{"provider": provider, "model": beta_model}],
                },
                {"name": "default", "backends": [{"provider": provider, "model": "gpt-4o-mini"}]},
            ],
        },
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
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "llm-keys", "labels": {"modelway.io/credentials": "true"}},
            "data": {"openai": b64(DEFAULT_KEYS["openai"])},
        },
        "-n",
        NS,
    )
    kubectl.apply(_provider("openai", fake_openai_process.base_url + "/v1"), "-n", NS)
    kubectl.apply(_route("chat", "chat", beta_regex="^beta$"), "-n", NS)
    yield kubectl


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("config-truth")


@pytest.fixture(scope="module")
def controller(cluster, kube, workdir) -> Iterator[ControllerProcess]:
    process = ControllerProcess(kube.kubeconfig, workdir, env={"POD_NAMESPACE": NS, "POD_NAME": "controller-truth"})
    yield process.start()
    process.stop()


@pytest.fixture(scope="module")
def sidecar(cluster, controller, workdir) -> Iterator[SidecarProcess]:
    process = controller_sidecar(controller, pod_token(cluster, NS, "web"), workdir, "web")
    process.start()
    yield process
    process.stop()


def _ask(sidecar: SidecarProcess, model: str = "chat", tier: str | None = None) -> str:
    client = openai.OpenAI(base_url=sidecar.base_url + "/v1", api_key="unused", max_retries=0, timeout=20)
    headers = {"x-tier": tier} if tier else None
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], extra_headers=headers
    ).model


def _conditions(kubectl: Any, kind: str, name: str) -> tuple[int, dict[str, dict[str, Any]]]:
    obj = kubectl.json("get", kind, name, "-n", NS)
    conditions = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
    return obj["metadata"]["generation"], conditions


def _refused(kubectl: Any, kind: str, name: str, reason: str) -> dict[str, dict[str, Any]] | None:
    generation, conditions = _conditions(kubectl, kind, name)
    accepted = conditions.get("Accepted")
    if (
        accepted
        and accepted["status"] == "False"
        and accepted["reason"] == reason
        and all(c["observedGeneration"] == generation for c in conditions.values())
    ):
        return conditions
    return None


def test_a_route_edited_to_a_bad_regex_keeps_serving_its_old_rules_and_says_why(cluster, sidecar):
    wait_until(lambda: _ask(sidecar, tier="beta") == "gpt-4o", what="the beta rule")
    version = sidecar.admin("/readyz")[1]["version"]
    cluster.apply(_route("chat", "chat", beta_regex="(beta", beta_model="gpt-4o-nano"), "-n", NS)
    conditions = wait_until(
        lambda: _refused(cluster, "modelroute", "chat", "InvalidRegex"),
        what="Accepted=False InvalidRegex at the new generation",
    )
    assert "regex" in conditions["Accepted"]["message"] and "does not compile" in conditions["Accepted"]["message"]
    assert conditions["Programmed"]["status"] == "False"
    assert "sidecars keep generation 1" in conditions["Programmed"]["message"]
    assert sidecar.admin("/readyz")[1]["version"] == version  # nothing was pushed
    assert _ask(sidecar, tier="beta") == "gpt-4o"  # the old rules serve on
    events = cluster("get", "events", "-n", NS, "--field-selector", "involvedObject.name=chat").stdout
    assert "InvalidRegex" in events
    cluster.apply(_route("chat", "chat", beta_regex="^beta$", beta_model="gpt-4o-nano"), "-n", NS)  # fixed
    wait_until(lambda: _ask(sidecar, tier="beta") == "gpt-4o-nano", what="the fixed route")


def test_a_new_route_with_a_bad_regex_gets_a_status(cluster, sidecar):
    cluster.apply(_route("broken", "broken", beta_regex="[unclosed"), "-n", NS)
    conditions = wait_until(
        lambda: _refused(cluster, "modelroute", "broken", "InvalidRegex"), what="a status on the new, invalid route"
    )
    assert "spec.rules.0.matches.headers.0.regex" in conditions["Accepted"]["message"]
    with pytest.raises(openai.NotFoundError):
        _ask(sidecar, model="broken")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://llm.internal:99999/v1", "has a port out of range"),
        ("http://[::1/v1", "is not a URL with a host"),
        ("http://", "is not a URL with a host"),
    ],
)
def test_the_api_server_refuses_a_base_url_the_schema_can_check(cluster, url, says):
    result = cluster.apply(_provider("refused", url), "-n", NS, check=False)
    assert result.returncode != 0 and "spec.baseURL" in result.stderr and says in result.stderr


def test_a_provider_the_controller_refuses_holds_nothing_back(cluster, sidecar):
    """A query string passes the schema (it is a URL) but the client appends API paths to it."""
    cluster.apply(_provider("far", "https://llm.internal/v1?api-version=2024-10-21"), "-n", NS)
    cluster.apply(_route("far", "far", beta_regex="^beta$", provider="far"), "-n", NS)
    conditions = wait_until(
        lambda: _refused(cluster, "modelprovider", "far", "InvalidURL"), what="Accepted=False InvalidURL"
    )
    assert "query or fragment" in conditions["Accepted"]["message"]
    # An unrelated change in the same namespace still reaches the sidecar (debounce is at most 1 s).
    cluster.apply(_route("other", "other", beta_regex="^beta$"), "-n", NS)
    wait_until(
        lambda: "other" in [m["id"] for m in sidecar_models(sidecar)],
        timeout=5,
        what="the unrelated route in the sidecar",
    )
    assert _ask(sidecar, model="other") == "gpt-4o-mini"
    assert "far" not in [m["id"] for m in sidecar_models(sidecar)]


def sidecar_models(sidecar: SidecarProcess) -> list[dict[str, Any]]:
    client = openai.OpenAI(base_url=sidecar.base_url + "/v1", api_key="unused", max_retries=0, timeout=5)
    return [m.model_dump() for m in client.models.list().data]


async def _refusing_sidecar(controller: ControllerProcess, token: str, *, refused: Any) -> None:
    """A sidecar that refuses whatever it is sent (as one older than the controller would), until
    `refused()` says the API server shows it."""
    import asyncio

    import aiohttp

    from proxy.snapshot import STREAM_PATH

    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(controller.url + STREAM_PATH, headers={"authorization": f"Bearer {token}"}) as ws,
    ):
        await ws.send_json({"type": "hello", "version": ""})
        message = await ws.receive_json(timeout=10)
        assert message["type"] == "snapshot"
        await ws.send_json(
            {
                "type": "nack",
                "version": message["version"],
                "error": "providers.0.futureField: Extra inputs are not permitted",
            }
        )
        deadline = asyncio.get_running_loop().time() + 20
        while not await asyncio.to_thread(refused):
            assert asyncio.get_running_loop().time() < deadline, "SidecarRejected never showed in the status"
            await asyncio.sleep(0.2)
        with contextlib.suppress(TimeoutError):  # the refused version is not sent again
            again = await ws.receive(timeout=1.5)
            assert again.type != aiohttp.WSMsgType.TEXT, again.data


def test_a_sidecar_refusal_shows_in_the_route_status(cluster, controller, sidecar):
    import asyncio

    def refused() -> dict[str, Any] | None:
        generation, conditions = _conditions(cluster, "modelroute", "chat")
        programmed = conditions.get("Programmed", {})
        if programmed.get("reason") == "SidecarRejected" and programmed.get("observedGeneration") == generation:
            return programmed
        return None

    asyncio.run(_refusing_sidecar(controller, pod_token(cluster, NS, "old-sidecar"), refused=refused))
    programmed = _conditions(cluster, "modelroute", "chat")[1]["Programmed"]
    assert "1/2 sidecars refused" in programmed["message"] and "Extra inputs are not permitted" in programmed["message"]
    events = cluster("get", "events", "-n", NS, "--field-selector", "involvedObject.name=chat").stdout
    assert "SidecarRejected" in events
    # It went away: the route is programmed again on the sidecar that remains.
    wait_until(
        lambda: _conditions(cluster, "modelroute", "chat")[1]["Programmed"]["status"] == "True",
        what="Programmed=True once the refusing sidecar is gone",
    )


def _modelway(kube: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.dev", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={"KUBECONFIG": str(kube.kubeconfig), "PATH": "/usr/bin:/bin"},
    )


def test_modelway_check_on_the_live_cluster(cluster, kube, sidecar):
    """Runs last in this module: the invalid objects the tests above left are still there."""
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "plain-keys"},
            "stringData": {"openai": "sk-plain"},
        },
        "-n",
        NS,
    )
    plain = _provider("plain", "https://api.openai.com/v1")
    plain["spec"]["credentialsRef"]["name"] = "plain-keys"
    cluster.apply(plain, "-n", NS)
    lonely = _route("lonely", "lonely", beta_regex="^beta$")
    lonely["spec"]["workloadSelector"] = {"matchLabels": {"app": "nobody"}}
    cluster.apply(lonely, "-n", NS)
    cluster("annotate", "pod", "web", "-n", NS, "modelway.io/injected=true", "--overwrite")
    result = _modelway(kube, "check", "-n", NS, "-o", "json")
    assert result.returncode == 1, result.stderr
    findings = {(f["object"], f["problem"].partition(":")[0]): f for f in json.loads(result.stdout)["findings"]}
    assert findings[(f"ModelRoute {NS}/broken", "InvalidRegex")]["severity"] == "error"
    assert "query" in findings[(f"ModelProvider {NS}/far", "InvalidURL")]["problem"]
    label = findings[
        (
            f"Secret {NS}/plain-keys",
            "exists but has no label modelway.io/credentials=true, so the "
            "controller does not see it (ModelProvider plain reports "
            "SecretNotFound)",
        )
    ]
    assert label["fix"] == f"kubectl label secret -n {NS} plain-keys modelway.io/credentials=true"
    lonely_finding = findings[(f"ModelRoute {NS}/lonely", f"no pod in namespace {NS} runs this route")]
    assert "nobody" in lonely_finding["problem"] and lonely_finding["severity"] == "warning"
    assert (f"ModelRoute {NS}/chat", "InvalidRegex") not in findings  # fixed by then


def test_modelway_status_lists_the_connected_sidecar(kube, controller, sidecar):
    result = _modelway(kube, "status", "--admin-url", f"http://127.0.0.1:{controller.admin_port}")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()[:2]
    assert header.split()[:3] == ["SIDECAR", "WORKLOAD", "VERSION"]
    assert f"{NS}/app" in row and sidecar.admin("/readyz")[1]["version"] in row and " yes " in row


def test_a_policy_with_a_bad_redact_regex_is_refused_naming_the_pattern(cluster, sidecar):
    cluster("wait", "--for=condition=Established", "crd/modelpolicies.modelway.io", "--timeout=60s")
    redact = {"patterns": [{"name": "employee_id", "regex": "(EMP-[0-9]+)+"}]}  # nested repetition: ReDoS
    policy = {
        "apiVersion": API,
        "kind": "ModelPolicy",
        "metadata": {"name": "mask"},
        "spec": {"residency": [{"dataClass": "internal", "jurisdictions": ["eu"], "redact": redact}]},
    }
    cluster.apply(policy, "-n", NS)
    conditions = wait_until(
        lambda: _refused(cluster, "modelpolicy", "mask", "InvalidRegex"), what="Accepted=False on the policy"
    )
    message = conditions["Accepted"]["message"]
    assert "redact pattern 'employee_id'" in message and "repeats a repetition" in message
    assert _ask(sidecar) == "gpt-4o-mini"  # the namespace's routes serve on
    cluster("delete", "modelpolicy", "mask", "-n", NS)
