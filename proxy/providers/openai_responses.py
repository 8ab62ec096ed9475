"""The OpenAI Responses API at a provider that serves it (OpenAI, Azure OpenAI): its answers read.

A Responses request the app sent goes to such a provider as it is (`proxy.request.passthrough`;
the URL and credentials are the translator's `responses_request`), and the provider's answer goes
back as it is. On the way it is read, as every answer is: a `response` object's `usage`
(`input_tokens`, of which `input_tokens_details.cached_tokens` were read from the prompt cache;
`output_tokens`) for limits, cost, spans and metrics; a stream's events one by one
(`ResponsesEventDecoder`), checked, each handed on with its own bytes, its usage and model read
from the last one (`response.completed`, or `response.incomplete`). A stream that reports an
error (`error`, `response.failed`) is a provider failure: before any content it falls back like
any failed attempt, after it the stream ends with an `error` event.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.errors import ApiError
from proxy.providers import checks
from proxy.providers.base import (
    ChatChunk,
    ChatResponse,
    RawEvent,
    StreamState,
    UpstreamErrorEvent,
    UpstreamProtocolError,
    Usage,
)
from proxy.providers.openai import load_json_object
from proxy.sse import DEFAULT_MAX_EVENT_BYTES, SseEventTooLarge, SseParser, encode_event, parse_block

#: The event that ends a stream well, and the chat finish reason it stands for.
_ENDS = {"response.completed": "stop", "response.incomplete": "length"}
_NOTHING: ChatChunk = {"choices": [{"index": 0, "delta": {}, "finish_reason": None}]}


def responses_usage(value: Any, what: str) -> Usage:
    """The internal Usage of a Responses `usage` object (no counts when it has none)."""
    if value is None:
        return Usage()
    if not isinstance(value, dict):
        raise UpstreamProtocolError(f"{what} usage is not an object")
    details = value.get("input_tokens_details")
    cached = checks.count(details.get("cached_tokens"), f"{what} cached_tokens") if isinstance(details, dict) else None
    return Usage(
        input_tokens=checks.count(value.get("input_tokens"), f"{what} input_tokens"),
        output_tokens=checks.count(value.get("output_tokens"), f"{what} output_tokens"),
        cached_input_tokens=cached or None,
    )


def _output_text(response: dict[str, Any]) -> str:
    output = response.get("output")
    texts = []
    for item in output if isinstance(output, list) else []:
        if isinstance(item, dict) and item.get("type") == "message" and isinstance(item.get("content"), list):
            texts += [p["text"] for p in item["content"] if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "".join(texts)


def responses_answer(body: bytes) -> tuple[ChatResponse, Usage]:
    """A whole `response` object: (its chat-form summary, for content capture and logs; its usage).
    The app gets the provider's bytes, not this summary."""
    response = load_json_object(body, "response")
    if response.get("object") != "response" or not isinstance(response.get("output"), list):
        raise UpstreamProtocolError("answer is not a Responses API response object")
    if response.get("status") == "failed":
        error = response.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        raise UpstreamProtocolError(f"provider sent a failed response: {checks.message_text(message or '')}")
    usage = responses_usage(response.get("usage"), "response")
    model = response.get("model")
    summary: ChatResponse = {
        "id": response.get("id") if isinstance(response.get("id"), str) else "",
        "object": "chat.completion",
        "model": model if isinstance(model, str) else "",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": _output_text(response)},
                "finish_reason": "length" if response.get("status") == "incomplete" else "stop",
            }
        ],
    }
    return summary, usage


