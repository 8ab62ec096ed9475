"""Fuzzing both inbound APIs: whatever JSON an app sends, the answer is a 4xx error or a request
that a provider can be sent, never an exception.

Pure part: each body goes through the front end's parse and then every translator's request
building (openai, azure-openai, anthropic, gemini, streaming and not), plus content capture
(which must never fail a request). Process part: a smaller run through the real sidecar.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.errors import ApiError
from proxy.frontends.anthropic_messages import AnthropicFrontend
from proxy.frontends.openai_chat import OpenAIFrontend
from proxy.frontends.openai_responses import ResponsesFrontend
from proxy.providers.base import UnsupportedOperation, UpstreamRequest
from proxy.providers.registry import build_translator
from proxy.request.count_tokens import TokenCounter, parse_count_tokens
from proxy.snapshot import Provider, Secret
from proxy.telemetry.content import content_attributes
from shared.scrub import Scrubber
from tests.adversarial.inbound_helpers import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_EMBEDDINGS,
    OPENAI_RESPONSES,
    json_values,
    mutated,
)
from tests.integration.sidecar import SidecarProcess
from tests.integration.snapshots import build_snapshot

# FUZZ_EXAMPLES / FUZZ_RANDOM=1 for a longer, randomised run by hand.
PURE = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TRANSLATORS = {
    kind: build_translator(
        Provider(
            name=kind.replace("-", ""),
            type=kind,
            base_url="https://p.test/v1",
            api_key=Secret("sk-test-0123456789"),
            api_version="2024-10-21",
        )
    )
    for kind in ("openai", "azure-openai", "anthropic", "gemini")
}
OPENAI, ANTHROPIC = OpenAIFrontend(), AnthropicFrontend()


def _refused(error: ApiError) -> None:
    assert 400 <= error.status < 500, error
    assert error.message and len(error.message) < 1000


def _upstream_ok(request: Any) -> None:
    assert isinstance(request, UpstreamRequest)
    assert isinstance(orjson.loads(request.body), dict)


def _through_translators(internal: dict[str, Any], stream: bool) -> int:
    built = 0
    for translator in TRANSLATORS.values():
        try:
            request = translator.chat_request(internal, model="up-model", stream=stream)
        except ApiError as error:
            _refused(error)
        else:
            _upstream_ok(request)
            built += 1
    return built


def _capture_never_fails(request: Any) -> None:
    attributes = content_attributes(request=request, response=None, scrub=Scrubber(["sk-test-0123456789"]))
    assert all(isinstance(v, str) for v in attributes.values())


def _chat(frontend: Any, body: Any) -> None:
    _capture_never_fails(body)  # capture sees the request as parsed, but must survive anything
    try:
        parsed = frontend.parse_chat(body)
    except ApiError as error:
        _refused(error)
        return
    _capture_never_fails(parsed.request)
    _through_translators(parsed.request, parsed.stream)


@PURE
@given(mutated(OPENAI_CHAT))
def test_openai_chat_bodies_give_4xx_or_a_provider_request(body: Any) -> None:
    _chat(OPENAI, body)


@PURE
@given(mutated(ANTHROPIC_MESSAGES))
def test_anthropic_messages_bodies_give_4xx_or_a_provider_request(body: Any) -> None:
    _chat(ANTHROPIC, body)


@PURE
@given(mutated(OPENAI_RESPONSES))
def test_openai_responses_bodies_give_4xx_or_a_provider_request(body: Any) -> None:
    _chat(ResponsesFrontend(), body)


COUNT_TOKENS = [{k: v for k, v in body.items() if k not in ("max_tokens", "stream")} for body in ANTHROPIC_MESSAGES]


@PURE
@given(mutated(COUNT_TOKENS))
def test_count_tokens_bodies_give_4xx_or_a_provider_request(body: Any) -> None:
    try:
        parsed = parse_count_tokens(body)
    except ApiError as error:
        _refused(error)
        return
    for translator in TRANSLATORS.values():
        if isinstance(translator, TokenCounter):
            try:
                _upstream_ok(translator.count_tokens_request(parsed.request, model="up-model"))
            except ApiError as error:
                _refused(error)


@PURE
@given(json_values)
def test_any_json_as_a_body_gives_4xx(body: Any) -> None:
    _chat(OPENAI, body)
    _chat(ANTHROPIC, body)
    _chat(ResponsesFrontend(), body)
    try:
        OPENAI.parse_embeddings(body)
    except ApiError as error:
        _refused(error)


@PURE
@given(mutated(OPENAI_EMBEDDINGS))
def test_openai_embeddings_bodies_give_4xx_or_a_provider_request(body: Any) -> None:
    try:
        _model, parsed = OPENAI.parse_embeddings(body)
    except ApiError as error:
        _refused(error)
        return
    for translator in TRANSLATORS.values():
        try:
            _upstream_ok(translator.embeddings_request(parsed, model="up-model"))
        except UnsupportedOperation:  # Anthropic has no embeddings: the relay answers that
            pass
        except ApiError as error:
            _refused(error)


def test_the_bases_themselves_go_through() -> None:
    """The fuzzer starts from requests every translator takes, so mutations are one field away."""
    for body in OPENAI_CHAT:
        parsed = OPENAI.parse_chat(body)
        assert _through_translators(parsed.request, parsed.stream) >= 2  # openai and azure at least
    for body in ANTHROPIC_MESSAGES:
        parsed = ANTHROPIC.parse_chat(body)
        assert _through_translators(parsed.request, parsed.stream) == 4
    for body in OPENAI_RESPONSES:
        parsed = ResponsesFrontend().parse_chat(body)
        assert _through_translators(parsed.request, parsed.stream) >= 2
    for body in COUNT_TOKENS:
        parsed = parse_count_tokens(body)
        assert isinstance(TRANSLATORS["anthropic"], TokenCounter)
        _upstream_ok(TRANSLATORS["anthropic"].count_tokens_request(parsed.request, model="up-model"))


@PURE
@given(mutated(OPENAI_CHAT))
def test_translators_alone_refuse_what_they_cannot_send(body: Any) -> None:
    """Defence in depth: a translator given an unchecked body answers 4xx too, never crashes."""
    if isinstance(body, dict):
        _through_translators(body, stream=bool(body.get("stream")))


# --- through the real sidecar ---------------------------------------------------------------------------

PROCESS = settings(
    max_examples=int(os.environ.get("FUZZ_PROCESS_EXAMPLES", "80")),
    deadline=None,
    derandomize=not os.environ.get("FUZZ_RANDOM"),
    suppress_health_check=list(HealthCheck),
)
ENDPOINTS = {
    "/v1/chat/completions": OPENAI_CHAT,
    "/v1/messages": ANTHROPIC_MESSAGES,
    "/v1/embeddings": OPENAI_EMBEDDINGS,
    "/v1/responses": OPENAI_RESPONSES,
    "/v1/messages/count_tokens": COUNT_TOKENS,
}
ROUTES = {
    "/v1/chat/completions": ["gpt", "azure", "claude", "gemini"],
    "/v1/messages": ["gpt", "claude", "gemini"],
    "/v1/embeddings": ["embed", "embed-gemini", "embed-claude"],
    "/v1/responses": ["gpt", "azure", "claude", "gemini"],
    "/v1/messages/count_tokens": ["gpt", "claude", "gemini"],
}


@pytest.fixture(scope="module")
def sidecar(fake_openai_process: Any, fake_anthropic_process: Any, fake_gemini_process: Any) -> Iterator[Any]:
    snapshot = build_snapshot(
        fake_openai_process.base_url, fake_anthropic_process.base_url, fake_gemini_process.base_url
    )
    with SidecarProcess(snapshot) as process:
        yield process


@st.composite
def routed(draw: st.DrawFn, path: str) -> Any:
    body = draw(mutated(ENDPOINTS[path]))
    if isinstance(body, dict) and body.get("model") == "m":
        body["model"] = draw(st.sampled_from(ROUTES[path]))
    return body


def _answer_is_json_and_not_a_500(sidecar: Any, path: str, body: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.port, timeout=20)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers={"content-type": "application/json"})
        resp = conn.getresponse()
        data, content_type = resp.read(), resp.getheader("content-type") or ""
    finally:
        conn.close()
    assert resp.status < 500 or resp.status in (502, 504), (resp.status, data[:500])
    if resp.status == 200 and content_type.startswith("text/event-stream"):
        return
    assert content_type.startswith("application/json"), (resp.status, content_type, data[:300])
    answer = json.loads(data)
    if resp.status >= 400:
        assert "error" in answer, answer


@PROCESS
@given(routed("/v1/chat/completions"))
def test_sidecar_openai_chat_fuzz(sidecar: Any, body: Any) -> None:
    _answer_is_json_and_not_a_500(sidecar, "/v1/chat/completions", body)


@PROCESS
@given(routed("/v1/messages"))
def test_sidecar_anthropic_messages_fuzz(sidecar: Any, body: Any) -> None:
    _answer_is_json_and_not_a_500(sidecar, "/v1/messages", body)


@PROCESS
@given(routed("/v1/embeddings"))
def test_sidecar_embeddings_fuzz(sidecar: Any, body: Any) -> None:
    _answer_is_json_and_not_a_500(sidecar, "/v1/embeddings", body)


@PROCESS
@given(routed("/v1/responses"))
def test_sidecar_openai_responses_fuzz(sidecar: Any, body: Any) -> None:
    _answer_is_json_and_not_a_500(sidecar, "/v1/responses", body)


@PROCESS
@given(routed("/v1/messages/count_tokens"))
def test_sidecar_count_tokens_fuzz(sidecar: Any, body: Any) -> None:
    _answer_is_json_and_not_a_500(sidecar, "/v1/messages/count_tokens", body)
