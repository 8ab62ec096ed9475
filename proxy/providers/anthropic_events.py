"""Anthropic SSE events: decoded into chat.completion.chunk dicts, or handed on as they came.

`AnthropicStreamDecoder` reads a Messages stream event by event for a client of another API;
`RawEventDecoder` (the pass-through, `proxy.request.passthrough`) runs the same checks and usage
reading and hands each event on to an Anthropic client as the provider sent it. Pure: no sockets.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from proxy.providers import checks
from proxy.providers.anthropic_answer import cache_usage, error_text, required_name, required_str, usage_counts
from proxy.providers.anthropic_convert import chat_id, finish_reason, is_int, openai_usage
from proxy.providers.base import ChatChunk, RawEvent, StreamState, UpstreamProtocolError
from proxy.providers.openai import load_json_object
from proxy.sse import DEFAULT_MAX_EVENT_BYTES, SseEvent, SseEventTooLarge, SseParser, parse_block

# --- streaming: Anthropic events -> chat.completion.chunk -------------------------------------


class _Block(msgspec.Struct):
    kind: str  # the Anthropic content block type
    tool_index: int | None = None  # the OpenAI tool_calls index of a tool_use block


class AnthropicStreamDecoder:
    """Anthropic SSE events -> chat.completion.chunk dicts, one event at a time.

    Every text or tool-argument delta becomes a chunk at once. OpenAI numbers
    tool calls 0, 1, ... among themselves, so tool_use blocks get their own
    count apart from Anthropic's block indices. The finish chunk and the usage
    chunk (`choices: []`) go out at `message_stop`, after every `message_delta`
    (there may be several; their usage counts are cumulative).
    """

    def __init__(self, *, model: str, created: int, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.state = StreamState()
        self._parser = SseParser(max_event_bytes=max_event_bytes)
        self._model = model
        self._created = created
        self._id = ""
        self._blocks: dict[int, _Block] = {}
        self._tool_calls = 0
        self._counts: dict[str, int] = {}
        self._stop_reason: Any = None

    def feed(self, data: bytes) -> list[ChatChunk]:
        try:
            events = self._parser.feed(data)
        except SseEventTooLarge as exc:
            raise UpstreamProtocolError(str(exc)) from None
        return [chunk for event in events for chunk in self.decode_event(event)]

    def close(self) -> list[ChatChunk]:
        chunks = [chunk for event in self._parser.close() for chunk in self.decode_event(event)]
        if not self.state.done:
            raise UpstreamProtocolError("stream ended before its message_stop event")
        return chunks

    def decode_event(self, event: SseEvent) -> list[ChatChunk]:
        if not event.data:
            return []
        return self.decode_object(load_json_object(event.data.encode(), "stream event"))

    def decode_object(self, data: dict[str, Any]) -> list[ChatChunk]:
        """One event's JSON -> its chunks (also for the pass-through, which sends the event itself on)."""
        kind = data.get("type")
        if kind == "content_block_delta" and self._id and not self.state.done:  # most events: tested first
            return self._block_delta(data)
        if kind == "error":
            raise UpstreamProtocolError(f"provider sent an error mid-stream: {error_text(data)}")
        if kind == "ping" or self.state.done:
            return []
        if kind == "message_start":
            return self._message_start(data)
        if not self._id:
            shown = repr(kind[:40]) if isinstance(kind, str) else "without a type"
            raise UpstreamProtocolError(f"stream event {shown} came before message_start")
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._block_delta(data)
        if kind == "message_delta":
            return self._message_delta(data)
        if kind == "message_stop":
            return self._message_stop()
        return []  # content_block_stop, and event types Anthropic may add later

    def _message_start(self, data: dict[str, Any]) -> list[ChatChunk]:
        message = data.get("message")
        if not isinstance(message, dict) or self._id:
            raise UpstreamProtocolError("message_start without a message, or twice")
        self._id = chat_id(required_name(message, "id", "message_start"))
        if checks.name(message.get("model"), "message_start model"):
            self._model = message["model"]
        self.state.response_model = self._model
        self._update_usage(message.get("usage"), "message_start")
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, data: dict[str, Any]) -> list[ChatChunk]:
        index = self._index(data)
        block = data.get("content_block")
        if not isinstance(block, dict) or not isinstance(block.get("type"), str) or index in self._blocks:
            raise UpstreamProtocolError(f"bad content_block_start for block {index}")
        if block["type"] == "tool_use":
            self._blocks[index] = _Block("tool_use", self._tool_calls)
            self._tool_calls += 1
            # Streamed tool_use blocks start with `input: {}` and send the arguments as deltas.
            if checks.obj(block.get("input"), "tool_use block input"):
                arguments = checks.dumps(block["input"], "tool_use block input")
            else:
                arguments = ""
            call = {
                "index": self._blocks[index].tool_index,
                "id": required_name(block, "id", "tool_use block"),
                "type": "function",
                "function": {"name": required_name(block, "name", "tool_use block"), "arguments": arguments},
            }
            return [self._chunk({"tool_calls": [call]})]
        self._blocks[index] = _Block(block["type"])
        if block["type"] == "text" and block.get("text"):
            return [self._chunk({"content": required_str(block, "text", "text block")})]
        return []

    def _block_delta(self, data: dict[str, Any]) -> list[ChatChunk]:
        index = data.get("index")
        # (a known block's index is a valid one: bool, float and other keys find no block)
        block = self._blocks.get(index) if type(index) is int else None
        delta = data.get("delta")
        if block is None or not isinstance(delta, dict):
            raise UpstreamProtocolError(f"content_block_delta for unknown block {self._index(data)}")
        kind = delta.get("type")
        if kind == "text_delta" and block.kind == "text":  # most events: checked inline
            text = delta.get("text")
            if type(text) is not str:
                raise UpstreamProtocolError("text_delta has no text string")
            return [self._chunk({"content": text})] if text else []
        if kind == "input_json_delta" and block.kind == "tool_use":
            partial = required_str(delta, "partial_json", "input_json_delta", allow_empty=True)
            call = {"index": block.tool_index, "function": {"arguments": partial}}
            return [self._chunk({"tool_calls": [call]})] if partial else []
        if kind in ("text_delta", "input_json_delta") and block.kind in ("text", "tool_use"):
            raise UpstreamProtocolError(f"{kind} for a {block.kind} block")
        # thinking_delta, signature_delta, citations_delta, server-tool input: no chat.completion equivalent.
        return []

    def _message_delta(self, data: dict[str, Any]) -> list[ChatChunk]:
        delta = data.get("delta")
        if not isinstance(delta, dict):
            raise UpstreamProtocolError("message_delta has no delta")
        if delta.get("stop_reason") is not None:
            self._stop_reason = delta["stop_reason"]
            self.state.finish_reason = finish_reason(self._stop_reason)
        self._update_usage(data.get("usage"), "message_delta")
        return []

    def _message_stop(self) -> list[ChatChunk]:
        self.state.done = True
        finish = finish_reason(self._stop_reason)
        self.state.finish_reason = finish
        chunks = [self._chunk({}, finish)]
        if self._counts:  # Anthropic always reports usage; a stream without any gets no usage chunk
            chunks.append({**self._chunk({}), "choices": [], "usage": openai_usage(self._counts)})
        return chunks

    def _update_usage(self, usage: Any, what: str) -> None:
        # Counts are cumulative: a later value replaces an earlier one.
        self._counts.update(usage_counts(usage, what, required=False))
        totals = openai_usage(self._counts)
        self.state.usage = cache_usage(
            self._counts,
            totals["prompt_tokens"] if "input_tokens" in self._counts else None,
            totals["completion_tokens"] if "output_tokens" in self._counts else None,
        )

    @staticmethod
    def _index(data: dict[str, Any]) -> int:
        index = data.get("index")
        if not is_int(index) or not 0 <= index <= checks.MAX_TOKENS:
            raise UpstreamProtocolError(f"{data.get('type')} has no block index")
        return int(index)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> ChatChunk:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }


