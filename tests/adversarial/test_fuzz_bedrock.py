"""The Bedrock decoders, fed documented Converse answers and ConverseStream events with any field
mistyped, missing or absurd, in frames with real CRCs (and frames mangled after their CRCs were
made, and any bytes at all), split at arbitrary byte boundaries: they return well-typed results the
front ends can render, or raise UpstreamProtocolError, never anything else."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.providers.aws_eventstream import EventStreamDecoder, encode_message
from proxy.providers.base import UpstreamProtocolError
from proxy.providers.bedrock import BedrockTranslator
from proxy.providers.bedrock_anthropic import BedrockAnthropicTranslator
from proxy.snapshot import BedrockSettings, Provider, Secret
from tests.adversarial.fuzz_strategies import ANY_JSON, COUNT, GARBAGE, NAME, cut, encoded, field, shaped
from tests.adversarial.test_fuzz_decoders import FUZZ, decode_answer, decode_stream

TRANSLATOR = BedrockTranslator(
    Provider(
        name="b",
        type="bedrock",
        base_url="https://bedrock-runtime.us-east-1.amazonaws.com",
        api_key=Secret("k"),
        bedrock=BedrockSettings(region="us-east-1"),
    )
)

INVOKE = BedrockAnthropicTranslator(
    Provider(
        name="c",
        type="bedrock",
        base_url="https://bedrock-runtime.us-east-1.amazonaws.com",
        api_key=Secret("k"),
        bedrock=BedrockSettings(region="us-east-1", api="anthropic-messages"),
    )
)
USAGE = shaped(inputTokens=COUNT, outputTokens=COUNT, totalTokens=COUNT, cacheReadInputTokens=COUNT)
STOP = st.sampled_from(["end_turn", "tool_use", "max_tokens", "stop_sequence", "guardrail_intervened"]) | NAME
BLOCK = st.one_of(
    shaped(text=st.text(max_size=10)),
    shaped(toolUse=shaped(toolUseId=NAME, name=NAME, input=st.dictionaries(NAME, COUNT, max_size=2))),
    shaped(reasoningContent=shaped(reasoningText=shaped(text=st.text(max_size=10), signature=NAME))),
    st.dictionaries(NAME, ANY_JSON, max_size=1),
)
ANSWER = shaped(
    output=shaped(message=shaped(role=st.just("assistant"), content=st.lists(BLOCK, max_size=3))),
    stopReason=STOP,
    usage=USAGE,
    metrics=shaped(latencyMs=COUNT),
)
INDEX = field(st.integers(0, 3))
EVENTS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "messageStart": shaped(role=st.just("assistant")),
    "contentBlockStart": shaped(contentBlockIndex=INDEX, start=shaped(toolUse=shaped(toolUseId=NAME, name=NAME))),
    "contentBlockDelta": shaped(
        contentBlockIndex=INDEX,
        delta=st.one_of(
            shaped(text=st.text(max_size=10)),
            shaped(toolUse=shaped(input=st.text(max_size=10))),
            shaped(reasoningContent=shaped(text=st.text(max_size=10))),
        ),
    ),
    "contentBlockStop": shaped(contentBlockIndex=INDEX),
    "messageStop": shaped(stopReason=STOP),
    "metadata": shaped(usage=USAGE),
}
HEADER_VALUE = st.one_of(st.text(max_size=20), st.binary(max_size=8), st.booleans(), st.integers(-(2**31), 2**31 - 1))


@st.composite
def frame(draw: Any) -> bytes:
    """One ConverseStream message with real CRCs: mostly a documented event, sometimes an exception
    or odd headers, and a payload that is now and then garbage."""
    kind = draw(st.sampled_from([*EVENTS, "exception", "odd"]))
    if kind == "exception":
        headers: dict[str, Any] = {":message-type": "exception", ":exception-type": draw(NAME)}
        return encode_message(headers, draw(st.one_of(st.just(b'{"message":"slow down"}'), GARBAGE)))
    if kind == "odd":
        return encode_message(draw(st.dictionaries(st.text(max_size=10), HEADER_VALUE, max_size=3)), draw(GARBAGE))
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    payload = draw(EVENTS[kind].map(encoded)) if draw(st.integers(0, 9)) else draw(GARBAGE)
    return encode_message(headers, payload)


@st.composite
def converse_stream(draw: Any) -> bytes:
    start = encode_message({":event-type": "messageStart", ":message-type": "event"}, b'{"role":"assistant"}')
    body = start + b"".join(draw(st.lists(frame(), max_size=6)))
    if draw(st.integers(0, 5)) == 0 and body:  # mangled after its CRCs were made
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1 :]
    return body


@FUZZ
@given(data=st.data(), body=converse_stream())
def test_converse_stream_decoder(data: Any, body: bytes) -> None:
    decode_stream(TRANSLATOR, data.draw(cut(body)))


@FUZZ
@given(data=st.data(), body=st.binary(max_size=400))
def test_converse_stream_decoder_on_raw_bytes(data: Any, body: bytes) -> None:
    decode_stream(TRANSLATOR, data.draw(cut(body)))


@FUZZ
@given(data=st.data(), body=st.binary(max_size=200), limit=st.integers(0, 300))
def test_event_stream_framing_on_any_bytes(data: Any, body: bytes, limit: int) -> None:
    decoder = EventStreamDecoder(max_message_bytes=limit)
    try:
        for piece in data.draw(cut(body)):
            for message in decoder.feed(piece):
                assert type(message.payload) is bytes and type(message.headers) is dict
        decoder.close()
    except UpstreamProtocolError:
        pass


@FUZZ
@given(body=st.one_of(*[ANSWER.map(encoded)] * 4, GARBAGE))
def test_converse_response(body: bytes) -> None:
    decode_answer(TRANSLATOR, body)


@FUZZ
@given(body=st.one_of(st.binary(max_size=200), ANY_JSON.map(encoded)))
@pytest.mark.parametrize("status", [400, 429, 500])
def test_error_messages_are_short_writable_strings(status: int, body: bytes) -> None:
    message = TRANSLATOR.error_message(status, body)
    assert type(message) is str and len(message) <= 500
    json.dumps(message)
    message.encode("utf-8")


@st.composite
def invoke_stream(draw: Any) -> bytes:
    """InvokeModelWithResponseStream: `chunk` messages whose base64 bytes are any JSON, or not base64."""
    frames = []
    for event in draw(st.lists(st.one_of(ANY_JSON.map(encoded), GARBAGE), max_size=5)):
        raw = base64.b64encode(event).decode() if draw(st.integers(0, 5)) else draw(st.text(max_size=8))
        payload = json.dumps({"bytes": raw}).encode() if draw(st.integers(0, 5)) else draw(GARBAGE)
        frames.append(encode_message({":event-type": "chunk", ":message-type": "event"}, payload))
    return b"".join(frames)


@FUZZ
@given(data=st.data(), body=st.one_of(invoke_stream(), st.binary(max_size=300)))
def test_invoke_stream_decoder(data: Any, body: bytes) -> None:
    decode_stream(INVOKE, data.draw(cut(body)))
