"""The Anthropic Messages front end, output side: OpenAI completions rendered as
Anthropic messages, error bodies, the streaming encoder, and the official `anthropic`
SDK driven against the front end's bytes through an in-memory transport (no sockets).
Request parsing is in test_anthropic_frontend.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
import pytest

from proxy.errors import ApiError
from proxy.providers.anthropic import AnthropicTranslator
from proxy.providers.anthropic_events import AnthropicStreamDecoder
from proxy.snapshot import Provider
from proxy.sse import SseParser
from tests.unit.anthropic_frontend_common import FRONTEND, PNG, WEATHER_TOOL
from tests.unit.test_anthropic_provider_stream import DOCUMENTED_TOOL_STREAM

# --- response --------------------------------------------------------------------------------

OPENAI_COMPLETION = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Let me look that up.",
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_abc123",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                    },
                    {"id": "toolu_kept", "type": "function", "function": {"name": "now", "arguments": ""}},
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024},
    },
}


def test_render_chat() -> None:
    message = FRONTEND.render_chat(OPENAI_COMPLETION)
    anthropic.types.Message.model_validate(message)
    assert message == {
        "id": "msg_chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look that up."},
            {"type": "tool_use", "id": "toolu_call_abc123", "name": "get_weather", "input": {"location": "Paris"}},
            {"type": "tool_use", "id": "toolu_kept", "name": "now", "input": {}},
        ],
        "model": "gpt-4o-2024-08-06",
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 93,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 1024,
            "output_tokens": 46,
        },
    }


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_render_stop_reasons(finish_reason: Any, stop_reason: str) -> None:
    choice = {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": finish_reason}
    assert FRONTEND.render_chat({**OPENAI_COMPLETION, "choices": [choice]})["stop_reason"] == stop_reason


def test_render_gives_back_the_anthropic_message_id() -> None:
    response = {**OPENAI_COMPLETION, "id": "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL"}
    assert FRONTEND.render_chat(response)["id"] == "msg_01XFDUDYJgAACzvnptvVoYEL"


def test_render_refuses_tool_arguments_that_are_not_an_object() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": None, "tool_calls": [call]},
        "finish_reason": "tool_calls",
    }
    with pytest.raises(ApiError) as err:
        FRONTEND.render_chat({**OPENAI_COMPLETION, "choices": [choice]})
    assert err.value.status == 502 and "not a JSON object" in err.value.message


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_body(status: int, kind: str) -> None:
    assert FRONTEND.error_body(ApiError(status, "nope")) == {
        "type": "error",
        "error": {"type": kind, "message": "nope"},
    }


# --- streaming -------------------------------------------------------------------------------


def openai_chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}],
    }
    return {**chunk, **extra}


def tool_delta(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        call.update(id=call_id, type="function")
        call["function"]["name"] = name
    return {"tool_calls": [call]}


# An OpenAI stream as the API sends it with stream_options.include_usage: text, two tool calls, usage last.
OPENAI_STREAM = [
    openai_chunk({"role": "assistant", "content": "", "refusal": None}),
    openai_chunk({"content": "Checking"}),
    openai_chunk({"content": " both."}),
    openai_chunk(tool_delta(0, "", "call_1", "get_weather")),
    openai_chunk(tool_delta(0, '{"locat')),
    openai_chunk(tool_delta(0, 'ion": "Paris"}')),
    openai_chunk(tool_delta(1, '{"location": "Rome"}', "call_2", "get_weather")),
    openai_chunk({}, "tool_calls"),
    {**openai_chunk(), "choices": [], "usage": {"prompt_tokens": 120, "completion_tokens": 33, "total_tokens": 153}},
]


def encode(chunks: list[dict[str, Any]]) -> bytes:
    encoder = FRONTEND.stream_encoder(include_usage=False)
    return b"".join(encoder.encode(chunk) for chunk in chunks) + encoder.finish()


def events_of(stream: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    parser = SseParser()
    return [(e.event, json.loads(e.data)) for e in parser.feed(stream) + parser.close()]


def test_stream_encoding() -> None:
    events = events_of(encode(OPENAI_STREAM))
    assert all(name == data["type"] for name, data in events)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert (start["id"], start["model"], start["usage"]) == (
        "msg_chatcmpl-123",
        "gpt-4o-mini",
        {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0},
    )
    assert events[5][1] == {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_call_1", "name": "get_weather", "input": {}},
    }
    assert events[7][1]["delta"] == {"type": "input_json_delta", "partial_json": 'ion": "Paris"}'}
    assert events[9][1]["index"] == 2
    assert events[12][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {
            "input_tokens": 120,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 33,
        },
    }


def test_stream_encoder_error_event() -> None:
    encoder = FRONTEND.stream_encoder(include_usage=True)
    encoder.encode(openai_chunk({"content": "partial"}))
    assert events_of(encoder.error(ApiError(529, "Overloaded"))) == [
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    ]


def test_round_trip_through_the_provider_decoder() -> None:
    """Encode with the front end, decode with the provider: text, tool calls and usage survive."""
    stream = encode(OPENAI_STREAM)
    decoder = AnthropicStreamDecoder(model="m", created=0)
    chunks = [c for i in range(0, len(stream), 7) for c in decoder.feed(stream[i : i + 7])] + decoder.close()
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == "Checking both."
    calls: dict[int, dict[str, str]] = {}
    for call in (call for d in deltas for call in d.get("tool_calls", [])):
        entry = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
        entry["id"] += call.get("id", "")
        entry["name"] += call.get("function", {}).get("name", "")
        entry["arguments"] += call["function"]["arguments"]
    assert calls == {
        0: {"id": "toolu_call_1", "name": "get_weather", "arguments": '{"location": "Paris"}'},
        1: {"id": "toolu_call_2", "name": "get_weather", "arguments": '{"location": "Rome"}'},
    }
    assert decoder.state.finish_reason == "tool_calls"
    assert chunks[-1]["usage"] == {"prompt_tokens": 120, "completion_tokens": 33, "total_tokens": 153}


# --- the official Anthropic SDK against the front end's bytes --------------------------------


def sdk_client(handler: Callable[[httpx2.Request], httpx2.Response]) -> anthropic.Anthropic:
    transport = httpx2.MockTransport(handler)
    return anthropic.Anthropic(
        api_key="placeholder",
        base_url="http://sidecar.test",
        max_retries=0,
        http_client=httpx2.Client(transport=transport),
    )


def in_pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def streaming_sidecar(
    chunks: list[dict[str, Any]], seen: list[dict[str, Any]]
) -> Callable[[httpx2.Request], httpx2.Response]:
    """A fake sidecar: parse what the SDK sent, answer with the encoder's bytes, 7 bytes at a time."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(FRONTEND.parse_chat(json.loads(request.content)).request)
        stream = encode(chunks)
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=in_pieces(stream, 7))

    return handler


