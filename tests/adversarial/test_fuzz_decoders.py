"""Every provider decoder, fed documented answers with any field mistyped, missing or absurd, and
garbage, split at arbitrary byte boundaries: it returns well-typed results or raises
UpstreamProtocolError, never anything else; and what it returns, the front ends can render."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.errors import ApiError
from proxy.frontends.anthropic_messages import AnthropicFrontend
from proxy.frontends.openai_chat import OpenAIFrontend
from proxy.frontends.openai_responses import ResponsesFrontend
from proxy.providers.anthropic import AnthropicTranslator
from proxy.providers.base import UpstreamProtocolError, Usage
from proxy.providers.gemini import GeminiTranslator
from proxy.providers.openai import OpenAITranslator
from proxy.snapshot import Provider, parse_struct
from proxy.telemetry.content import StreamCapture
from tests.adversarial.fuzz_strategies import (
    ANTHROPIC_MESSAGE,
    GARBAGE,
    GEMINI_EMBEDDINGS,
    GEMINI_RESPONSE,
    OPENAI_CHUNK,
    OPENAI_COMPLETION,
    OPENAI_EMBEDDINGS,
    anthropic_stream_events,
    cut,
    encoded,
    sse_body,
    with_garbage,
)

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_TOKENS = 2**31 - 1


def _translator(kind: str) -> Any:
    base = {
        "openai": "https://api.openai.com/v1",
        "anthropic": "https://api.anthropic.com",
        "gemini": "https://generativelanguage.googleapis.com",
    }[kind]
    provider = parse_struct(Provider, {"name": kind, "type": kind, "baseUrl": base, "apiKey": "k"})
    return {"openai": OpenAITranslator, "anthropic": AnthropicTranslator, "gemini": GeminiTranslator}[kind](provider)


TRANSLATORS = {kind: _translator(kind) for kind in ("openai", "anthropic", "gemini")}


# --- what "well-typed" means, written apart from proxy.providers.checks ------------------------


def _opt(value: Any, kind: type) -> bool:
    return value is None or (type(value) is kind and not isinstance(value, bool))


def _short(value: Any) -> bool:
    return value is None or (type(value) is str and len(value) <= 512)


def _count(value: Any) -> bool:
    return value is None or (type(value) is int and 0 <= value <= MAX_TOKENS)


def assert_usage(usage: Usage) -> None:
    assert _count(usage.input_tokens) and _count(usage.output_tokens), usage


def assert_openai_usage(usage: Any) -> None:
    if usage is None:
        return
    assert type(usage) is dict
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert _count(usage.get(key)), usage


def assert_message(message: Any, *, streamed: bool) -> None:
    if message is None:
        return
    assert type(message) is dict, message
    assert _short(message.get("role"))
    content = message.get("content")
    if type(content) is list:
        assert all(type(p) is dict and _opt(p.get("text"), str) for p in content)
    else:
        assert _opt(content, str), content
    assert _opt(message.get("refusal"), str)
    calls = message.get("tool_calls")
    assert calls is None or type(calls) is list
    for call in calls or []:
        assert type(call) is dict and _short(call.get("id")), call
        if streamed:
            assert _opt(call.get("index"), int)
        function = call.get("function")
        assert function is None or (
            type(function) is dict and _short(function.get("name")) and _opt(function.get("arguments"), str)
        ), call


def assert_chunk(chunk: Any) -> None:
    assert isinstance(chunk, dict), chunk
    assert _short(chunk.get("id")) and _short(chunk.get("model")), chunk
    assert type(chunk.get("choices")) is list, chunk
    for choice in chunk["choices"]:
        assert type(choice) is dict and _opt(choice.get("index"), int) and _short(choice.get("finish_reason"))
        assert_message(choice.get("delta"), streamed=True)
    assert_openai_usage(chunk.get("usage"))
    json.dumps(chunk)  # what a front end may write back


def assert_completion(data: Any) -> None:
    assert type(data) is dict and type(data.get("choices")) is list, data
    assert _short(data.get("id")) and _short(data.get("model"))
    for choice in data["choices"]:
        assert type(choice) is dict and _opt(choice.get("index"), int) and _short(choice.get("finish_reason"))
        assert_message(choice.get("message"), streamed=False)
    assert_openai_usage(data.get("usage"))
    json.dumps(data)


def render_completion(data: dict[str, Any]) -> None:
    """Every front end renders it (the Anthropic one may refuse tool arguments that are not an
    object: a 502 in its shape, which is fine)."""
    OpenAIFrontend().render_chat(data)
    json.dumps(ResponsesFrontend().render_chat(data))
    try:
        json.dumps(AnthropicFrontend().render_chat(data))
    except ApiError as error:
        assert error.status == 502


def encode_stream(chunks: list[Any]) -> None:
    """Every front end's stream encoder (and content capture's) takes the chunks."""
    for frontend in (OpenAIFrontend(), AnthropicFrontend(), ResponsesFrontend()):
        for include_usage in (False, True):
            encoder = StreamCapture(frontend, on_done=lambda _: None).stream_encoder(include_usage=include_usage)
            for chunk in chunks:
                encoder.encode(chunk)
            encoder.finish()


def run_stream(kind: str, pieces: list[bytes]) -> None:
    decode_stream(TRANSLATORS[kind], pieces)


def decode_stream(translator: Any, pieces: list[bytes]) -> None:
    """`translator`'s stream decoder fed `pieces`: well-typed chunks and state that every front end
    encodes, or UpstreamProtocolError."""
    decoder = translator.stream_decoder(model="m", max_event_bytes=4096)
    chunks: list[Any] = []
    try:
        for piece in pieces:
            chunks.extend(decoder.feed(piece))
        chunks.extend(decoder.close())
    except UpstreamProtocolError:
        pass
    for chunk in chunks:
        assert_chunk(chunk)
    state = decoder.state
    assert_usage(state.usage)
    assert _short(state.response_model) and _short(state.finish_reason), state
    encode_stream(chunks)


# --- streams --------------------------------------------------------------------------------


@FUZZ
@given(
    data=st.data(),
    events=with_garbage(st.lists(OPENAI_CHUNK.map(encoded), max_size=5)),
    done=st.booleans(),
    crlf=st.booleans(),
)
def test_openai_stream_decoder(data: Any, events: list[bytes], done: bool, crlf: bool) -> None:
    body = sse_body(events + ([b"[DONE]"] if done else []), crlf=crlf)
    run_stream("openai", data.draw(cut(body)))


@FUZZ
@given(data=st.data(), events=anthropic_stream_events(), garbage=st.lists(GARBAGE, max_size=1), crlf=st.booleans())
def test_anthropic_stream_decoder(data: Any, events: list[dict[str, Any]], garbage: list[bytes], crlf: bool) -> None:
    payloads = [encoded(e) for e in events] + garbage[: data.draw(st.integers(0, 3)) == 0]
    names = [str(e.get("type", "x"))[:20] for e in events] + ["x"] * (len(payloads) - len(events))
    run_stream("anthropic", data.draw(cut(sse_body(payloads, crlf=crlf, named=names))))


@FUZZ
@given(
    data=st.data(),
    events=with_garbage(st.lists(GEMINI_RESPONSE.map(encoded), min_size=1, max_size=4)),
    crlf=st.booleans(),
)
def test_gemini_stream_decoder(data: Any, events: list[bytes], crlf: bool) -> None:
    run_stream("gemini", data.draw(cut(sse_body(events, crlf=crlf))))


@FUZZ
@given(data=st.data(), body=st.binary(max_size=300))
@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_stream_decoders_on_raw_bytes(kind: str, data: Any, body: bytes) -> None:
    run_stream(kind, data.draw(cut(b"data: " + body + b"\n\n" + body)))


# --- whole answers --------------------------------------------------------------------------


def run_unary(kind: str, body: bytes) -> None:
    decode_answer(TRANSLATORS[kind], body)


def decode_answer(translator: Any, body: bytes) -> None:
    """`translator`'s whole-answer decoder on `body`: a completion both front ends render, or UpstreamProtocolError."""
    try:
        data, usage = translator.chat_response(body)
    except UpstreamProtocolError:
        return
    assert_completion(data)
    assert_usage(usage)
    render_completion(data)


