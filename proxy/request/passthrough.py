"""Same-API pass-through, part of the attempt stage: nothing lost when the app's API is the backend's.

When the API the app called is the one a backend's translator speaks (its `passthrough_api`:
Anthropic Messages to `anthropic`, Bedrock with `api: anthropic-messages` or Vertex with publisher
`anthropic`; OpenAI Chat Completions to `openai`, `azure-openai`, `openai-compatible`; the OpenAI
Responses API to a type whose row in `shared.provider_types` serves `responses`, `openai` and
`azure-openai`, through their `responses_request`), the app's body goes out as sent, with only
the model (and the credentials, and for Anthropic the app's `anthropic-version` / `anthropic-beta`
headers) set by the translator: `thinking`, `cache_control`, `metadata`, `service_tier`,
`prediction` and fields this gateway does not know yet reach the provider. The answer comes back as
the provider sent it: a whole answer's bytes, or a stream's events one by one
(`proxy.providers.anthropic_events.RawEventDecoder`, `proxy.providers.openai_responses.ResponsesEventDecoder`;
OpenAI chunks keep their bytes already). What only the pass-through of Anthropic Messages or Responses needs
(how a stream that fails midway ends, how a Responses answer is read) is asked of the front end
(`PassingFrontend`), so it loads with that front end (on its API's first request, `proxy.server`). The answer
is still read on the way (status, size and event limits, usage types), so limits, usage, cost,
spans and logs work as on the translated path.

A Responses request that needs the provider (`previous_response_id`, `store`, built-in tools: the
front end's `provider_only`) goes to no other backend: a translated attempt is refused as
unsupported, and when no backend of the plan would take it the request is the front end's 400
(`refusal`).

The translated path (through the internal form) is used for an attempt when the backend speaks
another API (a fallback from Anthropic to OpenAI), when the request must be masked for that
backend (`proxy.request.redact` masks the internal form and restores values in its answer), and
for the whole request when a guardrail replaced some of its texts or reads the answer
(`proxy.request.guard`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from proxy.errors import ApiError
from proxy.frontends.base import Frontend, ParsedChat, StreamEncoder
from proxy.policy.classify import chat_texts
from proxy.providers.base import ChatChunk, StreamDecoder, Translator, UnsupportedOperation, UpstreamRequest
from proxy.request.attempt import BuildRequest
from proxy.request.redact import Masking
from proxy.request.relay import ParseBody
from proxy.routing.table import Plan
from proxy.snapshot import Backend
from proxy.sse import DEFAULT_MAX_EVENT_BYTES
from shared.provider_types import serves

RESPONSES_API = "openai-responses"  # (the Responses front end's `api`)

# The app's request headers that say how to read an Anthropic body; sent on with it.
_ANTHROPIC_HEADERS = ("anthropic-version", "anthropic-beta")

if TYPE_CHECKING:  # what the casts below say a translator or front end has (no class to pay for at run time)

    class PassingFrontend(Protocol):
        """What the pass-through of the Anthropic Messages or the Responses API asks of its front end."""

        def passthrough_error(self, error: ApiError) -> bytes:
            """The event that ends a passed-through stream that failed after it began."""
            ...

    class RespondingFrontend(PassingFrontend, Protocol):
        """The Responses front end: the provider's answers are read here, not translated (Anthropic's
        translators read their own: `passthrough_decoder`)."""

        def passthrough_answer(self, body: bytes) -> tuple[dict[str, Any], Any]: ...

        def passthrough_events(
            self, *, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
        ) -> StreamDecoder: ...

    class PassingTranslator(Protocol):
        passthrough_api: str

        def passthrough_request(
            self, body: dict[str, Any], *, model: str, stream: bool, headers: dict[str, str]
        ) -> UpstreamRequest: ...

    class RespondingTranslator(Protocol):
        def responses_request(self, body: dict[str, Any], *, model: str, stream: bool) -> UpstreamRequest: ...


def sendable_texts(parsed: ParsedChat) -> Iterator[str]:
    """What the classify stage scans: all a backend may be sent. The internal form (what every
    translated request is built from: data URLs decoded there), and the app's own body when it differs
    (Anthropic's: thinking blocks, document context, `cache_control` and unknown fields reach the
    provider on the pass-through, though the internal form drops them)."""
    yield from chat_texts(parsed.request)
    if parsed.original is not None and parsed.original is not parsed.request:
        yield from chat_texts(parsed.original)


class Passthrough:
    """One request's choice, per attempt, between its own body and the translated one."""

    __slots__ = ("_api", "_body", "_frontend", "_headers", "_masking", "_provider_only", "_raw_responses", "_sent")

    def __init__(
        self,
        *,
        frontend: Frontend,
        parsed: ParsedChat,
        headers: Mapping[str, str],
        masking: Masking,
        enabled: bool = True,
    ) -> None:
        self._api = frontend.api
        self._frontend = frontend
        self._body = parsed.original if enabled else None
        self._masking = masking
        self._headers = (
            {name: headers[name] for name in _ANTHROPIC_HEADERS if name in headers} if self._api == "anthropic" else {}
        )
        self._sent: set[str] = set()  # the backends sent the app's own body
        # A Responses request only a backend serving that API can take (the front end's 400 for it)
        self._provider_only: ApiError | None = getattr(frontend, "provider_only", None)
        self._raw_responses = False  # the attempt under way was sent a Responses body as is

    def applies(self, translator: Translator, backend: Backend) -> bool:
        if self._body is None or self._masking.rule(backend.key) is not None:
            return False
        if self._api == RESPONSES_API:
            provider = getattr(translator, "provider", None)
            return provider is not None and serves(provider.type, "responses")
        return getattr(translator, "passthrough_api", None) == self._api

    def refusal(self, plan: Plan, translators: Mapping[str, Translator]) -> ApiError | None:
        """The front end's 400 for a request that needs a backend serving the Responses API, when
        none of the plan's backends would take it as is (checked before any attempt)."""
        if self._provider_only is None:
            return None
        for candidate in plan.candidates:
            if self.applies(translators[candidate.backend.provider], candidate.backend):
                return None
        return self._provider_only

    def build(self, translated: BuildRequest, *, stream: bool) -> BuildRequest:
        """`translated`, or the app's own body where the backend speaks the app's API."""

        def build(translator: Translator, backend: Backend) -> UpstreamRequest:
            self._raw_responses = False
            if not self.applies(translator, backend):
                self._sent.discard(backend.key)
                if self._provider_only is not None:  # (a fallback of another type, or masked)
                    raise UnsupportedOperation(
                        f"{translator.system} backend {backend.key!r} cannot take this request as sent: "
                        f"{self._provider_only.message}"
                    )
                return translated(translator, backend)
            assert self._body is not None
            self._masking.used = None  # nothing masked: nothing to restore in this answer
            self._sent.add(backend.key)
            if self._api == RESPONSES_API:
                self._raw_responses = True
                return cast("RespondingTranslator", translator).responses_request(
                    self._body, model=backend.model, stream=stream
                )
            passing = cast("PassingTranslator", translator)  # (applies() checked it)
            return passing.passthrough_request(self._body, model=backend.model, stream=stream, headers=self._headers)

        return build

    def sent_as_is(self, backend: str) -> bool:
        """Whether `backend` was sent the app's own body (so its answer is the app's to have as is)."""
        return backend in self._sent

    def parse(self, parse: ParseBody) -> ParseBody:
        """How a whole answer is read: a Responses object from a backend sent the app's Responses
        body, else by `parse` (a same-API answer reads as a translated one)."""
        if self._api != RESPONSES_API:
            return parse
        as_sent = cast("RespondingFrontend", self._frontend).passthrough_answer

        def read(translator: Translator, body: bytes, model: str) -> tuple[dict[str, Any], Any]:
            return as_sent(body) if self._raw_responses else parse(translator, body, model)

        return read

    def for_stream(self, translator: Translator, frontend: Frontend, backend: Backend) -> tuple[Translator, Frontend]:
        """The translator and front end a stream relay uses: on the pass-through, events handed on
        as the provider sent them (OpenAI chunks already keep their bytes)."""
        if backend.key not in self._sent:
            return translator, frontend
        if self._api == RESPONSES_API:
            responding = cast("RespondingFrontend", self._frontend)
            return _RawTranslator(translator, responding.passthrough_events), _RawFrontend(
                frontend, responding.passthrough_error
            )
        if not hasattr(translator, "passthrough_decoder"):
            return translator, frontend
        passing = cast("PassingFrontend", self._frontend)
        return _RawTranslator(translator, translator.passthrough_decoder), _RawFrontend(
            frontend, passing.passthrough_error
        )


