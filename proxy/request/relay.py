"""One call to one provider, its bytes both ways: part of the attempt stage (`proxy.request.attempt`
decides which backend and when; this module makes the call).

A whole answer is read under the client's limits and parsed by the translator; a stream is
relayed to the app chunk by chunk, as it arrives. The rule that keeps clients safe: until the
first content is in hand nothing is sent to the app, so a failure is an `AttemptFailed` and the
attempt stage may retry or fall back; once the first byte is out, a failure ends the stream with
an error event in the app's API, and the answer says how it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
from aiohttp import web
from opentelemetry.trace import Span

from proxy import upstream as up
from proxy.egress import ProxyTunnelFailed
from proxy.errors import ApiError
from proxy.frontends.base import Frontend, ParsedChat, StreamEncoder
from proxy.http_client import HttpClient, Response, UpstreamProtocolViolation
from proxy.http_request import UnusableURL
from proxy.providers.base import (
    ChatChunk,
    StreamDecoder,
    Translator,
    UnsupportedOperation,
    UpstreamErrorEvent,
    UpstreamProtocolError,
    UpstreamRequest,
    Usage,
)
from proxy.snapshot import Backend, Timeouts
from proxy.telemetry import Telemetry

if TYPE_CHECKING:
    from proxy.request.guarded import StreamGuard

log = logging.getLogger("modelway.relay")

# Upstream trouble: refused/reset connections, bodies cut short (http_client.UpstreamDisconnected).
_TRANSPORT_ERRORS = (OSError,)
_SSE_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no"}

ParseBody = Callable[[Translator, bytes, str], tuple[dict[str, Any], Usage]]


class _EventStream(web.StreamResponse):
    # The headers leave with the first events, in one write: we always have events in hand
    # when the response starts (aiohttp sends them in a write of their own otherwise).
    _send_headers_immediately = False


class ClientGone(Exception):
    """Writing to the app failed: it disconnected. Not the provider's fault."""


class StreamStopped(Exception):
    """The answer's guardrails stopped a stream that began: `chunks` may still go out, then `error`."""

    def __init__(self, error: ApiError, chunks: list[ChatChunk]) -> None:
        super().__init__(error.message)
        self.error, self.chunks = error, chunks


class AttemptFailed(Exception):
    """This attempt failed before anything reached the app: another one may be made."""

    def __init__(self, failure: up.Failure, *, answered: int | None = None) -> None:
        super().__init__(failure.summary())
        self.failure = failure
        self.answered = answered  # the status of an answer that began (200) and then failed


class Answer(msgspec.Struct):
    """What an attempt that the provider answered brought back."""

    backend: str
    usage: Usage = msgspec.field(default_factory=Usage)
    response_model: str | None = None
    finish_reason: str | None = None
    ttft: float | None = None  # streams: seconds from the request's start to the first content
    # Unary calls: the parsed answer, the provider's body as received, and whether that body is
    # already in the OpenAI shape (then an OpenAI client can get these bytes without a re-encode).
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    raw: bytes = b""
    native_openai: bool = False
    # Streams: the response being written, and how a stream that had begun ended when it failed
    # (cut, timed out, the client gone). Too late for another attempt: the outcome's error.
    response: web.StreamResponse | None = None
    error_type: str | None = None
    error_message: str = ""
    # What was masked in the request this backend got, by kind, and the policies that asked for it.
    redacted: Mapping[str, int] = msgspec.field(default_factory=dict)
    redacted_by: tuple[str, ...] = ()


