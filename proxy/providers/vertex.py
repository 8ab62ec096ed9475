"""Google Vertex AI: Gemini models (Gemini's own body) and Anthropic's Claude (Anthropic's body).

URLs: `{base}/v1/projects/{project}/locations/{region}/publishers/{publisher}/models/{model}:{method}`
with the provider's `vertex` settings; `base` is `https://{region}-aiplatform.googleapis.com` (or
`https://aiplatform.googleapis.com` for the `global` location).

- publisher `google`: `:generateContent`, and `:streamGenerateContent?alt=sse` for streams; bodies
  and answers are the Gemini API's (`proxy.providers.gemini`).
- publisher `anthropic`: `:rawPredict` and `:streamRawPredict`; the body is Anthropic's Messages
  body without `model` (the URL names it) and with `anthropic_version: vertex-2023-10-16`, `stream`
  kept; answers are Anthropic's messages and SSE events (`proxy.providers.anthropic`). An Anthropic
  Messages request goes as the app wrote it (thinking, cache_control: `proxy.request.passthrough`).
  Token counting is `models/count-tokens:rawPredict`, with Anthropic's count_tokens body (the model
  in it) and answer.

Auth: the provider's OAuth token source (a service-account key or the pod's Workload Identity,
`proxy.auth.google`), read at each request as `Authorization: Bearer`; or an API key (express
mode, Gemini only) as `x-goog-api-key`. Errors from Google's front (401 UNAUTHENTICATED, 403, 429
RESOURCE_EXHAUSTED) have Google's shape, `{"error": {"code", "message", "status"}}`, for both
publishers; both translators read `error.message`.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from proxy.auth.token_source import TokenSource
from proxy.providers.anthropic import AnthropicTranslator, count_tokens_body
from proxy.providers.anthropic_answer import chat_completion
from proxy.providers.anthropic_events import AnthropicStreamDecoder
from proxy.providers.anthropic_request import messages_body
from proxy.providers.base import (
    ChatRequest,
    ChatResponse,
    CredentialsUnavailable,
    EmbeddingsRequest,
    EmbeddingsResponse,
    UnsupportedOperation,
    UpstreamRequest,
    Usage,
    json_body,
)
from proxy.providers.gemini import GeminiTranslator
from proxy.providers.gemini_request import gemini_chat_body
from proxy.providers.openai import load_json_object, server_of
from proxy.snapshot import Provider
from proxy.sse import DEFAULT_MAX_EVENT_BYTES

ANTHROPIC_ON_VERTEX = "vertex-2023-10-16"
JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
SSE_HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}
_COUNTED_FIELDS = frozenset({"contents", "systemInstruction", "tools", "generationConfig"})


def publisher_base(provider: Provider) -> str:
    """`.../publishers/{publisher}/models/`, to which a model id and `:method` are appended."""
    settings = provider.vertex
    if settings is None:
        raise ValueError(f"provider {provider.name!r} has no vertex settings")
    project, region = quote(settings.project, safe=""), quote(settings.region, safe="")
    return (
        f"{provider.base_url.rstrip('/')}/v1/projects/{project}/locations/{region}/"
        f"publishers/{settings.publisher}/models/"
    )


class _VertexAuth:
    def __init__(self, provider: Provider, token_source: TokenSource | None) -> None:
        self._source = token_source
        self._name = provider.name
        self._static = {} if provider.api_key is None else {"x-goog-api-key": provider.api_key.get_secret_value()}

    def headers(self) -> dict[str, str]:
        if self._source is None:
            return self._static
        token = self._source.token()
        if token is None:  # nothing sent without it: Google's 401 would read as a refused key
            raise CredentialsUnavailable(f"provider {self._name!r}: {self._source.missing()}")
        return {"authorization": "Bearer " + token}


class VertexGeminiTranslator(GeminiTranslator):
    system = "gcp.vertex_ai"

    def __init__(self, provider: Provider, *, token_source: TokenSource | None = None) -> None:
        super().__init__(provider)
        self._models = publisher_base(provider)
        self._auth = _VertexAuth(provider, token_source)

    def _url(self, model: str, method: str) -> str:
        return f"{self._models}{quote(model, safe='')}:{method}"

    def chat_request(self, request: ChatRequest, *, model: str, stream: bool) -> UpstreamRequest:
        body = json_body(gemini_chat_body(request))
        if stream:
            url = self._url(model, "streamGenerateContent") + "?alt=sse"
            return UpstreamRequest(url=url, headers={**SSE_HEADERS, **self._auth.headers()}, body=body, stream=True)
        url = self._url(model, "generateContent")
        return UpstreamRequest(url=url, headers={**JSON_HEADERS, **self._auth.headers()}, body=body)

    def count_tokens_request(self, request: ChatRequest, *, model: str) -> UpstreamRequest:
        """`:countTokens`, whose body on Vertex is the generateContent call's own fields (not wrapped
        in `generateContentRequest` as on the Gemini API); the answer's `totalTokens` is read as there."""
        generate = gemini_chat_body(request)
        body = {k: v for k, v in generate.items() if k in _COUNTED_FIELDS}
        url = self._url(model, "countTokens")
        return UpstreamRequest(url=url, headers={**JSON_HEADERS, **self._auth.headers()}, body=json_body(body))

    def embeddings_request(self, request: EmbeddingsRequest, *, model: str) -> UpstreamRequest:
        raise UnsupportedOperation("Vertex AI embeddings (the predict API) are not served yet")

    def embeddings_response(self, body: bytes, *, model: str) -> tuple[EmbeddingsResponse, Usage]:
        raise UnsupportedOperation("Vertex AI embeddings are not served yet")