def test_sdk_stream_accumulates_the_encoded_events() -> None:
    seen: list[dict[str, Any]] = []
    client = sdk_client(streaming_sidecar(OPENAI_STREAM, seen))
    with client.messages.stream(
        model="claude-route",
        max_tokens=256,
        system="Be brief.",
        messages=[{"role": "user", "content": "Weather in Paris and Rome?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "auto"},
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Checking both."
    assert final.id == "msg_chatcmpl-123"
    assert final.stop_reason == "tool_use"
    assert [block.type for block in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[0].text == "Checking both."  # type: ignore[union-attr]
    tool_uses = [block for block in final.content if block.type == "tool_use"]
    assert [(t.id, t.name, t.input) for t in tool_uses] == [
        ("toolu_call_1", "get_weather", {"location": "Paris"}),
        ("toolu_call_2", "get_weather", {"location": "Rome"}),
    ]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (120, 33)
    # And the request the SDK sent parsed into the internal form.
    assert seen[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert seen[0]["tool_choice"] == "auto" and seen[0]["stream"] is True


def test_sdk_stream_from_an_anthropic_upstream_through_the_internal_form() -> None:
    """Anthropic upstream -> provider decoder -> front end encoder -> SDK: the documented stream survives."""
    decoder = AnthropicStreamDecoder(model="claude-opus-4-6", created=0)
    chunks = decoder.feed(DOCUMENTED_TOOL_STREAM) + decoder.close()
    client = sdk_client(streaming_sidecar(chunks, []))
    with client.messages.stream(model="c", max_tokens=9, messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = stream.get_final_message()
    assert final.id == "msg_014p7gG3wDgGV9EUtLvnow3U"
    assert final.model == "claude-opus-4-6"
    assert final.content[0].text == "Okay, let's check the weather for San Francisco, CA:"  # type: ignore[union-attr]
    tool = final.content[1]
    assert tool.type == "tool_use"
    assert (tool.id, tool.name, tool.input) == (
        "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "get_weather",
        {"location": "San Francisco, CA", "unit": "fahrenheit"},
    )
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (472, 89)


def test_sdk_stream_error_event_raises() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        encoder = FRONTEND.stream_encoder(include_usage=True)
        body = encoder.encode(openai_chunk({"content": "Hel"})) + encoder.error(ApiError(529, "Overloaded"))
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    client = sdk_client(handler)
    messages: Any = [{"role": "user", "content": "hi"}]
    with (
        pytest.raises(anthropic.APIStatusError, match="Overloaded"),
        client.messages.stream(model="c", max_tokens=9, messages=messages) as stream,
    ):
        stream.get_final_message()


def test_sdk_reads_rendered_messages_and_errors() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        if body["model"] == "limited":
            return httpx2.Response(429, json=FRONTEND.error_body(ApiError(429, "slow down")))
        return httpx2.Response(200, json=FRONTEND.render_chat(OPENAI_COMPLETION))

    client = sdk_client(handler)
    message = client.messages.create(model="c", max_tokens=9, messages=[{"role": "user", "content": "hi"}])
    assert message.stop_reason == "tool_use"
    assert message.content[1].input == {"location": "Paris"}  # type: ignore[union-attr]
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (
        93,
        1024,
        46,
    )
    with pytest.raises(anthropic.RateLimitError) as err:
        client.messages.create(model="limited", max_tokens=9, messages=[{"role": "user", "content": "hi"}])
    assert err.value.body == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}


def test_sdk_request_round_trips_to_an_anthropic_upstream() -> None:
    """What an SDK sends, parsed and re-translated for an Anthropic provider, says the same thing."""
    sent: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        return httpx2.Response(200, json=FRONTEND.render_chat(OPENAI_COMPLETION))

    messages: list[Any] = [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "text", "text": "Where?"},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "text", "text": "And so?"},
            ],
        },
    ]
    sdk_client(handler).messages.create(
        model="claude-route",
        max_tokens=300,
        system=[{"type": "text", "text": "Be brief."}],
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        stop_sequences=["END"],
        metadata={"user_id": "u-7"},
    )
    internal = FRONTEND.parse_chat(sent[0]).request
    provider = Provider(name="claude", type="anthropic", base_url="https://api.anthropic.com")
    upstream = json.loads(
        AnthropicTranslator(provider).chat_request(internal, model="claude-sonnet-4-5", stream=False).body
    )
    original = sent[0]
    assert upstream["model"] == "claude-sonnet-4-5"
    for field in ("max_tokens", "tools", "tool_choice", "stop_sequences", "metadata"):
        assert upstream[field] == original[field], field
    assert upstream["system"] == "Be brief."
    assert upstream["messages"] == [
        {"role": "user", "content": messages[0]["content"]},
        {"role": "assistant", "content": messages[1]["content"]},
        {"role": "user", "content": messages[2]["content"]},
    ]


def test_tool_calls_with_a_stop_finish_still_read_as_tool_use() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": None, "tool_calls": [call]},
        "finish_reason": "stop",
    }
    assert FRONTEND.render_chat({**OPENAI_COMPLETION, "choices": [choice]})["stop_reason"] == "tool_use"


def test_an_empty_stream_still_ends_as_a_valid_message() -> None:
    client = sdk_client(streaming_sidecar([], []))
    with client.messages.stream(model="c", max_tokens=9, messages=[{"role": "user", "content": "hi"}]) as stream:
        final = stream.get_final_message()
    assert (final.content, final.stop_reason, final.usage.output_tokens) == ([], "end_turn", 0)
