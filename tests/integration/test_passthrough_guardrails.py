"""Guardrails turn the same-API pass-through off, in a real sidecar: an Anthropic SDK call to an Anthropic
backend goes out as the app sent it (unknown fields and all) only when no guardrail replaced a text of
it and none reads the answer; else the request is translated (the replaced texts are what the provider
gets) and the answer re-encoded (the texts a guardrail replaced in it are what the app gets, plain and
streamed), never the provider's own bytes.

The guardrail service (tests/integration/guardrail_service.py, `/words`) replaces "secret" in a request
and "hidden" in an answer by "[removed]"; the fake Anthropic answers "echo: <the last user text>".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.fakes.process import FakeProviderProcess
from tests.fakes.server import DEFAULT_KEYS
from tests.integration.guardrail_service import GuardrailService
from tests.integration.sidecar import SidecarProcess

POLICY = "ModelPolicy team-a/safety"
# A field no API has yet: only the pass-through carries it (the translated request is built anew).
FUTURE = {"future_field": {"nested": [1, "x"]}}


def _route(name: str) -> dict[str, Any]:
    rule = {"name": "default", "retry": {"attempts": 1}, "backends": [{"provider": "claude", "model": "claude-x"}]}
    return {"name": f"team-a/{name}", "model": name, "rules": [rule]}


def _guardrail(route: str, phase: str, url: str) -> dict[str, Any]:
    return {"name": f"words-{phase}", "policy": POLICY, "url": url, "routes": [route], "phases": [phase]}


@pytest.fixture(scope="module")
def service() -> Iterator[GuardrailService]:
    with GuardrailService() as running:
        yield running


@pytest.fixture(scope="module")
def sidecar(fake_anthropic_process: FakeProviderProcess, service: GuardrailService) -> Iterator[SidecarProcess]:
    snapshot = {
        "providers": [
            {
                "name": "claude",
                "type": "anthropic",
                "baseUrl": fake_anthropic_process.base_url,
                "apiKey": DEFAULT_KEYS["anthropic"],
            }
        ],
        "routes": [_route("checked-request"), _route("checked-answer"), _route("plain")],
        "policy": {
            "workload": "team-a/web",
            "policies": [POLICY],
            "guardrails": [
                _guardrail("checked-request", "request", service.url + "/words"),
                _guardrail("checked-answer", "response", service.url + "/words"),
            ],
        },
    }
    with SidecarProcess(snapshot) as process:
        yield process


@pytest.fixture
def claude(sidecar: SidecarProcess, service: GuardrailService, fake_anthropic: Any) -> anthropic.Anthropic:
    service.reset()
    return anthropic.Anthropic(base_url=sidecar.base_url, api_key="placeholder", max_retries=0, timeout=20)


def _ask(claude: anthropic.Anthropic, route: str, text: str) -> str:
    answer = claude.messages.create(
        model=route, max_tokens=100, messages=[{"role": "user", "content": text}], extra_body=FUTURE
    )
    return "".join(block.text for block in answer.content if block.type == "text")


def _streamed(claude: anthropic.Anthropic, route: str, text: str) -> str:
    with claude.messages.stream(
        model=route, max_tokens=100, messages=[{"role": "user", "content": text}], extra_body=FUTURE
    ) as stream:
        return "".join(stream.text_stream)


def _received(fake: FakeProviderProcess) -> dict[str, Any]:
    body: dict[str, Any] = fake.requests()[-1]["json"]
    return body


def test_without_guardrails_the_apps_body_goes_out_as_sent(claude, fake_anthropic, service):
    # (the control: these routes' backend takes the pass-through)
    assert _ask(claude, "plain", "a secret and a hidden door") == "echo: a secret and a hidden door"
    assert _received(fake_anthropic)["future_field"] == FUTURE["future_field"]


def test_a_request_guardrail_that_lets_the_texts_be_keeps_the_pass_through(claude, fake_anthropic, service):
    assert _ask(claude, "checked-request", "a hidden door") == "echo: a hidden door"
    assert _received(fake_anthropic)["future_field"] == FUTURE["future_field"]
    assert service.asked("/words", "request")


@pytest.mark.parametrize("ask", [_ask, _streamed], ids=["plain", "stream"])
def test_a_request_with_replaced_texts_is_translated_and_the_provider_gets_the_replacement(
    claude, fake_anthropic, service, ask
):
    assert ask(claude, "checked-request", "my secret is 42") == "echo: my [removed] is 42"
    received = _received(fake_anthropic)
    assert received["messages"][-1]["content"] in (
        "my [removed] is 42",
        [{"type": "text", "text": "my [removed] is 42"}],
    )
    assert "secret" not in str(received)
    assert "future_field" not in received  # not the app's own body


@pytest.mark.parametrize("ask", [_ask, _streamed], ids=["plain", "stream"])
def test_when_guardrails_read_the_answer_the_app_gets_their_replacement_not_the_providers_bytes(
    claude, fake_anthropic, service, ask
):
    assert ask(claude, "checked-answer", "a hidden door") == "echo: a [removed] door"
    assert service.asked("/words", "response")
    assert "future_field" not in _received(fake_anthropic)