class _RawTranslator:
    """The translator, but its stream decoder (`decoder`) hands on the provider's events (`RawEvent`)."""

    def __init__(self, translator: Any, decoder: Callable[..., StreamDecoder]) -> None:
        self._translator = translator
        self._decoder = decoder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._translator, name)

    def stream_decoder(self, *, model: str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> StreamDecoder:
        return self._decoder(model=model, max_event_bytes=max_event_bytes)


class _RawFrontend:
    """The front end, but its stream encoder writes each event as the provider sent it."""

    def __init__(self, frontend: Frontend, error: Callable[[ApiError], bytes]) -> None:
        self._frontend = frontend
        self._error = error

    def __getattr__(self, name: str) -> Any:
        return getattr(self._frontend, name)

    def stream_encoder(self, *, include_usage: bool) -> StreamEncoder:
        return _RawEventEncoder(self._error)


class _RawEventEncoder:
    """The provider's events on, as they came; its own last event ended the stream. A failure
    mid-stream ends it with the API's error event (`error`)."""

    __slots__ = ("error",)

    def __init__(self, error: Callable[[ApiError], bytes]) -> None:
        self.error = error

    def encode(self, chunk: ChatChunk) -> bytes:
        raw: bytes = getattr(chunk, "raw", b"")  # (RawEventDecoder hands on RawEvents only)
        return raw

    def finish(self) -> bytes:
        return b""
