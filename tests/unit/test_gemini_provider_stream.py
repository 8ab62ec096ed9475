"""The Gemini provider's stream decoder: streamGenerateContent SSE in, OpenAI chunks out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletionChunk

from proxy.providers.base import UpstreamProtocolError, Usage
from tests.unit.test_gemini_provider import MODEL, translator

# The shape of a documented `streamGenerateContent?alt=sse` body (CRLF framed, every event a full
# GenerateContentResponse carrying only the new parts, final counts on the last event).
STREAM = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "Let me"}], "role": "model"}, "index": 0}],'
    b' "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},'
    b' "modelVersion": "gemini-2.5-flash", "responseId": "resp-1"}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": " check \xc3\xa9t\xc3\xa9."}], "role": "model"},'
    b' "index": 0}], "modelVersion": "gemini-2.5-flash", "responseId": "resp-1"}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "weather", "args": {"city": "Paris"}},'
    b' "thoughtSignature": "c2ln"}], "role": "model"}, "index": 0}],'
    b' "modelVersion": "gemini-2.5-flash", "responseId": "resp-1"}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": "STOP",'
    b' "index": 0}], "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 8,'
    b' "thoughtsTokenCount": 30, "totalTokenCount": 50}, "modelVersion": "gemini-2.5-flash",'
    b' "responseId": "resp-1"}\r\n\r\n'
)


def decode(stream: bytes, step: int = 5) -> tuple[list[dict[str, Any]], Any]:
    decoder = translator().stream_decoder(model=MODEL)
    chunks = []
    for start in range(0, len(stream), step):
        chunks.extend(decoder.feed(stream[start : start + step]))
    chunks.extend(decoder.close())
    return chunks, decoder.state


def test_stream_fed_five_bytes_at_a_time_decodes_to_openai_chunks() -> None:
    chunks, state = decode(STREAM)

    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    assert parsed[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in parsed if c.choices) == "Let me check été."
    calls = [tc for c in parsed if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert len(calls) == 1
    assert calls[0].function is not None
    assert (calls[0].index, calls[0].type, calls[0].function.name) == (0, "function", "weather")
    assert json.loads(calls[0].function.arguments or "") == {"city": "Paris"}
    assert calls[0].id and calls[0].id.startswith("call_")
    assert chunks[-3]["choices"][0]["delta"]["tool_calls"][0]["extra_content"] == {
        "google": {"thought_signature": "c2ln"}
    }
    assert [c.choices[0].finish_reason for c in parsed if c.choices][-1] == "tool_calls"
    usage_chunk = parsed[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens) == (12, 38)
    assert {c.id for c in parsed} == {"chatcmpl-resp-1"}
    assert len({c.created for c in parsed}) == 1
    assert (state.done, state.finish_reason, state.response_model) == (True, "tool_calls", "gemini-2.5-flash")
    assert state.usage == Usage(input_tokens=12, output_tokens=38)


def test_stream_split_anywhere_gives_the_same_chunks() -> None:
    whole, _ = decode(STREAM, step=len(STREAM))
    split, _ = decode(STREAM, step=1)

    strip = [{k: v for k, v in c.items() if k != "created"} for c in whole]
    assert [{k: v for k, v in c.items() if k != "created"} for c in split] == strip


def test_stream_cut_before_a_finish_reason_raises_on_close() -> None:
    cut = STREAM.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    decoder = translator().stream_decoder(model=MODEL)

    assert decoder.feed(cut)
    with pytest.raises(UpstreamProtocolError, match="before a finish reason"):
        decoder.close()
    assert decoder.state.done is False


def test_stream_error_event_raises_with_the_provider_message() -> None:
    decoder = translator().stream_decoder(model=MODEL)
    event = b'data: {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}\r\n\r\n'

    with pytest.raises(UpstreamProtocolError, match="The model is overloaded"):
        decoder.feed(event)


def test_stream_with_blocked_prompt_finishes_as_content_filter() -> None:
    event = b'data: {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "responseId": "b"}\r\n\r\n'

    chunks, state = decode(event)
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert state.done is True
