"""Cache writes in the internal usage: an Anthropic answer's `cache_creation_input_tokens` reach the
Anthropic front end as such, while the OpenAI front end's usage stays as OpenAI documents it (the
whole prompt in `prompt_tokens`, cache reads in `prompt_tokens_details.cached_tokens`, no other key)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import orjson
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from proxy.frontends.anthropic_messages import AnthropicFrontend
from proxy.frontends.openai_chat import OpenAIFrontend
from proxy.providers.base import CACHE_WRITE_TOKENS
from tests.unit.test_anthropic_provider import make_translator

USAGE = {"input_tokens": 12, "cache_creation_input_tokens": 1024, "cache_read_input_tokens": 300, "output_tokens": 7}
MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "Hi."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": USAGE,
}
OPENAI_USAGE = {
    "prompt_tokens": 12 + 1024 + 300,
    "completion_tokens": 7,
    "total_tokens": 12 + 1024 + 300 + 7,
    "prompt_tokens_details": {"cached_tokens": 300},
}


def _events(*events: dict[str, Any]) -> bytes:
    return b"".join(b"event: %s\ndata: %s\n\n" % (e["type"].encode(), orjson.dumps(e)) for e in events)


STREAM = _events(
    {
        "type": "message_start",
        "message": {**MESSAGE, "content": [], "stop_reason": None, "usage": {**USAGE, "output_tokens": 1}},
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi."}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 7},
    },
    {"type": "message_stop"},
)


def _decoded_stream() -> list[dict[str, Any]]:
    decoder = make_translator().stream_decoder(model="claude-sonnet-4-5")
    return decoder.feed(STREAM) + decoder.close()


def test_the_openai_front_end_gives_the_documented_usage_whole_and_streamed() -> None:
    response, usage = make_translator().chat_response(json.dumps(MESSAGE).encode())
    assert (usage.input_tokens, usage.cached_input_tokens, usage.cache_write_input_tokens) == (1336, 300, 1024)
    rendered = OpenAIFrontend().render_chat(response)
    assert rendered["usage"] == OPENAI_USAGE
    ChatCompletion.model_validate(rendered)
    assert response["usage"][CACHE_WRITE_TOKENS] == 1024  # the internal answer keeps it, for the Anthropic front end
    encoder = OpenAIFrontend().stream_encoder(include_usage=True)
    sent = b"".join(encoder.encode(chunk) for chunk in _decoded_stream())
    assert CACHE_WRITE_TOKENS.encode() not in sent
    last = json.loads(sent.split(b"\n\n")[-2].removeprefix(b"data: "))
    assert last["usage"] == OPENAI_USAGE
    ChatCompletionChunk.model_validate(last)


def test_the_anthropic_front_end_gives_the_counts_as_anthropic_did() -> None:
    response, _ = make_translator().chat_response(json.dumps(MESSAGE).encode())
    message = AnthropicFrontend().render_chat(response)
    anthropic.types.Message.model_validate(message)
    assert message["usage"] == USAGE
    encoder = AnthropicFrontend().stream_encoder(include_usage=True)
    sent = b"".join(encoder.encode(chunk) for chunk in _decoded_stream()) + encoder.finish()
    events = [json.loads(block.split(b"data: ", 1)[1]) for block in sent.split(b"\n\n") if block]
    assert events[0]["message"]["usage"] == {key: 0 for key in USAGE}  # not known yet on the internal side
    [delta] = [event for event in events if event["type"] == "message_delta"]
    assert delta["usage"] == USAGE
