"""Calling providers: attempts, retries, fallbacks, and streaming relayed chunk by chunk.

The rule that keeps clients safe: a request may move to another attempt only
while nothing has been sent to the client. Once the first streamed byte is
out, a failure ends the stream with an error event in the client's API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry.trace import Span

from proxy import upstream as up
from proxy.errors import ApiError
from proxy.frontends.base import Frontend, ParsedChat
from proxy.http_client import HttpClient, Response, UpstreamProtocolViolation
from proxy.http_request import UnusableURL
from proxy.providers.base import (
    ChatChunk,
    StreamDecoder,
    Translator,
    UnsupportedOperation,
    UpstreamProtocolError,
    UpstreamRequest,
    Usage,
)
from proxy.routing.health import OutlierDetector
from proxy.routing.table import Candidate, Plan
from proxy.runtime import Runtime
from proxy.snapshot import Rule
from proxy.telemetry import Telemetry, set_error

log = logging.getLogger("modelway.relay")

# Upstream trouble: refused/reset connections, bodies cut short (http_client.UpstreamDisconnected).
_TRANSPORT_ERRORS = (OSError,)
_SSE_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no"}

BuildRequest = Callable[[Translator, str], UpstreamRequest]
ParseBody = Callable[[Translator, bytes, str], tuple[dict[str, Any], Usage]]


class _EventStream(web.StreamResponse):
    # The headers leave with the first events, in one write: we always have events in hand
    # when the response starts (aiohttp sends them in a write of their own otherwise).
    _send_headers_immediately = False


class ClientGone(Exception):
    """Writing to the app failed: it disconnected. Not the provider's fault."""


class _AttemptFailed(Exception):
    def __init__(self, failure: up.Failure) -> None:
        super().__init__(failure.summary())
        self.failure = failure


@dataclass(slots=True)
class _Outcome:
    """What the caller needs to finish its server span."""

    usage: Usage = field(default_factory=Usage)
    backend: str | None = None
    response_model: str | None = None
    # Unary calls: the provider's body as received, and whether it is already in the
    # OpenAI shape (then an OpenAI client can get these bytes without a re-encode).
    raw: bytes = b""
    native_openai: bool = False
    ttft: float | None = None  # streams: seconds to the first content
    error_type: str | None = None  # streams: how a committed stream failed (cut, timeout, client gone)


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


def _final_error(model: str, plan: Plan, failures: list[up.Failure]) -> ApiError:
    summary = "; ".join(f.summary() for f in failures) or "no attempt could be made within the time limit"
    kinds = {f.kind for f in failures}
    if kinds == {up.RATE_LIMITED}:
        status = 429
    elif kinds == {up.UNSUPPORTED}:
        status = 400
    elif not failures or failures[-1].kind == up.TIMEOUT:
        status = 504
    else:
        status = 502
    message = f"all backends failed for model {model!r} (route {plan.route.name!r}, rule {plan.rule.name!r}): {summary}"
    return ApiError(status, message, "api_error" if status >= 500 else "invalid_request_error", "all_backends_failed")