class ResponsesEventDecoder:
    """A provider's Responses event stream, handed on event by event (`RawEvent`: its own bytes,
    line ends made LF), each standing for what it says as an internal chunk: text deltas as
    content, a function call's start and argument deltas as tool calls, reasoning summary deltas as
    reasoning, the final event as the finish (so the relay's first-content rule, content capture
    and usage work as for any stream)."""

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.state = StreamState()
        self._parser = SseParser(max_event_bytes=max_event_bytes)
        self._calls: dict[int, int] = {}  # output_index -> tool call index

    def feed(self, data: bytes) -> list[ChatChunk]:
        try:
            blocks = self._parser.feed_blocks(data)
        except SseEventTooLarge as exc:
            raise UpstreamProtocolError(str(exc)) from None
        return [chunk for block in blocks if (chunk := self._event(block)) is not None]

    def close(self) -> list[ChatChunk]:
        rest = self._parser.close_block()
        chunks = [chunk] if rest and (chunk := self._event(rest)) is not None else []
        if not self.state.done:
            raise UpstreamProtocolError("stream ended before its response.completed event")
        return chunks

    def _event(self, block: bytes) -> ChatChunk | None:
        newline = block.find(b"\n")
        if (
            block.startswith(b"event: ")
            and block.startswith(b"data: ", newline + 1)
            and block.find(b"\n", newline + 1) < 0
        ):
            payload: bytes | str = block[newline + 7 :]  # the common case: one event line, one data line
        else:
            event = parse_block(block)
            if event is None or not event.data:
                return None
            payload = event.data
        data = load_json_object(payload, "stream event")
        chunk = RawEvent(self._stands_for(data))
        chunk.raw = block + b"\n\n"
        return chunk

    def _stands_for(self, data: dict[str, Any]) -> ChatChunk:
        kind = data.get("type")
        if kind == "response.output_text.delta" or kind == "response.refusal.delta":
            delta = data.get("delta")
            if not isinstance(delta, str):
                raise UpstreamProtocolError(f"{kind} has no delta text")
            key = "content" if kind == "response.output_text.delta" else "refusal"
            return {"choices": [{"index": 0, "delta": {key: delta}, "finish_reason": None}]}
        if kind == "response.reasoning_summary_text.delta" or kind == "response.reasoning_text.delta":
            delta = data.get("delta")
            if isinstance(delta, str) and delta:
                return {"choices": [{"index": 0, "delta": {"reasoning_content": delta}, "finish_reason": None}]}
            return _NOTHING
        if kind == "response.output_item.added":
            return self._item_added(data)
        if kind == "response.function_call_arguments.delta":
            index = self._calls.get(data.get("output_index"))  # type: ignore[arg-type]
            delta = data.get("delta")
            if index is None or not isinstance(delta, str):
                return _NOTHING
            call = {"index": index, "function": {"arguments": delta}}
            return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}
        if kind in _ENDS:
            return self._end(data, _ENDS[kind])
        if kind == "error" or kind == "response.failed":
            raise UpstreamErrorEvent(f"provider sent {kind} mid-stream: {_error_text(data)}", status=500)
        if not isinstance(kind, str):
            raise UpstreamProtocolError("stream event has no type")
        return _NOTHING

    def _item_added(self, data: dict[str, Any]) -> ChatChunk:
        item = data.get("item")
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return _NOTHING
        index = self._calls[data.get("output_index")] = len(self._calls)  # type: ignore[index]
        name = item.get("name")
        call = {
            "index": index,
            "id": item.get("call_id") if isinstance(item.get("call_id"), str) else "",
            "type": "function",
            "function": {"name": name if isinstance(name, str) else "", "arguments": ""},
        }
        return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}

    def _end(self, data: dict[str, Any], finish: str) -> ChatChunk:
        response = data.get("response")
        if not isinstance(response, dict):
            raise UpstreamProtocolError(f"{data.get('type')} has no response")
        state = self.state
        state.usage = responses_usage(response.get("usage"), str(data.get("type")))
        model = response.get("model")
        state.response_model = model if isinstance(model, str) else None
        state.finish_reason, state.done = finish, True
        return {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}


def _error_text(data: dict[str, Any]) -> str:
    error = data.get("error")
    if not isinstance(error, dict):
        response = data.get("response")
        error = response.get("error") if isinstance(response, dict) else None
    message = (error if isinstance(error, dict) else data).get("message")
    return checks.message_text(message) if isinstance(message, str) else "(no message)"


def stream_error(error: ApiError) -> bytes:
    """The event that ends a passed-through Responses stream that failed after it began."""
    payload = {"type": "error", "code": error.code or "server_error", "message": error.message, "param": error.param}
    return encode_event(orjson.dumps(payload), "error")
