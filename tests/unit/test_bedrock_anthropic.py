"""Anthropic models through Bedrock's InvokeModel, without sockets: Anthropic's body as Bedrock takes
it, the Anthropic answer read back, and the stream's base64 `chunk` events decoded."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from proxy.providers.aws_eventstream import encode_message
from proxy.providers.base import UpstreamProtocolError
from proxy.providers.bedrock_anthropic import BedrockAnthropicTranslator
from proxy.providers.bedrock_endpoint import BedrockStreamException
from proxy.providers.registry import build_translator
from proxy.snapshot import AwsKeys, BedrockSettings, Provider

MODEL = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
PROVIDER = Provider(
    name="ns.claude",
    type="bedrock",
    base_url="https://bedrock-runtime.eu-central-1.amazonaws.com",
    bedrock=BedrockSettings(
        region="eu-central-1",
        api="anthropic-messages",
        credentials=AwsKeys(access_key_id="AKIAIOSFODNN7EXAMPLE", secret_access_key="secret/key"),
    ),
)


def translator() -> BedrockAnthropicTranslator:
    built = build_translator(PROVIDER)
    assert isinstance(built, BedrockAnthropicTranslator)
    return built


def test_the_body_is_anthropics_as_bedrock_takes_it() -> None:
    request = {
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "max_tokens": 50,
        "stop": ["END"],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
    }
    upstream = translator().chat_request(request, model=MODEL, stream=True)
    assert upstream.url.endswith("/model/eu.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream")
    body = orjson.loads(upstream.body)
    assert "model" not in body and "stream" not in body
    assert body["anthropic_version"] == "bedrock-2023-05-31"
    assert body["system"] == "be brief" or body["system"] == [{"type": "text", "text": "be brief"}]
    assert (body["max_tokens"], body["stop_sequences"]) == (50, ["END"])
    assert body["tools"][0]["name"] == "lookup"
    assert upstream.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/")
    plain = translator().chat_request(request, model=MODEL, stream=False)
    assert plain.url.endswith("/invoke") and plain.headers["accept"] == "application/json"


def test_the_answer_is_an_anthropic_message() -> None:
    answer = {
        "id": "msg_bdrk_01abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Hello."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": 100},
    }
    response, usage = translator().chat_response(orjson.dumps(answer))
    completion = ChatCompletion.model_validate(response)
    assert completion.choices[0].message.content == "Hello." and completion.model == "claude-sonnet-4-5-20250929"
    assert (usage.input_tokens, usage.output_tokens) == (105, 2)


def chunk(event: dict[str, Any]) -> bytes:
    raw = base64.b64encode(json.dumps(event).encode()).decode()
    headers = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, json.dumps({"bytes": raw, "p": "abc"}).encode())


EVENTS = [
    {"type": "message_start", "message": {"id": "msg_bdrk_1", "type": "message", "role": "assistant",
     "model": "claude-sonnet-4-5", "content": [], "stop_reason": None,
     "usage": {"input_tokens": 7, "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
    {"type": "message_stop", "amazon-bedrock-invocationMetrics": {"inputTokenCount": 7, "outputTokenCount": 2}},
]  # fmt: skip


@pytest.mark.parametrize("step", [1, 13, 1000])
def test_the_stream_of_base64_chunks(step: int) -> None:
    stream = b"".join(chunk(e) for e in EVENTS)
    decoder = translator().stream_decoder(model=MODEL)
    chunks = [c for i in range(0, len(stream), step) for c in decoder.feed(stream[i : i + step])]
    chunks += decoder.close()
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    assert "".join(c.choices[0].delta.content or "" for c in parsed if c.choices) == "Hello"
    assert decoder.state.finish_reason == "stop" and decoder.state.usage.output_tokens == 2


def test_pretty_printed_events_still_decode() -> None:
    raw = base64.b64encode(json.dumps(EVENTS[0], indent=2).encode()).decode()
    headers = {":event-type": "chunk", ":message-type": "event"}
    stream = encode_message(headers, json.dumps({"bytes": raw}).encode()) + b"".join(chunk(e) for e in EVENTS[1:])
    decoder = translator().stream_decoder(model=MODEL)
    assert (decoder.feed(stream) and decoder.close() == []) or decoder.state.done


@pytest.mark.parametrize(
    "payload", [b'{"bytes": "not base64!"}', b'{"bytes": 5}', b"[]", b'{"bytes": "' + base64.b64encode(b"{") + b'"}']
)
def test_bad_chunks_are_bad_answers(payload: bytes) -> None:
    headers = {":event-type": "chunk", ":message-type": "event"}
    with pytest.raises(UpstreamProtocolError):
        translator().stream_decoder(model=MODEL).feed(encode_message(headers, payload))


def test_throttling_in_the_stream() -> None:
    headers = {":exception-type": "throttlingException", ":message-type": "exception"}
    with pytest.raises(BedrockStreamException) as caught:
        translator().stream_decoder(model=MODEL).feed(encode_message(headers, b'{"message":"Too many tokens"}'))
    assert caught.value.status == 429
