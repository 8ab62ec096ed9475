"""The one internal form and the small interface every provider translator implements.

The internal form is the OpenAI Chat Completions shape, as plain dicts: a
request body (`ChatRequest`), a `chat.completion` object (`ChatResponse`) and
`chat.completion.chunk` objects (`ChatChunk`). It is the most widely spoken
shape, so the common OpenAI-to-OpenAI path needs almost no work, and every
other wire format translates to and from it in one module of its own.

Translators are pure: they build request bytes and parse response bytes; the
relay owns the sockets. One translator instance is built per provider at
config time, holding its resolved URLs and auth headers.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec
import orjson

ChatRequest = dict[str, Any]
ChatResponse = dict[str, Any]
ChatChunk = dict[str, Any]
EmbeddingsRequest = dict[str, Any]
EmbeddingsResponse = dict[str, Any]

OPERATION_CHAT = "chat"
OPERATION_EMBEDDINGS = "embeddings"


class UpstreamProtocolError(Exception):
    """The provider answered something its wire format does not allow (-> 502).

    Translators and stream decoders raise this and nothing else for anything an answer can
    hold: what they return is well-typed (see `proxy.providers.checks`), so front ends, spans
    and metrics can read it without checking again."""


class UpstreamErrorEvent(UpstreamProtocolError):
    """The provider reported an error inside a 200 answer (an exception event in a stream).

    `status` is the HTTP status the provider answers the same error with, so a failure before
    the first byte reached the client is classed as that answer would be (throttling: rate
    limited and retried; validation: the request's own fault)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class UnsupportedOperation(Exception):
    """The provider type cannot serve this operation (e.g. embeddings on Anthropic)."""


class CredentialsUnavailable(Exception):
    """The provider's credential source has nothing to send yet (its first fetch is under way or
    failed, or what it holds expired and renewing fails). Raised while building a request, so
    nothing unauthenticated is sent and no provider 401 is mistaken for the app's fault; the
    message names the provider and the problem, never a secret."""


class RawEvent(dict[str, Any]):
    """One provider event for a client of the same API (what the pass-through's stream decoders yield):
    `raw` is what the client gets (the event's own data, unchanged); the dict is the event's internal
    chunk, read for the first-content rule, content capture and usage. Never mutate one."""

    __slots__ = ("raw",)
    raw: bytes


#: In an internal usage object (a `ChatResponse`'s or a usage chunk's `usage`): of `prompt_tokens`,
#: those written to the provider's prompt cache, where the provider reports them (Anthropic's
#: `cache_creation_input_tokens`, Bedrock's `cacheWriteInputTokens`). The OpenAI shape has no field
#: for them: the Anthropic front end reports them as `cache_creation_input_tokens`, the OpenAI front
#: end leaves the key out (`public_usage`).
CACHE_WRITE_TOKENS = "_cache_write_tokens"


def public_usage(answer: dict[str, Any]) -> dict[str, Any]:
    """`answer` (a chat.completion or a chunk) as OpenAI documents it: without `CACHE_WRITE_TOKENS`
    in its usage (the same object when it has none)."""
    usage = answer.get("usage")
    if type(usage) is not dict or CACHE_WRITE_TOKENS not in usage:
        return answer
    return {**answer, "usage": {key: value for key, value in usage.items() if key != CACHE_WRITE_TOKENS}}


class Usage(msgspec.Struct):
    """Token counts of one answer. `input_tokens` is the whole prompt; of it, `cached_input_tokens`
    were read from the provider's prompt cache (billed at its cached-input price) and
    `cache_write_input_tokens` written to it (Anthropic's cache_creation_input_tokens)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_input_tokens: int | None = None


def json_body(value: Any) -> bytes:
    """`value` as JSON bytes of their own size, for a request body.

    orjson hands back the buffer it grew while writing (4 KiB for a one-line chat, 64 KiB for a
    5 KB prompt), and an attempt holds its body until the answer's last byte; copied to its length
    (about 0.2 us), a body costs what it weighs for the seconds a call lasts."""
    return bytes(memoryview(orjson.dumps(value)))


class UpstreamRequest(msgspec.Struct, frozen=True):
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool = False


class StreamState(msgspec.Struct):
    """What a stream decoder learned along the way, read by the relay at the end."""

    usage: Usage = msgspec.field(default_factory=Usage)
    response_model: str | None = None
    finish_reason: str | None = None
    done: bool = False


class StreamDecoder(Protocol):
    state: StreamState

    def feed(self, data: bytes) -> list[ChatChunk]:
        """Decode the next bytes of the upstream body into zero or more chunks."""
        ...

    def close(self) -> list[ChatChunk]:
        """The body ended; return what is left, raise UpstreamProtocolError if cut short."""
        ...


class Translator(Protocol):
    """One provider wire format, bound to one configured provider."""

    #: the `gen_ai.provider.name` value (OpenTelemetry GenAI semantic conventions)
    system: str
    #: host of the provider, for `server.address`
    server_address: str
    server_port: int
    #: True when the provider's own bodies are already the internal (OpenAI) shape
    native_openai: bool

    def chat_request(self, request: ChatRequest, *, model: str, stream: bool) -> UpstreamRequest: ...

    def chat_response(self, body: bytes) -> tuple[ChatResponse, Usage]: ...

    def stream_decoder(self, *, model: str, max_event_bytes: int = ...) -> StreamDecoder:
        """A decoder for one streamed answer; an event longer than `max_event_bytes` is a bad answer."""
        ...

    def embeddings_request(self, request: EmbeddingsRequest, *, model: str) -> UpstreamRequest: ...

    def embeddings_response(self, body: bytes, *, model: str) -> tuple[EmbeddingsResponse, Usage]: ...

    def error_message(self, status: int, body: bytes) -> str:
        """The provider's own error message from an error body, for the attempt summary."""
        ...