@FUZZ
@given(body=st.one_of(*[OPENAI_COMPLETION.map(encoded)] * 4, GARBAGE))
def test_openai_chat_response(body: bytes) -> None:
    run_unary("openai", body)


@FUZZ
@given(body=st.one_of(*[ANTHROPIC_MESSAGE.map(encoded)] * 4, GARBAGE))
def test_anthropic_chat_response(body: bytes) -> None:
    run_unary("anthropic", body)


@FUZZ
@given(body=st.one_of(*[GEMINI_RESPONSE.map(encoded)] * 4, GARBAGE))
def test_gemini_chat_response(body: bytes) -> None:
    run_unary("gemini", body)


def run_embeddings(kind: str, body: bytes) -> None:
    try:
        data, usage = TRANSLATORS[kind].embeddings_response(body, model="m")
    except UpstreamProtocolError:
        return
    assert_usage(usage)
    assert type(data["data"]) is list
    for item in data["data"]:
        vector = item["embedding"]
        assert type(vector) is str or (type(vector) is list and all(type(v) in (int, float, bool) for v in vector))
    json.dumps(data)
    for encoding in ("float", "base64"):
        rendered = OpenAIFrontend().render_embeddings(json.loads(json.dumps(data)), encoding_format=encoding)
        for item in rendered["data"]:
            if encoding == "base64":
                base64.b64decode(item["embedding"], validate=True)


@FUZZ
@given(body=st.one_of(*[OPENAI_EMBEDDINGS.map(encoded)] * 4, GARBAGE))
def test_openai_embeddings_response(body: bytes) -> None:
    run_embeddings("openai", body)


@FUZZ
@given(body=st.one_of(*[GEMINI_EMBEDDINGS.map(encoded)] * 4, GARBAGE))
def test_gemini_embeddings_response(body: bytes) -> None:
    run_embeddings("gemini", body)


@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=200),
        ANY := st.recursive(
            st.none() | st.text(max_size=5) | st.integers(),
            lambda i: (
                st.lists(i, max_size=2) | st.dictionaries(st.sampled_from(["error", "message", "type"]), i, max_size=2)
            ),
        ).map(encoded),
    )
)
@example(body=b'{"error": {"message": "\\ud800 a lone surrogate"}}')
@example(body=b'[{"error": {"message": "\\udfff"}}]')
@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_error_messages_are_short_writable_strings(kind: str, body: bytes) -> None:
    message = TRANSLATORS[kind].error_message(500, body)
    assert type(message) is str and len(message) <= 500
    json.dumps(message)
    message.encode("utf-8")  # no lone surrogates: an error goes out as UTF-8 JSON
