"""Guardrail callouts in a real sidecar process, driven by the official SDKs.

The snapshot carries compiled guardrails (as the controller pushes them), each route asking a
different one of a real guardrail service on loopback (tests/integration/guardrail_service.py):
allow, deny by words, replace, slow (past its timeout) and down (a closed port) in both failure
modes, and an OpenAI-moderations-shaped one. The provider is the fake OpenAI server, which echoes
the last user text ("echo: ...") word by word in streams.
"""

from __future__ import annotations

import urllib.request
from typing import Any

import anthropic
import openai
import pytest

from tests.fakes.server import DEFAULT_KEYS
from tests.integration.guardrail_service import GuardrailService
from tests.integration.sidecar import SidecarProcess, free_port

POLICY = "ModelPolicy team-a/safety"


def _guardrail(name: str, url: str, route: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "policy": POLICY, "url": url, "routes": [route], **extra}


def guardrail_snapshot(openai_url: str, service: str) -> dict[str, Any]:
    down = f"http://127.0.0.1:{free_port()}/check"  # nothing listens there
    routes = ["allowed", "words", "slow-open", "slow-closed", "down-open", "down-closed", "moderated", "plain"]
    return {
        "providers": [
            {"name": "team-a.openai", "type": "openai", "baseUrl": openai_url + "/v1", "apiKey": DEFAULT_KEYS["openai"]}
        ],
        "routes": [
            {
                "name": f"team-a/{route}",
                "model": route,
                "rules": [
                    {
                        "name": "default",
                        "retry": {"attempts": 1},
                        "backends": [{"provider": "team-a.openai", "model": "m"}],
                    }
                ],
            }
            for route in routes
        ],
        "policy": {
            "workload": "team-a/web",
            "policies": [POLICY],
            "guardrails": [
                _guardrail("allow-all", service + "/allow", "allowed"),
                _guardrail("words", service + "/words", "words", streamCheckChars=16, streamWindowChars=24),
                _guardrail("slow", service + "/slow", "slow-open", timeoutMs=150, failureMode="open"),
                _guardrail("slow", service + "/slow", "slow-closed", timeoutMs=150, failureMode="closed"),
                _guardrail("gone", down, "down-open", failureMode="open"),
                _guardrail("gone", down, "down-closed", failureMode="closed"),
                _guardrail("moderation", service + "/v1/moderations", "moderated", kind="openai-moderation"),
            ],
        },
    }


@pytest.fixture(scope="module")
def service() -> Any:
    with GuardrailService() as running:
        yield running


@pytest.fixture(scope="module")
def guarded(fake_openai_process: Any, service: GuardrailService) -> Any:
    with SidecarProcess(guardrail_snapshot(fake_openai_process.base_url, service.url)) as process:
        yield process


@pytest.fixture
def guardrails(service: GuardrailService) -> GuardrailService:
    service.reset()
    return service


@pytest.fixture
def client(guarded: SidecarProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=guarded.base_url + "/v1", api_key="placeholder", max_retries=0, timeout=20)


@pytest.fixture
def claude(guarded: SidecarProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=guarded.base_url, api_key="placeholder", max_retries=0, timeout=20)


def chat(client: openai.OpenAI, route: str, text: str) -> str:
    answer = client.chat.completions.create(model=route, messages=[{"role": "user", "content": text}])
    return answer.choices[0].message.content or ""


