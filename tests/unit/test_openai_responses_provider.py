"""Reading a provider's Responses API answers on the pass-through: usage (cached tokens apart), the
event stream handed on byte for byte, and what a provider may not send."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.providers.base import UpstreamErrorEvent, UpstreamProtocolError
from proxy.providers.openai_responses import ResponsesEventDecoder, responses_answer

USAGE = {"input_tokens": 40, "input_tokens_details": {"cached_tokens": 32}, "output_tokens": 5, "total_tokens": 45}


def _event(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


def test_a_whole_response_gives_its_usage_with_cached_tokens_apart() -> None:
    body = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": "gpt-4o",
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "hi"}]}],
        "usage": USAGE,
    }
    summary, usage = responses_answer(json.dumps(body).encode())
    assert (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == (40, 5, 32)
    assert summary["choices"][0]["message"]["content"] == "hi" and summary["model"] == "gpt-4o"
    for bad in ({"object": "chat.completion", "output": []}, {**body, "usage": {"input_tokens": -1}}):
        with pytest.raises(UpstreamProtocolError):
            responses_answer(json.dumps(bad).encode())


def test_events_are_handed_on_as_sent_and_the_last_one_gives_the_usage() -> None:
    events = [
        {"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1"}},
        {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": {"type": "message"}},
        {"type": "response.output_text.delta", "sequence_number": 2, "delta": "hi"},
        {"type": "response.completed", "sequence_number": 3, "response": {"model": "gpt-4o", "usage": USAGE}},
    ]
    wire = b"".join(_event(e) for e in events)
    decoder = ResponsesEventDecoder()
    chunks = decoder.feed(wire[:50]) + decoder.feed(wire[50:]) + decoder.close()
    assert b"".join(chunk.raw for chunk in chunks) == wire  # type: ignore[attr-defined]
    assert chunks[2]["choices"][0]["delta"] == {"content": "hi"}
    state = decoder.state
    assert state.done and state.response_model == "gpt-4o" and state.finish_reason == "stop"
    assert (state.usage.input_tokens, state.usage.cached_input_tokens) == (40, 32)


def test_a_stream_cut_short_or_failing_is_the_providers_failure() -> None:
    decoder = ResponsesEventDecoder()
    decoder.feed(_event({"type": "response.output_text.delta", "delta": "hi"}))
    with pytest.raises(UpstreamProtocolError, match=r"before its response\.completed"):
        decoder.close()
    with pytest.raises(UpstreamErrorEvent, match="overloaded"):
        ResponsesEventDecoder().feed(_event({"type": "error", "code": "server_error", "message": "overloaded"}))
    with pytest.raises(UpstreamProtocolError):
        ResponsesEventDecoder().feed(b"data: {not json\n\n")