class Relay:
    def __init__(self, *, client: HttpClient, telemetry: Telemetry) -> None:
        self._client = client
        self._telemetry = telemetry

    async def _send(self, request: UpstreamRequest, span: Span, connect: float) -> Response:
        headers = dict(request.headers)
        self._telemetry.inject(headers, span)
        # The connect limit applies to new connections only: a pooled one needs no timer of its
        # own. The caller's deadline bounds everything else.
        return await self._client.post(request.url, body=request.body, headers=headers, connect_timeout=connect)

    async def _failure_from_status(self, resp: Response, translator: Translator, backend: str) -> AttemptFailed:
        # Only the start of an error body is read: enough for its message, never a provider's 100 MB.
        body = await resp.read(self._client.limits.max_error_body_bytes, truncate=True)
        kind = up.kind_for_status(resp.status)
        message = translator.error_message(resp.status, body)[:300]
        if kind == up.BAD_RESPONSE:  # 201, 204, 3xx...: not an answer, and not an error the API defines
            message = f"unexpected status {resp.status} for this call: {message}"[:300]
        return AttemptFailed(
            up.Failure(
                kind,
                backend,
                message,
                status=resp.status,
                retry_after=up.parse_retry_after(resp.headers.get("retry-after")),
            )
        )

    # --- unary calls: chat without streaming, embeddings ----------------------------

    async def unary(
        self,
        *,
        translator: Translator,
        backend: Backend,
        upstream: UpstreamRequest,
        span: Span,
        deadline: float,
        connect_seconds: float,
        parse: ParseBody,
    ) -> Answer:
        resp: Response | None = None
        try:
            async with asyncio.timeout_at(deadline):
                resp = await self._send(upstream, span, connect_seconds)
                async with resp:
                    if resp.status != 200:
                        raise await self._failure_from_status(resp, translator, backend.key)
                    body = await resp.read()  # at most the client's max_body_bytes
            data, usage = _parsed(parse, translator, body, backend)
        except (TimeoutError, UpstreamProtocolError, *_TRANSPORT_ERRORS) as exc:
            answered = resp.status if resp is not None else None  # answered 200, then failed
            raise _attempt_failure(exc, backend.key, first_token_limited=False, answered=answered) from None
        model = data.get("model")
        return Answer(
            backend=backend.key,
            usage=usage,
            response_model=model if isinstance(model, str) else None,
            data=data,
            raw=body,
            native_openai=translator.native_openai,
        )

    # --- streaming chat -------------------------------------------------------------

    async def stream(
        self,
        *,
        request: web.Request,
        parsed: ParsedChat,
        frontend: Frontend,
        translator: Translator,
        backend: Backend,
        upstream: UpstreamRequest,
        span: Span,
        deadline: float,
        timeouts: Timeouts,
        started: float,
        scrub: Callable[[str], str],
        headers: Mapping[str, str] | None = None,
        guard: StreamGuard | None = None,
    ) -> Answer:
        """`started`: the request's `time.perf_counter()` reading, for the time to first token;
        `headers`: added to the answer's (the rate-limit headers, when limits bind); `guard`: the
        answer's guardrails, which hold back the text they have not checked yet."""
        loop = asyncio.get_running_loop()
        first_token_deadline = deadline
        if timeouts.first_token_seconds is not None:
            first_token_deadline = min(deadline, loop.time() + timeouts.first_token_seconds)
        # One timer for the whole attempt: the first-token deadline until content
        # arrives, then moved out to the total deadline.
        timer = asyncio.timeout_at(first_token_deadline)
        answer = Answer(backend=backend.key)
        resp: Response | None = None
        response: web.StreamResponse | None = None
        encoder: Any = None
        decoder: StreamDecoder | None = None
        try:
            async with timer:
                resp = await self._send(upstream, span, timeouts.connect_seconds)
                if resp.status != 200:
                    raise await self._failure_from_status(resp, translator, backend.key)
                decoder = translator.stream_decoder(
                    model=backend.model, max_event_bytes=self._client.limits.max_event_bytes
                )
                buffered, ended = await _read_until_content(resp, decoder, max_bytes=self._client.limits.max_body_bytes)
                # Committed: from here on nothing may fall back, failures end the stream.
                if first_token_deadline < deadline:
                    timer.reschedule(deadline)  # (a timer move is not free: only when needed)
                answer.ttft = time.perf_counter() - started
                encoder = frontend.stream_encoder(include_usage=parsed.include_usage)
                response = answer.response = _EventStream(
                    status=200, headers=_SSE_HEADERS if headers is None else {**_SSE_HEADERS, **headers}
                )
                await _prepare(response, request)
                await _write_chunks(response, encoder, buffered if guard is None else await guard.feed(buffered))
                if not ended:
                    async for data in resp.iter_any():
                        chunks = decoder.feed(data)
                        await _write_chunks(response, encoder, chunks if guard is None else await guard.feed(chunks))
                    chunks = decoder.close()
                    await _write_chunks(response, encoder, chunks if guard is None else await guard.feed(chunks))
                if guard is not None:
                    await _write_chunks(response, encoder, await guard.finish())
            await _write_eof(response, encoder.finish())
        except ClientGone:
            log.info("client went away mid-stream: model=%s backend=%s", parsed.model, backend.key)
            answer.error_type, answer.error_message = "client_disconnected", "the client closed the connection"
        except AttemptFailed:
            raise
        except StreamStopped as stopped:  # by a guardrail: what it allowed, then its error
            refused = stopped.error
            answer.error_type, answer.error_message = refused.code or refused.type, refused.message
            log.info("stream cut by a guardrail: model=%s backend=%s", parsed.model, backend.key)
            allowed = b"".join([encoder.encode(chunk) for chunk in stopped.chunks])
            with contextlib.suppress(ConnectionError, aiohttp.ClientConnectionResetError):
                await response.write_eof(allowed + encoder.error(refused))  # type: ignore[union-attr]
        except Exception as exc:  # TimeoutError, UpstreamProtocolError, transport errors; others are bugs
            if not isinstance(exc, (TimeoutError, UpstreamProtocolError, *_TRANSPORT_ERRORS)):
                exc = _unexpected(exc, backend.key)
            if response is None:
                answered = resp.status if resp is not None else None  # answered 200, then no content
                limited = first_token_deadline < deadline
                raise _attempt_failure(exc, backend.key, first_token_limited=limited, answered=answered) from None
            await _end_stream_with_error(exc, answer, response, encoder, parsed.model, scrub)
        finally:
            if resp is not None:
                resp.close()
        if decoder is not None:
            state = decoder.state
            answer.usage, answer.response_model, answer.finish_reason = (
                state.usage,
                state.response_model,
                state.finish_reason,
            )
        return answer