class Relay:
    def __init__(self, *, client: HttpClient, telemetry: Telemetry, health: OutlierDetector | None = None) -> None:
        self._client = client
        self._telemetry = telemetry
        self.health = health or OutlierDetector()

    # --- the attempt loop, shared by every operation ---------------------------------

    async def _attempts(
        self,
        *,
        runtime: Runtime,
        plan: Plan,
        model: str,
        server_span: Span,
        operation: str,
        build: BuildRequest,
        attempt: Callable[[Translator, Candidate, UpstreamRequest, Span, float], Any],
    ) -> Any:
        rule: Rule = plan.rule
        loop = asyncio.get_running_loop()
        deadline = loop.time() + rule.timeouts.total_seconds
        failures: list[up.Failure] = []
        number = 0
        metrics, route = self._telemetry.metrics, plan.route.name
        for index, candidate in enumerate(plan.candidates):
            backend = candidate.backend
            translator = runtime.translators[backend.provider]
            info = self._telemetry.backend(runtime, backend.key)  # metric labels, computed once per snapshot
            if index > 0:
                reason = failures[-1].kind if failures else ""
                server_span.add_event(
                    "modelway.fallback", {"modelway.backend": backend.key, "modelway.fallback.reason": reason}
                )
                metrics.fallback(route=route, info=info, reason=reason)
            for retry_number in range(rule.retry.attempts):
                if loop.time() >= deadline:
                    failures.append(up.Failure(up.TIMEOUT, backend.key, "total timeout reached before this attempt"))
                    raise _final_error(model, plan, failures)
                number += 1
                name, attributes = info.client_span(operation, number, candidate.fallback)
                span = self._telemetry.client_span(name=name, parent=server_span, attributes=attributes)
                error_type: str | None = "_OTHER"  # cancelled, or an exception no attempt expects
                started = time.perf_counter()
                try:
                    try:
                        request = build(translator, backend.model)
                    except (UnsupportedOperation, ApiError) as exc:
                        raise _AttemptFailed(up.Failure(up.UNSUPPORTED, backend.key, str(exc))) from None
                    result = await attempt(translator, candidate, request, span, deadline)
                    self.health.record(backend.key, ok=True)
                    error_type = None
                    return result
                except _AttemptFailed as exc:
                    # Provider text (error answers, quoted bytes) may echo the key: scrubbed before
                    # it reaches the span, the log or the app.
                    failure = replace(exc.failure, message=runtime.scrubber(exc.failure.message))
                    error_type = failure.kind
                    if failure.kind in up.UNHEALTHY:
                        self.health.record(backend.key, ok=False)
                    set_error(span, failure.kind, failure.message)
                    if failure.status is not None:
                        span.set_attribute("http.response.status_code", failure.status)
                finally:
                    span.end()
                    metrics.attempt(
                        operation=operation,
                        route=route,
                        info=info,
                        error_type=error_type,
                        seconds=time.perf_counter() - started,
                    )
                failures.append(failure)
                log.info("attempt failed: model=%s %s", model, failure.summary())
                if not up.worth_another_backend(failure.kind):
                    raise ApiError(
                        failure.status or 400,
                        f"provider {backend.key} rejected the request: {failure.message}",
                        "invalid_request_error",
                        "upstream_rejected",
                    )
                if not up.retryable(failure.kind, rule.retry) or retry_number + 1 >= rule.retry.attempts:
                    break
                delay = up.backoff_delay(rule.retry, retry_number + 1, failure)
                if delay is None or loop.time() + delay >= deadline:
                    break
                server_span.add_event(
                    "modelway.retry", {"modelway.backend": backend.key, "modelway.retry.delay_s": round(delay, 3)}
                )
                metrics.retry(route=route, info=info, reason=failure.kind)
                await asyncio.sleep(delay)
        raise _final_error(model, plan, failures)

    async def _send(self, request: UpstreamRequest, span: Span, connect: float) -> Response:
        headers = dict(request.headers)
        self._telemetry.inject(headers, span)
        # The connect limit applies to new connections only: a pooled one needs no timer of its
        # own. The caller's deadline bounds everything else.
        return await self._client.post(request.url, body=request.body, headers=headers, connect_timeout=connect)

    async def _failure_from_status(self, resp: Response, translator: Translator, backend: str) -> _AttemptFailed:
        # Only the start of an error body is read: enough for its message, never a provider's 100 MB.
        body = await resp.read(self._client.limits.max_error_body_bytes, truncate=True)
        kind = up.kind_for_status(resp.status)
        message = translator.error_message(resp.status, body)[:300]
        if kind == up.BAD_RESPONSE:  # 201, 204, 3xx...: not an answer, and not an error the API defines
            message = f"unexpected status {resp.status} for this call: {message}"[:300]
        return _AttemptFailed(
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
        runtime: Runtime,
        plan: Plan,
        model: str,
        server_span: Span,
        operation: str,
        build: BuildRequest,
        parse: ParseBody,
    ) -> tuple[dict[str, Any], _Outcome]:
        outcome = _Outcome()

        async def attempt(
            translator: Translator, candidate: Candidate, request: UpstreamRequest, span: Span, deadline: float
        ) -> Any:
            backend = candidate.backend
            resp: Response | None = None
            try:
                async with asyncio.timeout_at(deadline):
                    resp = await self._send(request, span, plan.rule.timeouts.connect_seconds)
                    async with resp:
                        if resp.status != 200:
                            raise await self._failure_from_status(resp, translator, backend.key)
                        body = await resp.read()  # at most the client's max_body_bytes
                data, usage = _parsed(parse, translator, body, backend)
            except (TimeoutError, UpstreamProtocolError, *_TRANSPORT_ERRORS) as exc:
                if resp is not None:  # answered 200, then failed
                    span.set_attribute("http.response.status_code", resp.status)
                raise _attempt_failure(exc, backend.key, first_token_limited=False) from None
            _record_answer(span, usage, data.get("model"), status=200)
            outcome.usage, outcome.backend, outcome.response_model = usage, backend.key, data.get("model")
            outcome.raw, outcome.native_openai = body, translator.native_openai
            return data

        data = await self._attempts(
            runtime=runtime,
            plan=plan,
            model=model,
            server_span=server_span,
            operation=operation,
            build=build,
            attempt=attempt,
        )
        return data, outcome

    # --- streaming chat -------------------------------------------------------------

    @staticmethod
    async def _end_stream_with_error(
        exc: BaseException,
        response: web.StreamResponse,
        encoder: Any,
        span: Span,
        server_span: Span,
        model: str,
        backend: str,
        scrub: Callable[[str], str],
    ) -> None:
        """After the first byte: no fallback is safe, so tell the client in its own API's words."""
        timed_out = isinstance(exc, TimeoutError)
        message = "total timeout reached mid-stream" if timed_out else scrub(str(exc) or type(exc).__name__)
        kind = up.TIMEOUT if timed_out else up.STREAM_CUT
        set_error(span, kind, message)
        set_error(server_span, kind, message)
        error = ApiError(
            504 if timed_out else 502, f"provider {backend} failed mid-stream: {message}", "api_error", kind
        )
        log.warning("stream cut: model=%s backend=%s: %s", model, backend, error.message)
        with contextlib.suppress(ConnectionError, aiohttp.ClientConnectionResetError):  # the client is gone too
            await response.write_eof(encoder.error(error))

    async def stream_chat(
        self,
        *,
        request: web.Request,
        runtime: Runtime,
        plan: Plan,
        parsed: ParsedChat,
        frontend: Frontend,
        server_span: Span,
    ) -> tuple[web.StreamResponse, _Outcome]:
        outcome = _Outcome()
        timeouts = plan.rule.timeouts
        started = time.monotonic()

        async def attempt(
            translator: Translator, candidate: Candidate, upstream_request: UpstreamRequest, span: Span, deadline: float
        ) -> Any:
            backend = candidate.backend
            loop = asyncio.get_running_loop()
            first_token_deadline = deadline
            if timeouts.first_token_seconds is not None:
                first_token_deadline = min(deadline, loop.time() + timeouts.first_token_seconds)
            # One timer for the whole attempt: the first-token deadline until content
            # arrives, then moved out to the total deadline.
            timer = asyncio.timeout_at(first_token_deadline)
            resp: Response | None = None
            response: web.StreamResponse | None = None
            encoder: Any = None
            decoder: StreamDecoder | None = None
            try:
                async with timer:
                    resp = await self._send(upstream_request, span, timeouts.connect_seconds)
                    if resp.status != 200:
                        raise await self._failure_from_status(resp, translator, backend.key)
                    decoder = translator.stream_decoder(
                        model=backend.model, max_event_bytes=self._client.limits.max_event_bytes
                    )
                    buffered, ended = await _read_until_content(
                        resp, decoder, max_bytes=self._client.limits.max_body_bytes
                    )
                    # Committed: from here on nothing may fall back, failures end the stream.
                    if first_token_deadline < deadline:
                        timer.reschedule(deadline)  # (a timer move is not free: only when needed)
                    # (the spans get it with the rest at the end: one call each)
                    outcome.backend, outcome.ttft = backend.key, time.monotonic() - started
                    encoder = frontend.stream_encoder(include_usage=parsed.include_usage)
                    response = _EventStream(status=200, headers=_SSE_HEADERS)
                    await _prepare(response, request)
                    await _write_chunks(response, encoder, buffered)
                    if not ended:
                        async for data in resp.iter_any():
                            await _write_chunks(response, encoder, decoder.feed(data))
                        await _write_chunks(response, encoder, decoder.close())
                await _write_eof(response, encoder.finish())
            except ClientGone:
                log.info("client went away mid-stream: model=%s backend=%s", parsed.model, backend.key)
                set_error(server_span, "client_disconnected", "the client closed the connection")
                outcome.error_type = "client_disconnected"
                return response
            except _AttemptFailed:
                raise
            except Exception as exc:  # TimeoutError, UpstreamProtocolError, transport errors; others are bugs
                if not isinstance(exc, (TimeoutError, UpstreamProtocolError, *_TRANSPORT_ERRORS)):
                    exc = _unexpected(exc, backend.key)
                if response is None:
                    if resp is not None:  # answered 200, then failed before any content
                        span.set_attribute("http.response.status_code", resp.status)
                    limited = first_token_deadline < deadline
                    raise _attempt_failure(exc, backend.key, first_token_limited=limited) from None
                outcome.error_type = up.TIMEOUT if isinstance(exc, TimeoutError) else up.STREAM_CUT
                await self._end_stream_with_error(
                    exc, response, encoder, span, server_span, parsed.model, backend.key, runtime.scrubber
                )
            finally:
                if resp is not None:
                    resp.close()
            if decoder is not None:
                _record_answer(
                    span,
                    decoder.state.usage,
                    decoder.state.response_model,
                    status=200,
                    ttft=outcome.ttft,
                    finish_reason=decoder.state.finish_reason,
                )
                outcome.usage, outcome.response_model = decoder.state.usage, decoder.state.response_model
            return response

        response = await self._attempts(
            runtime=runtime,
            plan=plan,
            model=parsed.model,
            server_span=server_span,
            operation="chat",
            build=lambda translator, model: translator.chat_request(parsed.request, model=model, stream=True),
            attempt=attempt,
        )
        return response, outcome


