"""Amazon Bedrock Runtime: Converse and ConverseStream, signed with SigV4.

Requests go to `POST {base}/model/{modelId}/converse` (or `/converse-stream`), built and signed
by `proxy.providers.bedrock_endpoint` (which also reads AWS's error answers and stream exceptions);
their bodies are built in `proxy.providers.bedrock_request`. Answers:

- Converse: `output.message.content` blocks (`text`, `toolUse`, `reasoningContent`), a
  `stopReason` and `usage` -> a chat.completion. Converse names no model in its answer: the
  completion says `bedrock`; streams name the backend's model.
- ConverseStream: AWS event-stream binary messages (`proxy.providers.aws_eventstream`, CRCs
  checked), one JSON payload each: messageStart, contentBlockStart (a tool call's id and name),
  contentBlockDelta (text, tool input JSON, reasoning), contentBlockStop, messageStop (the stop
  reason), metadata (usage). An exception message in the stream (e.g. `throttlingException`)
  ends it, classed as the HTTP answer AWS gives the same exception (throttling is retried).

Prompt caching: Converse caches only where a request places `cachePoint` blocks; an Anthropic
Messages app's `cache_control` becomes those (`proxy.providers.bedrock_request`), an OpenAI app's
request has none.

Usage: `inputTokens` counts only what was not read from or written to the prompt cache, so the
OpenAI `prompt_tokens` (the whole prompt) adds `cacheReadInputTokens` and
`cacheWriteInputTokens`, the reads also shown as `prompt_tokens_details.cached_tokens`, the writes
under the internal `CACHE_WRITE_TOKENS` (which the Anthropic front end reports).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from proxy.providers import checks
from proxy.providers.aws_eventstream import EventMessage, EventStreamDecoder
from proxy.providers.base import (
    CACHE_WRITE_TOKENS,
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
    json_body,
)
from proxy.providers.bedrock_endpoint import BedrockTranslatorBase, converse_count_body, count_tokens_answer, event_type
from proxy.providers.bedrock_request import converse_body
from proxy.providers.openai import load_json_object
from proxy.sse import DEFAULT_MAX_EVENT_BYTES

Json = dict[str, Any]

RESPONSE_MODEL = "bedrock"

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


# --- usage -----------------------------------------------------------------------------------


def _usage(usage: Any, what: str) -> tuple[Json, Usage]:
    if not isinstance(usage, dict):
        raise UpstreamProtocolError(f"{what} has no usage object")

    def count(field: str) -> int:
        return checks.count(usage.get(field), f"{what} usage.{field}") or 0

    cache_read, cache_write = count("cacheReadInputTokens"), count("cacheWriteInputTokens")
    prompt = count("inputTokens") + cache_read + cache_write
    completion = count("outputTokens")
    if prompt > checks.MAX_TOKENS:
        raise UpstreamProtocolError(f"{what} usage counts are not token counts")
    body: Json = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cache_read:
        body["prompt_tokens_details"] = {"cached_tokens": cache_read}
    if cache_write:
        body[CACHE_WRITE_TOKENS] = cache_write
    usage_out = Usage(input_tokens=prompt, output_tokens=completion)
    usage_out.cached_input_tokens, usage_out.cache_write_input_tokens = cache_read or None, cache_write or None
    return body, usage_out


# --- response: Converse -> chat.completion ---------------------------------------------------


def _tool_call(tool_use: Any, what: str) -> Json:
    if not isinstance(tool_use, dict):
        raise UpstreamProtocolError(f"{what} toolUse is not an object")
    call_id = checks.name(tool_use.get("toolUseId"), f"{what} toolUseId")
    name = checks.name(tool_use.get("name"), f"{what} name")
    if not call_id or not name:
        raise UpstreamProtocolError(f"{what} toolUse has no toolUseId or name")
    arguments = checks.dumps(tool_use.get("input", {}), f"{what} input", ensure_ascii=False)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def converse_completion(data: Json, *, created: int) -> tuple[ChatResponse, Usage]:
    output = checks.obj(data.get("output"), "response output") or {}
    message = checks.obj(output.get("message"), "response output.message")
    if message is None:
        raise UpstreamProtocolError("response has no output.message")
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[Json] = []
    for i, block in enumerate(checks.items(message.get("content"), "response content")):
        what = f"response content[{i}]"
        if not isinstance(block, dict):
            raise UpstreamProtocolError(f"{what} is not an object")
        if "text" in block:
            texts.append(checks.text(block["text"], f"{what} text") or "")
        elif "toolUse" in block:
            calls.append(_tool_call(block["toolUse"], what))
        elif "reasoningContent" in block:
            inner = checks.obj(block["reasoningContent"], f"{what} reasoningContent") or {}
            text_block = checks.obj(inner.get("reasoningText"), f"{what} reasoningText") or {}
            reasoning.append(checks.text(text_block.get("text"), f"{what} reasoningText.text") or "")
        # other blocks (citations, guard content, images) have no place in a chat.completion
    text = "".join(texts)
    out: Json = {"role": "assistant", "content": text if text or not calls else None}
    if reasoning:
        out["reasoning_content"] = "".join(reasoning)
    if calls:
        out["tool_calls"] = calls
    stop = checks.name(data.get("stopReason"), "response stopReason")
    usage_body, usage = _usage(data.get("usage"), "response")
    response: ChatResponse = {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": created,
        "model": RESPONSE_MODEL,
        "choices": [{"index": 0, "message": out, "finish_reason": finish_reason(stop), "logprobs": None}],
        "usage": usage_body,
    }
    return response, usage


# --- stream: ConverseStream -> chat.completion.chunk -----------------------------------------


class ConverseStreamDecoder:
    def __init__(self, *, model: str, created: int, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.state = StreamState()
        self._frames = EventStreamDecoder(max_message_bytes=max_event_bytes)
        self._model = model
        self._created = created
        self._id = "chatcmpl-" + uuid.uuid4().hex
        self._started = False
        self._tools: dict[int, int] = {}  # content block index -> OpenAI tool_calls index
        self._stopped = False

    def feed(self, data: bytes) -> list[ChatChunk]:
        return [chunk for message in self._frames.feed(data) for chunk in self._decode(message)]

    def close(self) -> list[ChatChunk]:
        self._frames.close()
        if not self._stopped:
            raise UpstreamProtocolError("stream ended before messageStop")
        self.state.done = True
        return []

    def _decode(self, message: EventMessage) -> list[ChatChunk]:
        event = event_type(message)
        if event in ("contentBlockStop", None):
            return []
        payload = load_json_object(message.payload, f"stream {event} event")
        if event == "messageStart":
            return [self._chunk({"role": "assistant"})]
        if event == "contentBlockStart":
            return self._block_start(payload)
        if event == "contentBlockDelta":
            return self._block_delta(payload)
        if event == "messageStop":
            return self._stop(payload)
        if event == "metadata":
            usage_body, self.state.usage = _usage(payload.get("usage"), "stream metadata")
            return [{**self._envelope(), "choices": [], "usage": usage_body}]
        return []  # event types added later are not this stream's content

    def _block_index(self, payload: Json) -> int:
        index = checks.index(payload.get("contentBlockIndex"), "stream contentBlockIndex")
        if index is None:
            raise UpstreamProtocolError("stream content block event has no contentBlockIndex")
        return index

    def _block_start(self, payload: Json) -> list[ChatChunk]:
        start = checks.obj(payload.get("start"), "stream contentBlockStart start") or {}
        if "toolUse" not in start:
            return []
        call = _tool_call({**(checks.obj(start["toolUse"], "stream toolUse") or {}), "input": {}}, "stream")
        position = self._tools.setdefault(self._block_index(payload), len(self._tools))
        call["function"]["arguments"] = ""
        return [self._chunk({"tool_calls": [{"index": position, **call}]})]

    def _block_delta(self, payload: Json) -> list[ChatChunk]:
        delta = checks.obj(payload.get("delta"), "stream contentBlockDelta delta") or {}
        if "text" in delta:
            text = checks.text(delta["text"], "stream delta text")
            return [self._chunk({"content": text})] if text else []
        if "toolUse" in delta:
            tool = checks.obj(delta["toolUse"], "stream delta toolUse") or {}
            position = self._tools.get(self._block_index(payload))
            if position is None:
                raise UpstreamProtocolError("stream tool input delta for a block that did not start as a tool")
            arguments = checks.text(tool.get("input"), "stream delta toolUse.input") or ""
            return [self._chunk({"tool_calls": [{"index": position, "function": {"arguments": arguments}}]})]
        if "reasoningContent" in delta:
            reasoning = checks.obj(delta["reasoningContent"], "stream delta reasoningContent") or {}
            text = checks.text(reasoning.get("text"), "stream delta reasoningContent.text")
            return [self._chunk({"reasoning_content": text})] if text else []
        return []

    def _stop(self, payload: Json) -> list[ChatChunk]:
        self._stopped = True
        reason = self.state.finish_reason = finish_reason(checks.name(payload.get("stopReason"), "stream stopReason"))
        return [self._chunk({}, reason)]

    def _chunk(self, delta: Json, finish: str | None = None) -> ChatChunk:
        if not self._started:
            self._started = True
            delta = {"role": "assistant", **delta}
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**self._envelope(), "choices": [choice]}

    def _envelope(self) -> Json:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model}


# --- the translator --------------------------------------------------------------------------


class BedrockTranslator(BedrockTranslatorBase):
    def chat_request(self, request: ChatRequest, *, model: str, stream: bool) -> UpstreamRequest:
        body = json_body(converse_body(request))
        return self._endpoint.request(model, "converse-stream" if stream else "converse", body, stream=stream)

    def chat_response(self, body: bytes) -> tuple[ChatResponse, Usage]:
        return converse_completion(load_json_object(body, "response"), created=int(time.time()))

    def stream_decoder(self, *, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> ConverseStreamDecoder:
        return ConverseStreamDecoder(model=model, created=int(time.time()), max_event_bytes=max_event_bytes)

    def count_tokens_request(self, request: ChatRequest, *, model: str) -> UpstreamRequest:
        """CountTokens (`POST /model/{modelId}/count-tokens`) for the Converse call `chat_request` would send."""
        return self._endpoint.request(model, "count-tokens", converse_count_body(converse_body(request)), stream=False)

    def count_tokens_response(self, body: bytes) -> int:
        return count_tokens_answer(body)

    def embeddings_request(self, request: EmbeddingsRequest, *, model: str) -> UpstreamRequest:
        raise UnsupportedOperation("Bedrock embeddings (InvokeModel with Titan or Cohere bodies) are not served yet")

    def embeddings_response(self, body: bytes, *, model: str) -> tuple[EmbeddingsResponse, Usage]:
        raise UnsupportedOperation("Bedrock embeddings are not served yet")
