"""OpenAI Chat Completions and Embeddings: the internal form itself, so mostly a pass-through.

An OpenAI app's body goes on as sent (`passthrough_request`: every field, unknown ones too, with the
backend's model; `proxy.request.passthrough`), and its answer comes back as the provider's bytes. From
the Anthropic Messages API, what OpenAI has no field for is dropped by the front end: `thinking` (the
reasoning models think by themselves; `reasoning_effort` is not set), `cache_control` (OpenAI caches
prompts of 1024 tokens and more by itself, and reports the cached part: the front end's breakpoint
marks are removed here, `proxy.providers.cache_points`), `top_k`, citations."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson

from proxy.providers import checks
from proxy.providers.base import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    StreamState,
    UpstreamProtocolError,
    UpstreamRequest,
    Usage,
    json_body,
)
from proxy.providers.cache_points import without_cache_points
from proxy.snapshot import Provider
from proxy.sse import DEFAULT_MAX_EVENT_BYTES, SseEventTooLarge, SseParser

JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
SSE_HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}


def load_json_object(body: bytes | str, what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(body)  # on every request and stream event: ~3x faster than json.loads
    except ValueError:
        raise UpstreamProtocolError(f"{what} is not JSON: {body[:80]!r}") from None
    if not isinstance(data, dict):
        raise UpstreamProtocolError(f"{what} is not a JSON object")
    return data


def server_of(base_url: str) -> tuple[str, int]:
    """Host and port for the spans; a URL the client cannot use gives ("", 0) here and fails its
    attempts, not the snapshot."""
    try:
        parts = urlsplit(base_url)
        return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "", 0


def body_excerpt(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace")


def openai_error_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)  # not json.loads: it lets lone surrogates through, which no JSON writer takes
    except ValueError:
        return body_excerpt(body)
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return checks.message_text(message) if isinstance(message, str) else body_excerpt(body)


class RawChunk(dict[str, Any]):
    """A chunk decoded from an OpenAI stream that keeps the event's JSON bytes, so an
    OpenAI client can be sent the provider's own bytes instead of a re-encode.
    Never mutate one: `raw` would no longer match."""

    __slots__ = ("raw",)
    raw: bytes


_DONE = b"[DONE]"


class OpenAIStreamDecoder:
    """`chat.completion.chunk` SSE events ending in `data: [DONE]`.

    The hot path of every OpenAI-to-OpenAI stream: event data stays bytes from
    the socket to the client (no str round trip), parsed once by orjson.
    """

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.state = StreamState()
        self._parser = SseParser(max_event_bytes=max_event_bytes)

    def feed(self, data: bytes) -> list[ChatChunk]:
        try:
            events = self._parser.feed_data(data)
        except SseEventTooLarge as exc:
            raise UpstreamProtocolError(str(exc)) from None
        return [chunk for event in events if (chunk := self._decode(event)) is not None]

    def close(self) -> list[ChatChunk]:
        chunks = [c for e in self._parser.close() if (c := self._decode(e.data.encode())) is not None]
        if not self.state.done:
            raise UpstreamProtocolError("stream ended before its final [DONE] event")
        return chunks

    def _decode(self, data: bytes) -> ChatChunk | None:
        if data == _DONE:
            self.state.done = True
            return None
        if self.state.done:
            return None  # nothing after [DONE] is read (as the OpenAI SDKs do)
        chunk = RawChunk(load_json_object(data, "stream event"))
        chunk.raw = data
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise UpstreamProtocolError(f"provider sent an error mid-stream: {checks.message_text(message)}")
        prompt, completion = checks.check_chunk(chunk)  # the shapes front ends, spans and metrics read
        state = self.state
        if prompt is not None or completion is not None:
            state.usage = Usage(
                input_tokens=prompt,
                output_tokens=completion,
                cached_input_tokens=checks.cached_tokens(chunk.get("usage")),
            )
        if model := chunk.get("model"):
            state.response_model = model
        for choice in chunk["choices"]:
            if reason := choice.get("finish_reason"):
                state.finish_reason = reason
        return chunk


class OpenAITranslator:
    system = "openai"
    native_openai = True
    passthrough_api = "openai"  # the internal form is this API's: a Chat Completions body goes on as sent

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.server_address, self.server_port = server_of(provider.base_url)
        base = provider.base_url.rstrip("/")
        self._chat_url = base + "/chat/completions"
        self._responses_url = base + "/responses"
        self._embeddings_url = base + "/embeddings"
        self._auth = self.auth_headers(provider)

    @staticmethod
    def auth_headers(provider: Provider) -> dict[str, str]:
        if provider.api_key is None:
            return {}
        return {"authorization": "Bearer " + provider.api_key.get_secret_value()}

    def chat_body(self, request: ChatRequest, *, model: str, stream: bool) -> dict[str, Any]:
        # The internal form goes on as it is: the front end's cache breakpoint marks must not.
        body = dict(without_cache_points(request))
        body["model"] = model
        if stream:
            body["stream"] = True
            # Usage only comes on streams when asked for; the relay hides it again
            # from clients that did not ask.
            options = body.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            options["include_usage"] = True
            body["stream_options"] = options
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return body

    def chat_request(self, request: ChatRequest, *, model: str, stream: bool) -> UpstreamRequest:
        body = self.chat_body(request, model=model, stream=stream)
        headers = {**(SSE_HEADERS if stream else JSON_HEADERS), **self._auth}
        return UpstreamRequest(url=self._chat_url, headers=headers, body=json_body(body), stream=stream)

    def passthrough_request(
        self, body: dict[str, Any], *, model: str, stream: bool, headers: dict[str, str]
    ) -> UpstreamRequest:
        """The app's body, every field as sent (`service_tier`, `prediction`, fields this gateway does
        not know yet) with the backend's model; a stream also asks for its usage chunk, which the
        front end hides again from an app that did not ask (limits and cost need the counts)."""
        return self.chat_request(body, model=model, stream=stream)

    def responses_request(self, body: dict[str, Any], *, model: str, stream: bool) -> UpstreamRequest:
        """The app's Responses API body as sent (`previous_response_id`, `store`, built-in tools and
        fields this gateway does not know yet), with the backend's model: `POST {base}/responses`."""
        out = dict(body)
        out["model"] = model
        headers = {**(SSE_HEADERS if stream else JSON_HEADERS), **self._auth}
        return UpstreamRequest(url=self._responses_url, headers=headers, body=json_body(out), stream=stream)

    def chat_response(self, body: bytes) -> tuple[ChatResponse, Usage]:
        data = load_json_object(body, "response")
        if data.get("error"):  # (some compatible servers send `"error": null` on success)
            raise UpstreamProtocolError(f"provider sent an error with a success status: {openai_error_message(body)}")
        prompt, completion = checks.check_completion(data)
        cached = checks.cached_tokens(data.get("usage"))
        return data, Usage(input_tokens=prompt, output_tokens=completion, cached_input_tokens=cached)

    def stream_decoder(self, *, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(max_event_bytes=max_event_bytes)

    def embeddings_request(self, request: EmbeddingsRequest, *, model: str) -> UpstreamRequest:
        body = dict(request)
        body["model"] = model
        headers = {**JSON_HEADERS, **self._auth}
        return UpstreamRequest(url=self._embeddings_url, headers=headers, body=json_body(body))

    def embeddings_response(self, body: bytes, *, model: str) -> tuple[EmbeddingsResponse, Usage]:
        data = load_json_object(body, "response")
        if not isinstance(data.get("data"), list):
            raise UpstreamProtocolError("embeddings response has no data list")
        response, prompt = checks.embeddings(data, model=model)
        return response, Usage(input_tokens=prompt, output_tokens=None)

    def error_message(self, status: int, body: bytes) -> str:
        return openai_error_message(body)
