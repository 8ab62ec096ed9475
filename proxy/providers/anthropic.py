"""Anthropic Messages API (`POST {base}/v1/messages`): the internal form out, messages and events back.

Request bodies are built by `anthropic_convert.messages_body`; here responses
are read by `chat_completion` and streams decoded event by event by
`AnthropicStreamDecoder`.

For an app that called the Messages API itself, the pass-through
(`proxy.request.passthrough`) sends its body as it is (`passthrough_request`:
the model set, nothing lost) and hands its answer back as Anthropic sent it
(`RawEventDecoder`: each event on, after the same checks and usage reading).
From another API (OpenAI Chat Completions), what the internal form cannot carry
is not asked for: no thinking (a model with extended thinking answers without
it), no `cache_control` (prompt caching is Anthropic's opt-in: such requests are
not cached), and thinking blocks, citations and server-tool blocks in an answer
are left out of the chat.completion. Pure: no sockets; the clock is read only to stamp
`created`, as OpenAI does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.providers import checks
from proxy.providers.anthropic_convert import (
    ANTHROPIC_VERSION,
    chat_id,
    finish_reason,
    is_int,
    messages_body,
    openai_usage,
)
from proxy.providers.base import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    StreamState,
    UnsupportedOperation,
    UpstreamProtocolError,
    UpstreamRequest,
    Usage,
)
from proxy.providers.openai import body_excerpt, load_json_object, server_of
from proxy.snapshot import Provider
from proxy.sse import DEFAULT_MAX_EVENT_BYTES, SseEvent, SseEventTooLarge, SseParser, parse_block

#: What count_tokens takes of a messages body (it refuses max_tokens, stop_sequences, sampling...).
_COUNTED_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice"})


def count_tokens_body(request: ChatRequest, *, model: str) -> dict[str, Any]:
    """Anthropic's count_tokens body for the messages call this request makes: its counted fields."""
    body = messages_body(request, model=model, stream=False)
    return {field: value for field, value in body.items() if field in _COUNTED_FIELDS}