def _attempt_failure(exc: BaseException, backend: str, *, first_token_limited: bool) -> _AttemptFailed:
    """A failure before anything reached the client: safe to retry or fall back."""
    if isinstance(exc, TimeoutError):
        what = "first token" if first_token_limited else "answer"
        return _AttemptFailed(up.Failure(up.TIMEOUT, backend, f"no {what} in time"))
    if isinstance(exc, (UpstreamProtocolError, UpstreamProtocolViolation)):  # malformed, or past a limit
        return _AttemptFailed(up.Failure(up.BAD_RESPONSE, backend, str(exc)[:300]))
    if isinstance(exc, UnusableURL):  # this backend's configuration: no retry, the next backend
        return _AttemptFailed(up.Failure(up.BACKEND_REJECTED, backend, str(exc)))
    return _AttemptFailed(up.Failure(up.CONNECT_ERROR, backend, type(exc).__name__))


def _unexpected(exc: Exception, backend: str) -> UpstreamProtocolError:
    """An answer a translator or encoder could not handle (a bug, logged with its traceback) is still
    the provider's odd answer to the client: 502, or the stream's error event, never a 500."""
    log.error("could not handle the answer of backend %s", backend, exc_info=exc)
    return UpstreamProtocolError(f"the provider's answer could not be read ({type(exc).__name__})")


