"""Personal data in any field of a request never reaches a provider the policy denies it.

The real sidecar runs a policy that detects personal data and denies it to the
SaaS backends, which are each route's first choice, while an in-cluster
fallback may take it. An e-mail address is put in one field of each inbound API
at a time (the fields of tests/unit/test_classify_fields.py): the request must
not reach the denied backend (rerouted to the allowed one, or refused where no
backend is left), and no byte the denied backend receives holds the address.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.server import DEFAULT_KEYS
from tests.integration.sidecar import SidecarProcess
from tests.unit.test_classify_fields import (
    ANTHROPIC_FIELDS,
    EMAIL,
    OPENAI_FIELDS,
    PERCENT,
    anthropic_request,
    openai_request,
)

POLICY = "ModelPolicy team/in-cluster-only"
DENIED = {"chat": "saas-model", "claude": "saas-claude", "embed": "saas-embed", "saas-only": "saas-model"}
ALLOWED = {"chat": "local-model", "claude": "local-claude", "embed": "local-embed"}


def _provider(name: str, kind: str, url: str, hosting: str) -> dict[str, Any]:
    key = DEFAULT_KEYS["anthropic" if kind == "anthropic" else "openai"]
    return {"name": name, "type": kind, "baseUrl": url, "apiKey": key, "hosting": hosting}


def _route(model: str, primary: str, fallback: str | None) -> dict[str, Any]:
    saas, local = ("team.claude-saas", "team.claude-local") if model == "claude" else ("team.saas", "team.local")
    rule: dict[str, Any] = {
        "name": "default",
        "retry": {"attempts": 1},
        "backends": [{"provider": saas, "model": primary}],
    }
    if fallback:
        rule["fallbacks"] = [{"provider": local, "model": fallback}]
    return {"name": f"team/{model}", "model": model, "rules": [rule]}


def policy_snapshot(openai_url: str, anthropic_url: str) -> dict[str, Any]:
    denial = {"policy": POLICY, "reason": "hosting saas is not in ['in-cluster']"}
    return {
        "providers": [
            _provider("team.saas", "openai", openai_url + "/v1", "saas"),
            _provider("team.local", "openai-compatible", openai_url + "/v1", "in-cluster"),
            _provider("team.claude-saas", "anthropic", anthropic_url, "saas"),
            _provider("team.claude-local", "anthropic", anthropic_url, "in-cluster"),
        ],
        "routes": [_route(model, DENIED[model], ALLOWED.get(model)) for model in DENIED],
        "policy": {
            "workload": "team/app",
            "policies": [POLICY],
            "defaultClass": "internal",
            "detectPersonalData": True,
            "deniedBackends": [
                {
                    "provider": "team.claude-saas" if model == "claude" else "team.saas",
                    "model": denied,
                    "dataClasses": ["personal", "restricted"],
                    "denial": denial,
                }
                for model, denied in DENIED.items()
                if model != "saas-only"
            ],
        },
    }


@pytest.fixture(scope="module")
def sidecar(fake_openai_process: Any, fake_anthropic_process: Any) -> Iterator[SidecarProcess]:
    snapshot = policy_snapshot(fake_openai_process.base_url, fake_anthropic_process.base_url)
    with SidecarProcess(snapshot) as process:
        yield process


def post(sidecar: SidecarProcess, path: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        sidecar.base_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if error.headers.get_content_type() == "application/json" else raw


def received(fakes: list[Any], model: str) -> list[str]:
    """The bodies (as JSON text) the backend serving upstream `model` got."""
    return [
        json.dumps(r["json"])
        for fake in fakes
        for r in fake.requests()
        if isinstance(r["json"], dict) and r["json"].get("model") == model
    ]


def assert_kept_off_the_denied_backend(fakes: list[Any], route: str, marker: str, *, carried: bool = True) -> None:
    """`carried`: the allowed backend gets the field (False: a field the translation to its API drops)."""
    denied, allowed = received(fakes, DENIED[route]), received(fakes, ALLOWED[route])
    assert not any(marker in body for body in denied), "personal data reached the denied backend"
    assert denied == [], "the request reached the denied backend"
    assert len(allowed) == 1 and (marker in allowed[0]) == carried, "rerouted to the allowed backend"


def test_without_personal_data_each_route_uses_its_denied_first_choice(sidecar, fake_openai, fake_anthropic):
    # The control: what the tests below keep off the SaaS backends would reach them without the scan.
    assert post(sidecar, "/v1/chat/completions", openai_request())[0] == 200
    assert post(sidecar, "/v1/messages", anthropic_request())[0] == 200
    assert post(sidecar, "/v1/embeddings", {"model": "embed", "input": "hello"})[0] == 200
    fakes = [fake_openai, fake_anthropic]
    assert [len(received(fakes, DENIED[r])) for r in ("chat", "claude", "embed")] == [1, 1, 1]


@pytest.mark.parametrize(("edit", "marker"), [pytest.param(e, m, id=c) for c, e, m in OPENAI_FIELDS])
def test_openai_chat_field(sidecar, fake_openai, edit, marker):
    body = openai_request()
    edit(body)
    status, answer = post(sidecar, "/v1/chat/completions", body)
    assert status != 500, answer
    assert_kept_off_the_denied_backend([fake_openai], "chat", marker)


# Every field: an Anthropic backend gets the app's own body (the pass-through); `crosses`: the
# translation to OpenAI carries it too.
ANTHROPIC_SENT = [pytest.param(e, crosses, id=c) for c, e, crosses in ANTHROPIC_FIELDS]


@pytest.mark.parametrize(("edit", "crosses"), ANTHROPIC_SENT)
@pytest.mark.parametrize("route", ["claude", "chat"])  # Anthropic to Anthropic, and to OpenAI
def test_anthropic_messages_field(sidecar, fake_openai, fake_anthropic, edit, crosses, route):
    body = anthropic_request()
    edit(body)
    body["model"] = route
    marker = PERCENT if PERCENT in json.dumps(body) else EMAIL
    status, answer = post(sidecar, "/v1/messages", body)
    assert status != 500, answer
    carried = crosses or route == "claude"
    assert_kept_off_the_denied_backend([fake_openai, fake_anthropic], route, marker, carried=carried)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"model": "embed", "input": f"I am {EMAIL}"}, id="string"),
        pytest.param({"model": "embed", "input": ["hello", f"I am {EMAIL}"]}, id="list of strings"),
        pytest.param({"model": "embed", "input": "hello", "user": EMAIL}, id="user"),
        pytest.param({"model": "embed", "input": "hello", "metadata": {"owner": EMAIL}}, id="an unknown field"),
    ],
)
def test_embeddings_field(sidecar, fake_openai, body):
    status, answer = post(sidecar, "/v1/embeddings", body)
    assert status == 200, answer
    assert_kept_off_the_denied_backend([fake_openai], "embed", EMAIL)


def test_with_no_backend_left_the_request_is_refused_naming_the_policy(sidecar, fake_openai):
    body = openai_request()
    body["model"] = "saas-only"
    body["tools"][0]["function"]["description"] = f"Mails the report to {EMAIL}"
    status, answer = post(sidecar, "/v1/chat/completions", body)
    assert status == 403 and answer["error"]["code"] == "policy_denied"
    assert POLICY in answer["error"]["message"] and "personal" in answer["error"]["message"]
    assert EMAIL not in json.dumps(answer)  # what was found is never echoed
    assert fake_openai.requests() == []


@pytest.mark.parametrize(
    "message",
    [
        pytest.param({"role": "assistant", "content": None, "tool_calls": 5}, id="tool_calls a number"),
        pytest.param(
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": "f"}]}, id="function a string"
        ),
        pytest.param(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": {"to": EMAIL}}}],
            },
            id="arguments an object",
        ),
    ],
)
def test_mistyped_tool_calls_with_detection_on_are_not_a_500(sidecar, fake_openai, message):
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}, message]}
    status, answer = post(sidecar, "/v1/chat/completions", body)
    assert status != 500 and isinstance(answer, dict), answer
    assert received([fake_openai], DENIED["chat"]) == [] or EMAIL not in json.dumps(message)