class VertexAnthropicTranslator(AnthropicTranslator):
    system = "gcp.vertex_ai"
    # An Anthropic Messages request goes on as the app wrote it (`passthrough_request`): Vertex takes
    # Anthropic's body but for `model` (in the URL) and its own `anthropic_version`.
    passthrough_api = "anthropic"

    def __init__(self, provider: Provider, *, token_source: TokenSource | None = None) -> None:
        self.provider = provider
        self.server_address, self.server_port = server_of(provider.base_url)
        self._models = publisher_base(provider)
        self._auth = _VertexAuth(provider, token_source)

    def chat_request(self, request: ChatRequest, *, model: str, stream: bool) -> UpstreamRequest:
        body = messages_body(request, model=model, stream=stream)
        body.pop("model", None)
        body["anthropic_version"] = ANTHROPIC_ON_VERTEX
        method = "streamRawPredict" if stream else "rawPredict"
        headers = {**(SSE_HEADERS if stream else JSON_HEADERS), **self._auth.headers()}
        url = f"{self._models}{quote(model, safe='')}:{method}"
        return UpstreamRequest(url=url, headers=headers, body=json_body(body), stream=stream)

    def passthrough_request(
        self, body: dict[str, Any], *, model: str, stream: bool, headers: dict[str, str]
    ) -> UpstreamRequest:
        """The app's Messages body as rawPredict takes it: every field as sent (thinking, cache_control,
        citations, unknown ones) but `model`, which the URL names, and with Vertex's `anthropic_version`
        (the app's `anthropic-version` header names the Anthropic API's, not Vertex's). `stream` is kept:
        streamRawPredict wants it. The app's `anthropic-beta` header goes on as Vertex reads it."""
        out = {key: value for key, value in body.items() if key != "model"}
        out["anthropic_version"] = ANTHROPIC_ON_VERTEX
        if stream:
            out["stream"] = True
        else:
            out.pop("stream", None)
        method = "streamRawPredict" if stream else "rawPredict"
        sent = {**(SSE_HEADERS if stream else JSON_HEADERS), **self._auth.headers()}
        if beta := headers.get("anthropic-beta"):
            sent["anthropic-beta"] = beta
        url = f"{self._models}{quote(model, safe='')}:{method}"
        return UpstreamRequest(url=url, headers=sent, body=json_body(out), stream=stream)

    def chat_response(self, body: bytes) -> tuple[ChatResponse, Usage]:
        return chat_completion(load_json_object(body, "response"), created=int(time.time()))

    def stream_decoder(self, *, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(model=model, created=int(time.time()), max_event_bytes=max_event_bytes)

    def count_tokens_request(self, request: ChatRequest, *, model: str) -> UpstreamRequest:
        """`count-tokens:rawPredict`, one URL for every Claude model: Anthropic's count_tokens body with
        the model in it (not in the URL) and Vertex's `anthropic_version`. The answer is Anthropic's
        `{"input_tokens": n}`, read by `AnthropicTranslator.count_tokens_response`."""
        body = count_tokens_body(request, model=model)
        body["anthropic_version"] = ANTHROPIC_ON_VERTEX
        url = f"{self._models}count-tokens:rawPredict"
        return UpstreamRequest(url=url, headers={**JSON_HEADERS, **self._auth.headers()}, body=json_body(body))