class AnthropicTranslator:
    system = "anthropic"
    native_openai = False
    passthrough_api = "anthropic"  # an Anthropic Messages request is sent on as the app wrote it

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.server_address, self.server_port = server_of(provider.base_url)
        # Like the Anthropic SDK, base_url stops before the API version.
        self._url = provider.base_url.rstrip("/") + "/v1/messages"
        common = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
        if provider.api_key is not None:
            common["x-api-key"] = provider.api_key.get_secret_value()
        self._json_headers = {**common, "accept": "application/json"}
        self._sse_headers = {**common, "accept": "text/event-stream"}

    def chat_request(self, request: ChatRequest, *, model: str, stream: bool) -> UpstreamRequest:
        body = messages_body(request, model=model, stream=stream)
        headers = dict(self._sse_headers if stream else self._json_headers)
        return UpstreamRequest(url=self._url, headers=headers, body=orjson.dumps(body), stream=stream)

    def passthrough_request(
        self, body: dict[str, Any], *, model: str, stream: bool, headers: dict[str, str]
    ) -> UpstreamRequest:
        """The app's own Messages body with the backend's model: every field as sent (thinking,
        cache_control, citations, fields this gateway does not know yet). `headers`: the app's
        `anthropic-version` / `anthropic-beta`, which say how to read that body."""
        out = dict(body)
        out["model"] = model
        sent = dict(self._sse_headers if stream else self._json_headers)
        sent.update(headers)
        return UpstreamRequest(url=self._url, headers=sent, body=orjson.dumps(out), stream=stream)

    def passthrough_decoder(self, *, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> RawEventDecoder:
        return RawEventDecoder(self.stream_decoder(model=model, max_event_bytes=max_event_bytes), max_event_bytes)

    def chat_response(self, body: bytes) -> tuple[ChatResponse, Usage]:
        return chat_completion(load_json_object(body, "response"), created=int(time.time()))

    def stream_decoder(self, *, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(model=model, created=int(time.time()), max_event_bytes=max_event_bytes)

    def count_tokens_request(self, request: ChatRequest, *, model: str) -> UpstreamRequest:
        """`POST /v1/messages/count_tokens` for the messages call `chat_request` would send."""
        return UpstreamRequest(
            url=self._url + "/count_tokens",
            headers=dict(self._json_headers),
            body=orjson.dumps(count_tokens_body(request, model=model)),
        )

    def count_tokens_response(self, body: bytes) -> int:
        counted = checks.count(load_json_object(body, "count_tokens response").get("input_tokens"), "input_tokens")
        if counted is None:
            raise UpstreamProtocolError("count_tokens response has no input_tokens")
        return counted

    def embeddings_request(self, request: EmbeddingsRequest, *, model: str) -> UpstreamRequest:
        raise UnsupportedOperation("Anthropic has no embeddings API")

    def embeddings_response(self, body: bytes, *, model: str) -> tuple[EmbeddingsResponse, Usage]:
        raise UnsupportedOperation("Anthropic has no embeddings API")

    def error_message(self, status: int, body: bytes) -> str:
        try:
            data = orjson.loads(body)
        except ValueError:
            return body_excerpt(body)
        error = data.get("error") if isinstance(data, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        return checks.message_text(message) if isinstance(message, str) else body_excerpt(body)


# --- response: Anthropic message -> chat.completion ------------------------------------------


def chat_completion(message: dict[str, Any], *, created: int) -> tuple[ChatResponse, Usage]:
    if message.get("type") == "error":
        raise UpstreamProtocolError(f"provider sent an error with a success status: {_error_text(message)}")
    message_id = _required_name(message, "id", "response")
    model = _required_name(message, "model", "response")
    content = message.get("content")
    if not isinstance(content, list):
        raise UpstreamProtocolError("response has no content list")
    text, tool_calls = _read_content(content)
    usage = openai_usage(_usage_counts(message.get("usage"), "response", required=True))
    out: dict[str, Any] = {"role": "assistant", "content": text if text or not tool_calls else None}
    if tool_calls:
        out["tool_calls"] = tool_calls
    response = {
        "id": chat_id(message_id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": out, "logprobs": None, "finish_reason": finish_reason(message.get("stop_reason"))}
        ],
        "usage": usage,
    }
    counts = _usage_counts(message.get("usage"), "response", required=True)
    return response, cache_usage(counts, usage["prompt_tokens"], usage["completion_tokens"])


def cache_usage(counts: dict[str, int], prompt: int | None, completion: int | None) -> Usage:
    """The internal Usage of Anthropic counts: the prompt whole, its cache reads and writes apart."""
    return Usage(
        input_tokens=prompt,
        output_tokens=completion,
        cached_input_tokens=counts.get("cache_read_input_tokens"),
        cache_write_input_tokens=counts.get("cache_creation_input_tokens"),
    )


def _read_content(content: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    """Text blocks joined (citations split one text into several) and client tool calls.

    Thinking blocks and server-tool blocks (web search and the like, run by
    Anthropic itself) have no place in a chat.completion and are left out.
    """
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        what = f"response content block {i}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise UpstreamProtocolError(f"{what} has no type")
        if block["type"] == "text":
            texts.append(_required_str(block, "text", what, allow_empty=True))
        elif block["type"] == "tool_use":
            if not isinstance(block.get("input"), dict):
                raise UpstreamProtocolError(f"{what} has no input object")
            calls.append(
                {
                    "id": _required_name(block, "id", what),
                    "type": "function",
                    "function": {
                        "name": _required_name(block, "name", what),
                        "arguments": checks.dumps(block["input"], f"{what} input"),
                    },
                }
            )
    return "".join(texts), calls


def _required_str(data: dict[str, Any], field: str, what: str, *, allow_empty: bool = False) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not (value or allow_empty):
        raise UpstreamProtocolError(f"{what} has no {field} string")
    return value


def _required_name(data: dict[str, Any], field: str, what: str) -> str:
    """An id or name: a non-empty string of bounded length."""
    value = _required_str(data, field, what)
    checks.name(value, f"{what} {field}")
    return value


def _usage_counts(usage: Any, what: str, *, required: bool) -> dict[str, int]:
    """The token counts of an Anthropic usage object (the ones present, or all required ones)."""
    if usage is None and not required:
        return {}
    if not isinstance(usage, dict):
        raise UpstreamProtocolError(f"{what} has no usage object")
    counts = {}
    for field in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        value = usage.get(field)
        if value is None:
            if required and field in ("input_tokens", "output_tokens"):
                raise UpstreamProtocolError(f"{what} usage has no {field}")
            continue
        if not is_int(value) or not 0 <= value <= checks.MAX_TOKENS:
            raise UpstreamProtocolError(f"{what} usage.{field} is not a count")
        counts[field] = value
    return counts


def _error_text(data: dict[str, Any]) -> str:
    error = data.get("error")
    if isinstance(error, dict):
        kind = error.get("type")
        return f"{kind if isinstance(kind, str) else 'error'}: {checks.message_text(error.get('message'))}"[:600]
    return checks.message_text(error)


# --- streaming: Anthropic events -> chat.completion.chunk -------------------------------------


@dataclass(slots=True)
class _Block:
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
            raise UpstreamProtocolError(f"provider sent an error mid-stream: {_error_text(data)}")
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
        self._id = chat_id(_required_name(message, "id", "message_start"))
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
                "id": _required_name(block, "id", "tool_use block"),
                "type": "function",
                "function": {"name": _required_name(block, "name", "tool_use block"), "arguments": arguments},
            }
            return [self._chunk({"tool_calls": [call]})]
        self._blocks[index] = _Block(block["type"])
        if block["type"] == "text" and block.get("text"):
            return [self._chunk({"content": _required_str(block, "text", "text block")})]
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
            partial = _required_str(delta, "partial_json", "input_json_delta", allow_empty=True)
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
        self._counts.update(_usage_counts(usage, what, required=False))
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


class RawEvent(dict[str, Any]):
    """One provider event for a client of the same API: `raw` is what the client gets (the event's
    own data, unchanged); the dict is the event's internal chunk, read for the first-content rule,
    content capture and usage. Never mutate one."""

    __slots__ = ("raw",)
    raw: bytes


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
