"""Stage 5, attempt: the plan's backends tried in order until one answers.

Per backend, up to the rule's retry attempts (with backoff, or the provider's Retry-After);
then the next backend (a fallback), all within the rule's total timeout. Each attempt gets its
CLIENT span; passive health (`proxy.routing.health`) learns from every result. A failure that is
the request's own fault (a 4xx other than 401/403/404/429) ends the request at once. The call
itself, bytes both ways, is `proxy.request.relay`'s. Each attempt holds a slot of its backend's
in-flight bound (`proxy.request.backpressure`) to its answer's last byte; a backend that is full
fails the attempt with kind `overloaded`, and the next backend is tried.

Every attempt made is appended to the caller's list (also when the request is cancelled), so
the account stage knows them whatever happened.

With limits bound (a `Gate` from the admit stage), each backend's counters are checked and charged
before its first call: a backend whose provider capacity is spent is skipped for the next one, a
budget spent with `reroute` puts its cheaper backends next, and a refusal ends the request.
A backend whose context window the request cannot fit (`Plan.unfit`) is skipped the same way,
with the reason `context_window`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import msgspec
from opentelemetry.trace import Span

from proxy import upstream as up
from proxy.errors import ApiError
from proxy.providers.base import CredentialsUnavailable, Translator, UnsupportedOperation, UpstreamRequest
from proxy.request.backpressure import Backpressure, BackpressureSettings
from proxy.request.outcome import CLIENT_DISCONNECTED, Attempt
from proxy.request.relay import Answer, AttemptFailed
from proxy.routing.health import OutlierDetector
from proxy.routing.table import Candidate, Plan
from proxy.runtime import Runtime
from proxy.snapshot import Backend
from proxy.telemetry import Telemetry

if TYPE_CHECKING:
    from proxy.request.gate import Gate

log = logging.getLogger("modelway.relay")

# Why a backend was skipped without a call: the request cannot fit its model's context window.
CONTEXT_WINDOW = "context_window"

# (translator, backend) -> the request for it (`proxy.request.redact` decides whether it is masked)
BuildRequest = Callable[[Translator, Backend], UpstreamRequest]
# (translator, backend, the request for it, the attempt's span, the loop time of the total deadline)
Call = Callable[[Translator, Backend, UpstreamRequest, Span, float], Awaitable[Answer]]


class Attempts:
    """Built once per sidecar: it holds the backends' passive health across requests."""

    def __init__(
        self, *, telemetry: Telemetry, health: OutlierDetector | None = None, backpressure: Backpressure | None = None
    ) -> None:
        self._telemetry = telemetry
        self.health = health or OutlierDetector()
        self._backpressure = backpressure or Backpressure(BackpressureSettings())

    async def run(
        self,
        *,
        runtime: Runtime,
        plan: Plan,
        model: str,
        operation: str,
        server_span: Span,
        build: BuildRequest,
        call: Call,
        made: list[Attempt],
        gate: Gate | None = None,
    ) -> Answer:
        """The first answer; raises ApiError when none came (all_backends_failed, upstream_rejected,
        a limit's refusal, or every backend full: overloaded)."""
        telemetry, rule, bounds = self._telemetry, plan.rule, self._backpressure.backend
        loop = asyncio.get_running_loop()
        deadline = loop.time() + rule.timeouts.total_seconds
        failures: list[up.Failure] = []
        moved = ""  # why the request moved on to the next backend: a failure's kind, or capacity
        # A list when limits bind: a spent budget's cheaper backends are put right after the current one
        # (iterating a list by index sees what is inserted ahead).
        candidates: Sequence[Candidate] = plan.candidates if gate is None else list(plan.candidates)
        for index, candidate in enumerate(candidates):
            backend = candidate.backend
            if backend.key in plan.unfit:  # its context window is too small for this request
                log.info("backend skipped: model=%s backend=%s reason=%s", model, backend.key, CONTEXT_WINDOW)
                moved = CONTEXT_WINDOW
                continue
            if gate is not None and (counters := gate.counters(backend)):
                admitted = await gate.reserve(backend, counters, span=server_span)  # 4 admit, per backend
                if admitted is not True:
                    if admitted:
                        _put_next(candidates, index, admitted)
                    moved = "budget" if admitted else "capacity"
                    continue
            translator = runtime.translators[backend.provider]
            info = telemetry.backend(runtime, backend.key)  # span names and labels, made once per snapshot
            for retry_number in range(rule.retry.attempts):
                if loop.time() >= deadline:
                    failures.append(up.Failure(up.TIMEOUT, backend.key, "total timeout reached before this attempt"))
                    raise _final_error(model, plan, failures)
                if index > 0 and retry_number == 0:
                    telemetry.fallback_event(server_span, backend=backend.key, reason=moved)
                name, attributes = info.client_span(operation, len(made) + 1, candidate.fallback)
                span = telemetry.client_span(name=name, parent=server_span, attributes=attributes)
                error_type: str | None = "_OTHER"  # cancelled, or an exception no attempt expects
                started = time.perf_counter()
                slot = None  # this backend's in-flight slot, held until the answer's last byte
                try:
                    try:
                        request = build(translator, backend)
                    except (UnsupportedOperation, ApiError) as exc:
                        raise AttemptFailed(up.Failure(up.UNSUPPORTED, backend.key, str(exc))) from None
                    except CredentialsUnavailable as exc:
                        raise AttemptFailed(up.Failure(up.CREDENTIALS_UNAVAILABLE, backend.key, str(exc))) from None
                    slot = bounds.enter(backend.key) or await self._backpressure.wait_backend(
                        backend.key, deadline=deadline
                    )
                    answer = await call(translator, backend, request, span, deadline)
                    self.health.record(backend.key, ok=True)
                    # A stream that failed after its first byte was still answered: the request's
                    # error (and its span's), not this attempt's, unless the provider cut it.
                    error_type = None
                    telemetry.attempt_answered(
                        span,
                        usage=answer.usage,
                        response_model=answer.response_model,
                        ttft=answer.ttft,
                        finish_reason=answer.finish_reason,
                    )
                    if answer.error_type is not None and answer.error_type != CLIENT_DISCONNECTED:
                        telemetry.attempt_failed(span, answer.error_type, answer.error_message)
                    return answer
                except AttemptFailed as exc:
                    # Provider text (error answers, quoted bytes) may echo the key: scrubbed before
                    # it reaches the span, the log or the app.
                    failure = msgspec.structs.replace(exc.failure, message=runtime.scrubber(exc.failure.message))
                    error_type = failure.kind
                    if failure.kind in up.UNHEALTHY:
                        self.health.record(backend.key, ok=False)
                    telemetry.attempt_failed(span, failure.kind, failure.message, status=failure.status or exc.answered)
                finally:
                    if slot is not None:
                        bounds.leave(slot)
                    span.end()
                    made.append(Attempt(backend.key, candidate.fallback, error_type, time.perf_counter() - started))
                failures.append(failure)
                moved = failure.kind
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
                telemetry.retry_event(server_span, backend=backend.key, delay=delay)
                await asyncio.sleep(delay)
            if gate is not None:
                gate.failed(backend.key)  # moving on: what it reserved there is returned
        if gate is not None and not failures:  # no call made: every backend's capacity was spent
            refusal = gate.capacity_refusal(server_span)
            if refusal is not None:
                raise refusal
        raise self._backpressure.backends_full(route=plan.route.name, model=model, failures=failures) or _final_error(
            model, plan, failures
        )


