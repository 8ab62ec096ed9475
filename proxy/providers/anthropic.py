"""Anthropic Messages API (`POST {base}/v1/messages`): the internal form out, messages and events back.

Request bodies are built by `anthropic_request.messages_body`, answers read by
`anthropic_answer.chat_completion` and streams decoded event by event by
`anthropic_events.AnthropicStreamDecoder`; this module holds the translator.

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
from typing import Any

import orjson

from proxy.providers import checks
from proxy.providers.anthropic_answer import chat_completion
from proxy.providers.anthropic_convert import ANTHROPIC_VERSION
from proxy.providers.anthropic_events import AnthropicStreamDecoder, RawEventDecoder
from proxy.providers.anthropic_request import messages_body
from proxy.providers.base import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    UnsupportedOperation,
    UpstreamProtocolError,
    UpstreamRequest,
    Usage,
    json_body,
)
from proxy.providers.openai import body_excerpt, load_json_object, server_of
from proxy.snapshot import Provider
from proxy.sse import DEFAULT_MAX_EVENT_BYTES

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
        return UpstreamRequest(url=self._url, headers=headers, body=json_body(body), stream=stream)

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
        return UpstreamRequest(url=self._url, headers=sent, body=json_body(out), stream=stream)

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
            body=json_body(count_tokens_body(request, model=model)),
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
