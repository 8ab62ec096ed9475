"""The Anthropic provider's stream decoder: Messages stream events in, OpenAI chunks out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from proxy.providers.anthropic_events import AnthropicStreamDecoder
from proxy.providers.base import UpstreamProtocolError
from tests.unit.test_anthropic_provider import make_translator

# The "streaming request with tool use" transcript from the Messages streaming docs
# (platform.claude.com/docs/en/build-with-claude/streaming), verbatim.
DOCUMENTED_TOOL_STREAM = rb"""event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-opus-4-6","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":","}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" let"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'s"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" check"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" the"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" weather"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" for"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" San"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" Francisco"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":","}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" CA"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":":"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" Francisc"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"o,"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" CA\""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":","}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"unit\": \"fah"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"renheit\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""  # noqa: E501


def decode(stream: bytes, step: int | None = None, model: str = "claude-opus-4-6") -> tuple[list[dict[str, Any]], Any]:
    decoder = make_translator().stream_decoder(model=model)
    step = step or len(stream)
    chunks = []
    for start in range(0, len(stream), step):
        chunks += decoder.feed(stream[start : start + step])
    chunks += decoder.close()
    return chunks, decoder.state


@pytest.mark.parametrize("step", [None, 7, 1])
def test_decodes_the_documented_tool_stream_at_any_split(step: int | None) -> None:
    chunks, state = decode(DOCUMENTED_TOOL_STREAM, step)
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    assert {c["id"] for c in chunks} == {"chatcmpl-msg_014p7gG3wDgGV9EUtLvnow3U"}
    assert len({c["created"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Okay, let's check the weather for San Francisco, CA:"
    # One chunk per text delta, chunk by chunk.
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) == 13
    calls = [call for c in chunks if c["choices"] for call in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert all(call["index"] == 0 for call in calls)
    assert len(calls) == 9  # the start, then every non-empty input_json_delta
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert json.loads(arguments) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 472, "completion_tokens": 89, "total_tokens": 561}
    assert state.done and state.finish_reason == "tool_calls" and state.response_model == "claude-opus-4-6"
    assert (state.usage.input_tokens, state.usage.output_tokens) == (472, 89)


def test_decoded_chunks_accumulate_in_the_openai_sdk() -> None:
    chunks, _ = decode(DOCUMENTED_TOOL_STREAM, 7)
    accumulator: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in chunks:
        accumulator.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    completion = accumulator.get_final_completion()
    message = completion.choices[0].message
    assert message.content == "Okay, let's check the weather for San Francisco, CA:"
    assert message.tool_calls is not None and message.tool_calls[0].function.name == "get_weather"
    assert json.loads(message.tool_calls[0].function.arguments) == {
        "location": "San Francisco, CA",
        "unit": "fahrenheit",
    }
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None and completion.usage.total_tokens == 561


def sse(event: dict[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


def start_event(**usage: int) -> dict[str, Any]:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": []}
    return {"type": "message_start", "message": {**message, "usage": usage or {"input_tokens": 5, "output_tokens": 1}}}


def test_tool_call_indices_count_tool_use_blocks_only() -> None:
    events = [
        start_event(input_tokens=10, cache_read_input_tokens=90, output_tokens=1),
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_a", "name": "a", "input": {}},
        },
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_stop", "index": 1},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_b", "name": "b", "input": {}},
        },
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"x": 1}'}},
        {"type": "content_block_stop", "index": 2},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 30},
        },
        {"type": "some_future_event"},
        {"type": "message_stop"},
    ]
    chunks, state = decode("".join(sse(e) for e in events).encode())
    calls = [call for c in chunks if c["choices"] for call in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [(call["index"], call.get("id")) for call in calls] == [(0, "toolu_a"), (0, None), (1, "toolu_b"), (1, None)]
    assert not any(c["choices"] and c["choices"][0]["delta"].get("content") for c in chunks)  # thinking is dropped
    assert chunks[-1]["usage"]["prompt_tokens"] == 100
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 90}
    assert (state.usage.input_tokens, state.usage.output_tokens) == (100, 30)


def test_error_event_raises_with_its_message() -> None:
    events = (
        sse(start_event())
        + 'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    )
    decoder = AnthropicStreamDecoder(model="m", created=0)
    with pytest.raises(UpstreamProtocolError, match="Overloaded"):
        decoder.feed(events.encode())


def test_stream_cut_before_message_stop_is_an_error() -> None:
    decoder = AnthropicStreamDecoder(model="m", created=0)
    truncated = DOCUMENTED_TOOL_STREAM[: DOCUMENTED_TOOL_STREAM.index(b"event: message_stop")]
    decoder.feed(truncated)
    assert decoder.state.finish_reason == "tool_calls" and not decoder.state.done
    with pytest.raises(UpstreamProtocolError, match="message_stop"):
        decoder.close()


@pytest.mark.parametrize(
    "events",
    [
        [{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}],
        [start_event(), {"type": "content_block_delta", "index": 3, "delta": {"type": "text_delta", "text": "x"}}],
        [
            start_event(),
            {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "input": {}}},
        ],
    ],
)
def test_out_of_order_or_garbage_events_are_protocol_errors(events: list[dict[str, Any]]) -> None:
    decoder = AnthropicStreamDecoder(model="m", created=0)
    with pytest.raises(UpstreamProtocolError):
        decoder.feed("".join(sse(e) for e in events).encode())


def test_crlf_line_endings() -> None:
    chunks, state = decode(DOCUMENTED_TOOL_STREAM.replace(b"\n", b"\r\n"), 5)
    assert state.done and chunks[-1]["usage"]["completion_tokens"] == 89
