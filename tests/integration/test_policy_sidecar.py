"""Policy enforcement in a real sidecar process, driven by the official SDKs.

The snapshot carries a compiled policy (as the controller would push it): the
US SaaS backend is denied from `internal` up, the EU SaaS one from `personal`
up, and the in-cluster model is allowed for everything. All three are the
fake OpenAI server under different upstream model names, so the model in the
recorded request says which backend was used.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from tests.fakes.server import DEFAULT_KEYS
from tests.integration.sidecar import SidecarProcess

US, EU, IN_CLUSTER = "us-model", "eu-model", "cluster-model"
POLICY = "ModelPolicy team-a/eu-only"


def _provider(name: str, url: str, hosting: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "openai-compatible",
        "baseUrl": url + "/v1",
        "apiKey": DEFAULT_KEYS["openai"],
        "hosting": hosting,
    }


def _denial(provider: str, model: str, classes: list[str], reason: str) -> dict[str, Any]:
    return {
        "provider": provider,
        "model": model,
        "dataClasses": classes,
        "denial": {"policy": POLICY, "reason": reason},
    }


def policy_snapshot(openai_url: str, *, detect: bool = True, default: str = "internal") -> dict[str, Any]:
    one_try = {"attempts": 1}
    return {
        "providers": [
            _provider("team-a.us", openai_url, "saas"),
            _provider("team-a.eu", openai_url, "saas"),
            _provider("team-a.vllm", openai_url, "in-cluster"),
        ],
        "routes": [
            {
                "name": "team-a/chat",
                "model": "chat",
                "rules": [
                    {
                        "name": "default",
                        "retry": one_try,
                        "backends": [{"provider": "team-a.us", "model": US}, {"provider": "team-a.eu", "model": EU}],
                        "fallbacks": [{"provider": "team-a.vllm", "model": IN_CLUSTER}],
                    }
                ],
            },
            {
                "name": "team-a/saas-only",
                "model": "saas-only",
                "rules": [{"name": "default", "retry": one_try, "backends": [{"provider": "team-a.eu", "model": EU}]}],
            },
            {
                "name": "team-a/secret-project",
                "model": "secret-project",
                "rules": [{"name": "default", "backends": [{"provider": "team-a.vllm", "model": IN_CLUSTER}]}],
            },
        ],
        "policy": {
            "workload": "team-a/web",
            "policies": [POLICY],
            "defaultClass": default,
            "detectPersonalData": detect,
            "deniedRoutes": [
                {
                    "model": "secret-project",
                    "denial": {"policy": POLICY, "reason": "route secret-project is not in access.routes"},
                }
            ],
            "deniedBackends": [
                _denial("team-a.us", US, ["internal", "personal", "restricted"], "jurisdiction us is not in ['eu']"),
                _denial("team-a.eu", EU, ["personal", "restricted"], "hosting saas is not in ['in-cluster']"),
            ],
        },
    }


@pytest.fixture(scope="module")
def policed(fake_openai_process: Any) -> Any:
    with SidecarProcess(policy_snapshot(fake_openai_process.base_url)) as process:
        yield process


@pytest.fixture
def client(policed: SidecarProcess) -> openai.OpenAI:
    return policed.openai_client()


def used_models(fake: Any) -> list[str]:
    return [r["json"]["model"] for r in fake.requests() if r["path"].endswith("/chat/completions")]


def ask(client: openai.OpenAI, text: str, *, data_class: str | None = None, model: str = "chat") -> Any:
    headers = {"x-modelway-data-class": data_class} if data_class else None
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], extra_headers=headers
    )


def audit_lines(process: SidecarProcess) -> list[dict[str, Any]]:
    lines = [line for line in process.logs().splitlines() if '"audit":"modelway.policy"' in line]
    return [json.loads(line[line.index("{") :]) for line in lines]


def test_the_workload_default_keeps_internal_data_off_the_us_provider(client, fake_openai):
    for _ in range(12):
        ask(client, "summarise the quarterly plan")
    assert set(used_models(fake_openai)) == {EU}


def test_an_app_may_raise_its_class(client, fake_openai):
    ask(client, "hello", data_class="personal")
    assert used_models(fake_openai) == [IN_CLUSTER]


def test_an_app_cannot_lower_its_class_below_the_workload_default(client, fake_openai):
    for _ in range(12):
        ask(client, "public press release", data_class="public")
    assert set(used_models(fake_openai)) == {EU}  # never US: public was not granted


def test_personal_data_in_the_prompt_raises_the_class(client, fake_openai, policed):
    ask(client, "Please e-mail the contract to jane.doe@example.org today")
    assert used_models(fake_openai) == [IN_CLUSTER]
    line = audit_lines(policed)[-1]
    assert line["decision"] == "reroute" and line["data_class"] == "personal"
    assert "personal data detected (email)" in line["reason"]
    assert "jane.doe" not in policed.logs()  # found, counted, never logged


def test_a_failing_allowed_provider_never_falls_back_to_a_forbidden_one(client, fake_openai):
    fake_openai.script([{"status": 503}])  # the in-cluster model, the only one personal data may reach
    with pytest.raises(openai.APIStatusError) as failed:
        ask(client, "hello", data_class="restricted")
    assert failed.value.status_code == 502
    assert used_models(fake_openai) == [IN_CLUSTER]


def test_nothing_left_is_a_403_naming_the_class_and_the_policy(client, fake_openai, policed):
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(client, "hello", data_class="personal", model="saas-only")
    message = refused.value.body["message"]
    assert "data class 'personal'" in message and POLICY in message and "hosting saas" in message
    assert refused.value.body["code"] == "policy_denied"
    assert fake_openai.requests() == []
    line = audit_lines(policed)[-1]
    assert (line["decision"], line["route"], line["policy"], line["workload"]) == (
        "refuse",
        "team-a/saas-only",
        [POLICY],
        "team-a/web",
    )


def test_a_route_outside_the_policy_is_refused(client, fake_openai):
    with pytest.raises(openai.PermissionDeniedError, match=r"ModelPolicy team-a/eu-only .*access\.routes"):
        ask(client, "hello", model="secret-project")
    assert fake_openai.requests() == []


def test_an_unknown_class_is_a_400_listing_the_classes(client):
    with pytest.raises(openai.BadRequestError, match="public, internal, personal, restricted; got 'secret'"):
        ask(client, "hello", data_class="secret")


def test_anthropic_callers_get_their_own_error_shape(policed, fake_openai):
    claude = policed.anthropic_client()
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        claude.messages.create(
            model="saas-only",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-modelway-data-class": "restricted"},
        )
    assert refused.value.body["error"]["type"] == "permission_error"
    assert POLICY in refused.value.body["error"]["message"]


def test_embeddings_are_classified_too(client, fake_openai):
    with pytest.raises(openai.PermissionDeniedError, match="data class 'personal'"):
        client.embeddings.create(model="saas-only", input=["call me on +44 20 7946 0958"])


def test_refusals_reroutes_and_findings_are_counted(client, policed, fake_openai):
    before = (
        policed.metric("modelway_policy_refusals_total", modelway_data_class="personal"),
        policed.metric("modelway_policy_reroutes_total", modelway_route="team-a/chat"),
        policed.metric("modelway_policy_personal_data_total", modelway_personal_data_kind="iban"),
    )
    with pytest.raises(openai.PermissionDeniedError):
        ask(client, "hello", data_class="personal", model="saas-only")
    ask(client, "pay to DE89 3704 0044 0532 0130 00 or GB82 WEST 1234 5698 7654 32")
    after = (
        policed.metric("modelway_policy_refusals_total", modelway_data_class="personal"),
        policed.metric("modelway_policy_reroutes_total", modelway_route="team-a/chat"),
        policed.metric("modelway_policy_personal_data_total", modelway_personal_data_kind="iban"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 2]