def _parsed(parse: ParseBody, translator: Translator, body: bytes, backend: Any) -> tuple[dict[str, Any], Usage]:
    try:
        return parse(translator, body, backend.model)
    except (UpstreamProtocolError, UnsupportedOperation):
        raise
    except Exception as exc:
        raise _unexpected(exc, backend.key) from None


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
        buffered.extend(chunks)
        if any(_has_content(c) for c in chunks):
            return buffered, False
        size += len(data)
        if len(buffered) > MAX_CHUNKS_BEFORE_CONTENT or size > max_bytes:
            raise UpstreamProtocolError(f"the provider streamed {len(buffered)} events ({size} bytes) without content")
    buffered.extend(decoder.close())
    return buffered, True


async def _write_chunks(response: web.StreamResponse, encoder: Any, chunks: list[ChatChunk]) -> None:
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


def _record_answer(
    span: Span,
    usage: Usage,
    response_model: Any,
    *,
    status: int,
    ttft: float | None = None,
    finish_reason: str | None = None,
) -> None:
    """The answer's attributes on the attempt's span, in one call (a failed attempt's status is set
    where it fails)."""
    attributes: dict[str, Any] = {"http.response.status_code": status}
    if ttft is not None:
        attributes["modelway.time_to_first_token"] = ttft
    if finish_reason:
        attributes["gen_ai.response.finish_reasons"] = (finish_reason,)
    if usage.input_tokens is not None:
        attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
    if usage.output_tokens is not None:
        attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
    if isinstance(response_model, str) and response_model:
        attributes["gen_ai.response.model"] = response_model
    span.set_attributes(attributes)