# --- pass-through: Anthropic events on to an Anthropic client as they came --------------------


_NO_CONTENT: ChatChunk = {"choices": [{"index": 0, "delta": {}, "finish_reason": None}]}


class RawEventDecoder:
    """Anthropic SSE events decoded (checked, usage read) by the Anthropic decoder and handed on one
    `RawEvent` each, so an Anthropic client gets the provider's events, not a re-encode: each event's
    own bytes (line ends made LF), its `event:` line added where the provider sent only data (Bedrock;
    an Anthropic event's name is its type)."""

    def __init__(self, events: AnthropicStreamDecoder, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._events = events
        self.state = events.state
        self._parser = SseParser(max_event_bytes=max_event_bytes)

    def feed(self, data: bytes) -> list[ChatChunk]:
        try:
            blocks = self._parser.feed_blocks(data)
        except SseEventTooLarge as exc:
            raise UpstreamProtocolError(str(exc)) from None
        return [chunk for block in blocks if (chunk := self._raw_event(block)) is not None]

    def close(self) -> list[ChatChunk]:
        rest = self._parser.close_block()
        chunks = [chunk] if rest and (chunk := self._raw_event(rest)) is not None else []
        if not self.state.done:
            raise UpstreamProtocolError("stream ended before its message_stop event")
        return chunks

    def _raw_event(self, block: bytes) -> ChatChunk | None:
        named = block.startswith(b"event: ")
        newline = block.find(b"\n")
        if named and block.startswith(b"data: ", newline + 1) and block.find(b"\n", newline + 1) < 0:
            payload = block[newline + 7 :]  # the common case: one event line, one data line
        elif block.startswith(b"data: ") and newline < 0:
            payload = block[6:]
        else:  # comments, several data lines, odd spacing: read by the rules, sent as one data line
            event = parse_block(block)
            if event is None or not event.data:
                return None
            payload, named = orjson.dumps(load_json_object(event.data, "stream event")), False
            block = b"data: " + payload
        data = load_json_object(payload, "stream event")
        chunks = self._events.decode_object(data)
        kind = data.get("type")
        # Most events are text deltas: one chunk, its content (a block delta gives no finish, no usage).
        chunk = RawEvent(chunks[0] if kind == "content_block_delta" and chunks else _representative(chunks, data))
        if not named and isinstance(kind, str) and kind.isidentifier():
            block = b"event: " + kind.encode() + b"\n" + block
        chunk.raw = block + b"\n\n"
        return chunk


def _representative(chunks: list[ChatChunk], data: dict[str, Any]) -> ChatChunk:
    """The internal chunk standing for an event: its content if any (thinking counts, so a model
    that thinks first is not held back), else its finish, else an empty delta."""
    for chunk in chunks:
        if chunk.get("usage") is not None or any(c.get("finish_reason") for c in chunk.get("choices") or []):
            continue
        delta = chunk["choices"][0]["delta"] if chunk.get("choices") else {}
        if delta.get("content") or delta.get("tool_calls"):
            return chunk
    delta = data.get("delta")
    if isinstance(delta, dict) and delta.get("type") == "thinking_delta":
        thinking = delta.get("thinking")
        if isinstance(thinking, str) and thinking:
            return {"choices": [{"index": 0, "delta": {"reasoning_content": thinking}, "finish_reason": None}]}
    for chunk in chunks:
        if chunk.get("choices") and chunk["choices"][0].get("finish_reason"):
            return chunk
    return chunks[0] if chunks else _NO_CONTENT