def _put_next(candidates: Sequence[Candidate], index: int, chosen: tuple[Candidate, ...]) -> None:
    """`chosen` right after `index`, and not again later."""
    assert isinstance(candidates, list)
    keys = {c.backend.key for c in chosen}
    candidates[index + 1 :] = [*chosen, *(c for c in candidates[index + 1 :] if c.backend.key not in keys)]


def _final_error(model: str, plan: Plan, failures: list[up.Failure]) -> ApiError:
    summary = "; ".join(f.summary() for f in failures) or "no attempt could be made within the time limit"
    kinds = {f.kind for f in failures}
    if kinds == {up.RATE_LIMITED}:
        status = 429
    elif kinds == {up.UNSUPPORTED}:
        status = 400
    elif kinds == {up.CREDENTIALS_UNAVAILABLE}:  # the gateway's own credentials, not the app's fault
        message = f"no backend for model {model!r} has credentials to call its provider with: {summary}"
        return ApiError(503, message, "api_error", up.CREDENTIALS_UNAVAILABLE)
    elif not failures or failures[-1].kind == up.TIMEOUT:
        status = 504
    else:
        status = 502
    message = f"all backends failed for model {model!r} (route {plan.route.name!r}, rule {plan.rule.name!r}): {summary}"
    return ApiError(status, message, "api_error" if status >= 500 else "invalid_request_error", "all_backends_failed")