def streamed(client: openai.OpenAI, route: str, text: str) -> tuple[str, Exception | None]:
    """The text the app got, and the error that ended the stream (None when it ended well)."""
    got: list[str] = []
    try:
        for chunk in client.chat.completions.create(
            model=route, messages=[{"role": "user", "content": text}], stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    except openai.APIError as error:
        return "".join(got), error
    return "".join(got), None


def provider_got(fake: Any) -> list[str]:
    return [r["json"]["messages"][-1]["content"] for r in fake.requests() if r["path"].endswith("/chat/completions")]


# --- the request phase -----------------------------------------------------------------------------


def test_an_allowing_guardrail_is_asked_about_the_request_and_the_answer(client, fake_openai, guardrails):
    assert chat(client, "allowed", "hello there") == "echo: hello there"
    (asked,) = guardrails.asked("/allow", "request")
    assert asked == {
        "phase": "request",
        "texts": ["hello there"],
        "model": "allowed",
        "route": "team-a/allowed",
        "workload": "team-a/web",
    }
    assert guardrails.asked("/allow", "response")[0]["texts"] == ["echo: hello there"]


def test_a_denied_request_never_reaches_the_provider_openai(client, fake_openai, guardrails):
    with pytest.raises(openai.BadRequestError) as denied:
        chat(client, "words", "tell me blocked things")
    error = denied.value.body
    assert denied.value.status_code == 400
    assert error["type"] == "guardrail_denied" and error["code"] == "guardrail_denied"
    assert "guardrail words denied this request: mentions blocked things" in error["message"]
    assert provider_got(fake_openai) == []


def test_a_denied_request_is_an_anthropic_error_for_anthropic_apps(claude, fake_openai, guardrails):
    with pytest.raises(anthropic.BadRequestError) as denied:
        claude.messages.create(model="words", max_tokens=50, messages=[{"role": "user", "content": "blocked things"}])
    assert denied.value.status_code == 400
    assert denied.value.body["type"] == "error"
    assert "guardrail words denied this request" in denied.value.body["error"]["message"]
    assert provider_got(fake_openai) == []


def test_a_replaced_request_is_what_the_provider_gets(client, fake_openai, guardrails):
    assert chat(client, "words", "my secret is 42") == "echo: my [removed] is 42"
    assert provider_got(fake_openai) == ["my [removed] is 42"]


def test_a_slow_guardrail_failing_open_lets_the_request_on(client, fake_openai, guardrails):
    assert chat(client, "slow-open", "hi") == "echo: hi"


def test_a_slow_guardrail_failing_closed_refuses_with_503_naming_it(client, fake_openai, guardrails):
    with pytest.raises(openai.InternalServerError) as refused:
        chat(client, "slow-closed", "hi")
    assert refused.value.status_code == 503
    assert "guardrail slow could not check this request (no answer within 150 ms)" in refused.value.body["message"]
    assert refused.value.body["code"] == "guardrail_unavailable"
    assert provider_got(fake_openai) == []


def test_a_guardrail_that_is_down(client, fake_openai, guardrails):
    assert chat(client, "down-open", "hi") == "echo: hi"
    with pytest.raises(openai.InternalServerError) as refused:
        chat(client, "down-closed", "hi")
    assert refused.value.status_code == 503 and "guardrail gone" in refused.value.body["message"]


def test_an_openai_moderation_guardrail_denies_what_it_flags(client, fake_openai, guardrails):
    assert chat(client, "moderated", "a calm walk") == "echo: a calm walk"
    assert guardrails.asked("/v1/moderations")[0] == {"input": ["a calm walk"]}
    with pytest.raises(openai.BadRequestError) as denied:
        chat(client, "moderated", "some violence here")
    assert "guardrail moderation denied this request: flagged: violence" in denied.value.body["message"]


def test_routes_without_guardrails_ask_none(client, fake_openai, guardrails):
    assert chat(client, "plain", "blocked forbidden violence") == "echo: blocked forbidden violence"
    assert guardrails.received == []


# --- the response phase ----------------------------------------------------------------------------


def test_a_denied_answer_is_a_422_instead_of_the_answer(client, fake_openai, guardrails):
    with pytest.raises(openai.UnprocessableEntityError) as denied:
        chat(client, "words", "say forbidden words")
    assert denied.value.body["type"] == "guardrail_denied"
    assert "guardrail words denied this answer: mentions forbidden things" in denied.value.body["message"]


def test_a_replaced_answer_text_reaches_the_app(client, claude, fake_openai, guardrails):
    assert chat(client, "words", "a hidden door") == "echo: a [removed] door"
    assert provider_got(fake_openai) == ["a hidden door"]
    answer = claude.messages.create(model="words", max_tokens=50, messages=[{"role": "user", "content": "hidden"}])
    assert answer.content[0].text == "echo: [removed]"


def test_a_stream_the_guardrails_allow_arrives_whole_and_in_pieces(client, fake_openai, guardrails):
    text = "one two three four five six seven eight nine ten eleven twelve"
    got, error = streamed(client, "words", text)
    assert error is None and got == "echo: " + text
    windows = [asked["texts"][0] for asked in guardrails.asked("/words", "response")]
    assert len(windows) > 2  # checked as it came, never held whole
    assert all(len(window) < len(got) for window in windows)


def test_a_deny_mid_stream_cuts_it_with_an_error_event_openai(client, fake_openai, guardrails):
    text = "one two three four five six seven eight nine ten forbidden eleven twelve thirteen"
    got, error = streamed(client, "words", text)
    assert isinstance(error, openai.APIError)
    assert "guardrail words denied this answer: mentions forbidden things" in str(error)
    full = "echo: " + text
    assert full.startswith(got) and "forbidden" not in got
    assert len(got) >= len("echo: one two three")  # what was checked before the window went out
    denied = guardrails.asked("/words", "response")[-1]["texts"][0]
    assert "forbidden" in denied
    assert full.find(denied) + len(denied) > len(got)  # the denied window is what the app did not get


def test_a_deny_mid_stream_cuts_it_with_an_error_event_anthropic(claude, fake_openai, guardrails):
    text = "one two three four five six seven eight nine ten forbidden eleven twelve thirteen"
    got: list[str] = []
    with (
        pytest.raises(anthropic.APIError) as cut,
        claude.messages.stream(model="words", max_tokens=100, messages=[{"role": "user", "content": text}]) as stream,
    ):
        for piece in stream.text_stream:
            got.append(piece)
    assert "guardrail words denied this answer" in str(cut.value)
    assert ("echo: " + text).startswith("".join(got)) and "forbidden" not in "".join(got)
    assert "".join(got)


def test_a_replace_mid_stream_changes_the_text_the_app_gets(client, fake_openai, guardrails):
    got, error = streamed(client, "words", "alpha beta hidden gamma delta")
    assert error is None and got == "echo: alpha beta [removed] gamma delta"
    assert provider_got(fake_openai) == ["alpha beta hidden gamma delta"]


def test_the_sidecar_counts_guardrail_decisions(guarded, client, fake_openai, guardrails):
    chat(client, "allowed", "hello")
    with pytest.raises(openai.BadRequestError):
        chat(client, "words", "blocked")
    with urllib.request.urlopen(guarded.admin_url + "/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert 'modelway_guardrail="words"' in metrics and 'modelway_guardrail_decision="deny"' in metrics
    assert 'modelway_guardrail="allow-all"' in metrics
    assert "modelway_guardrail_duration" in metrics


def test_the_responses_api_is_guarded_too(client, fake_openai, guardrails):
    with pytest.raises(openai.BadRequestError) as denied:
        client.responses.create(model="words", input="tell me blocked things")
    assert "guardrail words denied this request" in denied.value.body["message"]
    assert provider_got(fake_openai) == []
    assert client.responses.create(model="words", input="a hidden door").output_text == "echo: a [removed] door"