async def _end_stream_with_error(
    exc: BaseException,
    answer: Answer,
    response: web.StreamResponse,
    encoder: StreamEncoder,
    model: str,
    scrub: Callable[[str], str],
) -> None:
    """After the first byte: no fallback is safe, so tell the client in its own API's words."""
    timed_out = isinstance(exc, TimeoutError)
    message = "total timeout reached mid-stream" if timed_out else scrub(str(exc) or type(exc).__name__)
    kind = up.TIMEOUT if timed_out else up.STREAM_CUT
    answer.error_type, answer.error_message = kind, message
    error = ApiError(
        504 if timed_out else 502, f"provider {answer.backend} failed mid-stream: {message}", "api_error", kind
    )
    log.warning("stream cut: model=%s backend=%s: %s", model, answer.backend, error.message)
    with contextlib.suppress(ConnectionError, aiohttp.ClientConnectionResetError):  # the client is gone too
        await response.write_eof(encoder.error(error))


def _attempt_failure(
    exc: BaseException, backend: str, *, first_token_limited: bool, answered: int | None
) -> AttemptFailed:
    """A failure before anything reached the client: safe to retry or fall back."""
    if isinstance(exc, TimeoutError):
        what = "first token" if first_token_limited else "answer"
        failure = up.Failure(up.TIMEOUT, backend, f"no {what} in time")
    elif isinstance(exc, UpstreamErrorEvent):  # an error the provider sent in its answer: classed by its status
        failure = up.Failure(up.kind_for_status(exc.status), backend, str(exc)[:300])
    elif isinstance(exc, (UpstreamProtocolError, UpstreamProtocolViolation)):  # malformed, or past a limit
        failure = up.Failure(up.BAD_RESPONSE, backend, str(exc)[:300])
    elif isinstance(exc, UnusableURL):  # this backend's configuration: no retry, the next backend
        failure = up.Failure(up.BACKEND_REJECTED, backend, str(exc))
    elif isinstance(exc, ProxyTunnelFailed):  # names the proxy and its answer, never its credentials
        failure = up.Failure(up.CONNECT_ERROR, backend, str(exc)[:300])
    else:
        failure = up.Failure(up.CONNECT_ERROR, backend, type(exc).__name__)
    return AttemptFailed(failure, answered=answered)


