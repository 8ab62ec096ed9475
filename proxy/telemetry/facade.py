"""Traces: a server span per request, a CLIENT span per provider attempt.

Names and attributes follow the OpenTelemetry GenAI semantic conventions as of
semconv v1.37.0 (`gen_ai.provider.name`, `gen_ai.operation.name`, ...), plus
`modelway.*` attributes of our own, among them the request's cost in USD
(`modelway.cost.usd`, from the provider's per-model pricing in the snapshot).
Prompt and completion text are recorded only when
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true, credentials redacted
(`proxy.telemetry.content`). Metrics are recorded through the same object
(`proxy.telemetry.sidecar_metrics`). All of it is built once in `__main__`
(`proxy.telemetry.configure.build_telemetry`, from the OTEL_* variables) and passed in.

The request path calls it while a request's attempts run (CLIENT spans, how each ended, retry
and fallback events on the server span) and once at its end with the request's
`proxy.request.outcome.Outcome` (`finish`): the server span's closing attributes and every
metric of the request are read from that one record.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, MutableMapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import (
    NonRecordingSpan,
    NoOpTracer,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from proxy.providers.base import Usage
from proxy.runtime import Runtime
from proxy.telemetry.backends import BackendCatalog, BackendInfo
from proxy.telemetry.lean_span import LeanSpan, SharedAttributes
from proxy.telemetry.sidecar_metrics import CLIENT_GONE, ERROR, OK, NoMetrics

if TYPE_CHECKING:
    from proxy.limits.model import CounterState
    from proxy.request.outcome import Outcome

log = logging.getLogger("modelway.telemetry")

SEMCONV_VERSION = "1.37.0"
_TRACEPARENT_00 = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


class Telemetry:
    def __init__(
        self,
        *,
        tracer: Tracer | None = None,
        propagator: TextMapPropagator | None = None,
        metrics: NoMetrics | None = None,
        capture_content: bool = False,
    ) -> None:
        self.tracer: Tracer = tracer or NoOpTracer()
        # the lean tracer's: no Context to build
        self._start_child: Callable[[str, Span, SpanKind, Mapping[str, Any]], Span] | None = getattr(
            self.tracer, "start_child", None
        )
        self.propagator = propagator or TraceContextTextMapPropagator()
        self.metrics = metrics or NoMetrics()
        self.capture_content = capture_content
        self.backends = BackendCatalog()
        self._request_spans: dict[tuple[str, ...], tuple[str, SharedAttributes]] = {}
        self.closers: list[Any] = []  # providers/exporters to shut down at exit (flushing them)
        self.metric_export: Any = None  # proxy.telemetry.otlp_metrics.MetricExport, when metrics go out by OTLP
        self.failures = 0  # recordings that raised (and were dropped): a bug, never the request's fault
        self._failure_logged = -1e9

    def _failed(self, what: str) -> None:
        """Telemetry never fails a request: what could not be recorded is dropped and logged, at most
        once a minute (a hostile provider must not flood the log either)."""
        self.failures += 1
        now = time.monotonic()
        if now - self._failure_logged >= 60:
            self._failure_logged = now
            log.error(
                "recording %s failed (%d so far); the request is answered all the same",
                what,
                self.failures,
                exc_info=True,
            )

    def backend(self, runtime: Runtime, key: str) -> BackendInfo:
        return self.backends.get(runtime, key)

    def request_span(
        self, *, operation: str, model: str, route: str, rule: str, data_class: str, decision: str
    ) -> tuple[str, SharedAttributes]:
        """The name and attributes of a request's SERVER span, made once per combination (a
        served model, its route and rule, a class, a decision: a few per route)."""
        key = (operation, model, route, rule, data_class, decision)
        found = self._request_spans.get(key)
        if found is None:
            if len(self._request_spans) >= 4096:  # routes come and go with snapshots
                self._request_spans.clear()
            found = self._request_spans[key] = (
                f"{operation} {model}",
                SharedAttributes(
                    {
                        "gen_ai.operation.name": operation,
                        "gen_ai.request.model": model,
                        "modelway.route": route,
                        "modelway.rule": rule,
                        "modelway.data_class": data_class,
                        "modelway.policy.decision": decision,
                    }
                ),
            )
        return found

    def trace_id(self, span: Span) -> str:
        """The span's trace id as 32 hex digits, or "" when it has none (tracing off)."""
        trace_id = span.get_span_context()[0]  # (the tuple's item: SpanContext.trace_id is a Python property)
        return trace_id.to_bytes(16, "big").hex() if trace_id else ""  # (twice as fast as format)

    # --- while a request's attempts run -------------------------------------------

    def fallback_event(self, server_span: Span, *, backend: str, reason: str) -> None:
        """The request moves on to `backend`, after a failure of kind `reason`."""
        server_span.add_event("modelway.fallback", {"modelway.backend": backend, "modelway.fallback.reason": reason})

    def limit_refused_event(self, server_span: Span, state: CounterState) -> None:
        """A limit (or a provider's capacity, or a spent budget) turned the request away or rerouted it."""
        counter = state.counter
        server_span.add_event(
            "modelway.limit.refused",
            {
                "modelway.limit.owner": counter.owner,
                "modelway.limit.name": counter.name,
                "modelway.limit.measure": counter.measure,
                "modelway.limit.retry_after_s": round(state.retry_after_seconds, 3),
            },
        )

    def retry_event(self, server_span: Span, *, backend: str, delay: float) -> None:
        server_span.add_event(
            "modelway.retry", {"modelway.backend": backend, "modelway.retry.delay_s": round(delay, 3)}
        )

    def attempt_answered(
        self,
        span: Span,
        *,
        usage: Usage,
        response_model: str | None,
        ttft: float | None = None,
        finish_reason: str | None = None,
    ) -> None:
        """The answer's attributes on an attempt's CLIENT span, in one call."""
        if type(span) is not LeanSpan and not span.is_recording():  # (tracing off: nothing to build)
            return
        attributes: dict[str, Any] = {"http.response.status_code": 200}
        if ttft is not None:
            attributes["modelway.time_to_first_token"] = ttft
        if finish_reason:
            attributes["gen_ai.response.finish_reasons"] = (finish_reason,)
        if usage.input_tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
        if usage.output_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
        cache_attributes(attributes, usage)
        if response_model:
            attributes["gen_ai.response.model"] = response_model
        # Token counts are ints (the providers' checks), the time a float: plain when the texts are str.
        if type(span) is LeanSpan and type(response_model or "") is str and type(finish_reason or "") is str:
            span.set_plain(attributes)
        else:
            span.set_attributes(attributes)

    def attempt_failed(self, span: Span, error_type: str, message: str, *, status: int | None = None) -> None:
        """How an attempt failed, on its CLIENT span (`status`: the provider's answer's, if any)."""
        set_error(span, error_type, message)
        if status is not None:
            span.set_attribute("http.response.status_code", status)

    # --- at the end of a request ------------------------------------------------------

    def finish(self, span: Span | None, outcome: Outcome, *, runtime: Runtime | None) -> None:
        """Everything a request's outcome says, in one place: its server span's closing attributes
        (backend, response model, usage, cost, time to first token, error) and its metrics (the
        request, each attempt, fallback and retry, a policy's refusal or reroute, what the
        personal-data scan found). `span` is None for a request rejected before it had one."""
        try:
            self._finish(span, outcome, runtime)
        except Exception:
            self._failed("a request's span attributes and metrics")

    def _finish(self, span: Span | None, outcome: Outcome, runtime: Runtime | None) -> None:
        metrics = self.metrics
        if outcome.personal_data:
            metrics.personal_data(outcome.personal_data)
        if outcome.redacted:
            metrics.redactions(outcome.redacted)
            if span is not None and span.is_recording():  # counts by kind, never the values
                span.set_attributes(
                    {f"modelway.redaction.count.{kind}": count for kind, count in outcome.redacted.items()}
                    | {"modelway.redaction.policy": ", ".join(outcome.redacted_by)}
                )
        if span is not None:
            if outcome.backend is not None and span.is_recording():  # what the answer says, in one call
                usage = outcome.usage
                attributes: dict[str, Any] = {"modelway.backend": outcome.backend}
                if outcome.response_model is not None:
                    attributes["gen_ai.response.model"] = outcome.response_model
                if usage.input_tokens is not None:
                    attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
                if usage.output_tokens is not None:
                    attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
                cache_attributes(attributes, usage)
                if outcome.cost is not None:
                    attributes["modelway.cost.usd"] = outcome.cost
                if outcome.ttft is not None:
                    attributes["modelway.time_to_first_token"] = outcome.ttft
                if type(span) is LeanSpan and type(outcome.response_model or "") is str:  # plain: taken whole
                    span.set_plain(attributes)
                else:
                    span.set_attributes(attributes)
            if outcome.error_type is not None:
                set_error(span, outcome.error_type, outcome.error_message)
        if runtime is None or not outcome.decision or type(metrics) is NoMetrics:  # no route chosen, or metrics off
            return
        route, data_class = outcome.route, outcome.data_class
        if outcome.decision == "refuse":
            for policy in outcome.policies:
                metrics.policy_refusal(route=route, policy=policy, data_class=data_class)
            return
        if outcome.decision == "reroute":
            for policy in outcome.policies:
                metrics.policy_reroute(route=route, policy=policy, data_class=data_class)
        operation, previous, info, attempts = outcome.operation, None, None, outcome.attempts
        error_type, backend = outcome.error_type, outcome.backend
        attempt_seconds = None
        if len(attempts) == 1 and attempts[0].error_type is None and attempts[0].backend == backend:
            # The common case, one attempt that answered: measured with the request, on its backend's labels.
            info, attempt_seconds = self.backends.get(runtime, backend), attempts[0].seconds
        else:
            for attempt in attempts:
                info = self.backends.get(runtime, attempt.backend)
                if previous is not None:  # the attempt before failed: this one is a retry or a fallback
                    if previous.backend == attempt.backend:
                        metrics.retry(route=route, info=info, reason=previous.error_type or "")
                    else:
                        metrics.fallback(route=route, info=info, reason=previous.error_type or "")
                metrics.attempt(
                    operation=operation, route=route, info=info, error_type=attempt.error_type, seconds=attempt.seconds
                )
                previous = attempt
            if backend is None:
                info = None
            elif previous is None or previous.backend != backend:  # (the answer is the last attempt's)
                info = self.backends.get(runtime, backend)
        usage = outcome.usage
        metrics.request(
            operation=operation,
            route=route,
            info=info,
            outcome=OK if error_type is None else CLIENT_GONE if error_type == CLIENT_GONE else ERROR,
            error_type=error_type,
            seconds=outcome.duration,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cached_input_tokens,
            cost=outcome.cost,
            ttft=outcome.ttft,
            attempt_seconds=attempt_seconds,
        )

    def capture(
        self, span: Span, *, runtime: Runtime, request: dict[str, Any], response: dict[str, Any] | None = None
    ) -> None:
        """Prompt (and, given, completion) text on the span: only when content capture is on."""
        if not self.capture_content or not span.is_recording():
            return
        from proxy.telemetry.content import input_attributes, output_attributes

        try:
            # The input is recorded when the request starts, the answer when it is there.
            span.set_attributes(
                input_attributes(request, runtime.scrubber)
                if response is None
                else output_attributes(response, runtime.scrubber)
            )
        except Exception:
            self._failed("message content on a span")

    def capturing(self, frontend: Any, span: Span, *, runtime: Runtime, request: dict[str, Any]) -> Any:
        """`frontend`, or (content capture on) a wrapper whose stream encoders collect the streamed
        answer and record it on `span` when the stream completes."""
        if not self.capture_content or not span.is_recording():
            return frontend
        from proxy.telemetry.content import StreamCapture

        return StreamCapture(
            frontend, on_done=lambda response: self.capture(span, runtime=runtime, request=request, response=response)
        )

    def shutdown(self) -> None:
        for closer in self.closers:
            closer.shutdown()

    def extract(self, headers: Mapping[str, str]) -> Context:
        # The common case, a version-00 traceparent and no tracestate, parsed here: the generic
        # propagator's getters, regex and context copies cost ~6 us per request.
        if type(self.propagator) is TraceContextTextMapPropagator and "tracestate" not in headers:
            value = headers.get("traceparent")
            if value is None:
                return Context()
            if len(value) == 55 and _TRACEPARENT_00.fullmatch(value):
                trace_id, span_id = int(value[3:35], 16), int(value[36:52], 16)
                if trace_id and span_id:
                    flags = TraceFlags(int(value[53:55], 16))
                    return trace.set_span_in_context(
                        NonRecordingSpan(SpanContext(trace_id, span_id, True, flags)), Context()
                    )
        return self.propagator.extract(headers)

    def inject(self, headers: MutableMapping[str, str], span: Span) -> None:
        context = span.get_span_context()
        # A SpanContext is a tuple; unpacked once instead of four property reads.
        trace_id, span_id, _, flags, trace_state, valid = context
        # (the API's empty TraceState, most spans' own, by identity: its emptiness is a Python-level __len__)
        if type(self.propagator) is TraceContextTextMapPropagator and (
            trace_state is DEFAULT_TRACE_STATE or not trace_state
        ):
            if valid:  # as the generic propagator: nothing for an invalid context
                headers["traceparent"] = "".join(
                    (  # bytes.hex() is twice as fast as a format spec
                        "00-",
                        trace_id.to_bytes(16, "big").hex(),
                        "-",
                        span_id.to_bytes(8, "big").hex(),
                        "-01" if flags == 1 else "-00" if flags == 0 else f"-{flags:02x}",
                    )
                )
            return
        self.propagator.inject(headers, context=trace.set_span_in_context(span))

    def server_span(self, *, name: str, parent: Context, attributes: dict[str, Any]) -> AbstractContextManager[Span]:
        # Not "current": nothing reads the ambient context (client spans get their parent
        # explicitly), and attaching/detaching it costs on every request.
        return _ending(self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes))

    def client_span(self, *, name: str, parent: Span, attributes: dict[str, Any]) -> Span:
        if self._start_child is not None:
            child: Span = self._start_child(name, parent, SpanKind.CLIENT, attributes)
            return child
        return self.tracer.start_span(
            name, context=trace.set_span_in_context(parent, Context()), kind=SpanKind.CLIENT, attributes=attributes
        )


class _ending(AbstractContextManager[Span]):  # noqa: N801  (a class: a generator-based one costs ~1 us more)
    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def __enter__(self) -> Span:
        return self.span

    def __exit__(self, *exc: object) -> None:
        self.span.end()


def set_error(span: Span, error_type: str, message: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, message))


def cache_attributes(attributes: dict[str, Any], usage: Usage) -> None:
    """The prompt cache's part of the input (OTel GenAI semconv; both are counted in input_tokens too)."""
    if usage.cached_input_tokens is not None:
        attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
    if usage.cache_write_input_tokens is not None:
        attributes["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_input_tokens