def _unexpected(exc: Exception, backend: str) -> UpstreamProtocolError:
    """An answer a translator or encoder could not handle (a bug, logged with its traceback) is still
    the provider's odd answer to the client: 502, or the stream's error event, never a 500."""
    log.error("could not handle the answer of backend %s", backend, exc_info=exc)
    return UpstreamProtocolError(f"the provider's answer could not be read ({type(exc).__name__})")


def _parsed(parse: ParseBody, translator: Translator, body: bytes, backend: Backend) -> tuple[dict[str, Any], Usage]:
    try:
        return parse(translator, body, backend.model)
    except (UpstreamProtocolError, UnsupportedOperation):
        raise
    except Exception as exc:
        raise _unexpected(exc, backend.key) from None


def _has_content(chunk: ChatChunk) -> bool:
    choices = chunk.get("choices")
    if not choices:
        return bool(chunk.get("usage"))
    for choice in choices:
        delta = choice.get("delta") or {}  # (decoders hand on dicts only: proxy.providers.checks)
        if delta.get("content") or delta.get("tool_calls") or delta.get("refusal") or choice.get("finish_reason"):
            return True
        if delta.get("reasoning_content") or delta.get("reasoning"):  # thinking models' first tokens
            return True
    return False


# What is held back until the first content (each chunk kept as a dict): far above any real answer's
# preamble (a role chunk, a few empty ones; reasoning counts as content), far below a memory problem.
MAX_CHUNKS_BEFORE_CONTENT = 4096


async def _read_until_content(
    resp: Response, decoder: StreamDecoder, *, max_bytes: int
) -> tuple[list[ChatChunk], bool]:
    """Reads upstream until a chunk with content or the end: (chunks so far, whether it ended)."""
    buffered: list[ChatChunk] = []
    size = 0
    async for data in resp.iter_any():
        chunks = decoder.feed(data)
        held = len(buffered)
        buffered.extend(chunks)
        first = next((i for i, chunk in enumerate(chunks) if _has_content(chunk)), -1)
        if first >= 0:
            if held + first > MAX_CHUNKS_BEFORE_CONTENT:  # exact, whatever one read brought with the content
                raise UpstreamProtocolError(f"the provider streamed {held + first} events without content")
            return buffered, False
        size += len(data)
        if len(buffered) > MAX_CHUNKS_BEFORE_CONTENT or size > max_bytes:
            raise UpstreamProtocolError(f"the provider streamed {len(buffered)} events ({size} bytes) without content")
    buffered.extend(decoder.close())
    return buffered, True


async def _write_chunks(response: web.StreamResponse, encoder: StreamEncoder, chunks: list[ChatChunk]) -> None:
    """One write per upstream read: what arrived together leaves together (fewer syscalls)."""
    if not chunks:
        return
    data = b"".join([encoder.encode(chunk) for chunk in chunks])
    if data:
        try:
            await response.write(data)
        except (ConnectionError, aiohttp.ClientConnectionResetError) as exc:
            raise ClientGone() from exc


async def _prepare(response: web.StreamResponse, request: web.Request) -> None:
    try:
        await response.prepare(request)
    except (ConnectionError, aiohttp.ClientConnectionResetError) as exc:
        raise ClientGone() from exc


async def _write_eof(response: web.StreamResponse, data: bytes) -> None:
    try:
        await response.write_eof(data)
    except (ConnectionError, aiohttp.ClientConnectionResetError) as exc:
        raise ClientGone() from exc
