"""A lean span recorder behind the OpenTelemetry tracing API.

The SDK's ``Tracer.start_span`` / ``Span`` cost the sidecar ~20 % of its event
loop (locked BoundedAttributes, sampler Decision objects, ReadableSpan copies,
a BatchSpanProcessor with its own locks). The sidecar makes two or three spans
per request and uses a small part of the API, so this module implements just
that part, cheaply:

* ``LeanTracerProvider.get_tracer()`` -> ``LeanTracer`` (an API ``Tracer``);
  ``start_span`` returns a ``LeanSpan`` (an API ``Span``, in ``proxy.telemetry.lean_span``)
  keeping plain Python values: an attributes dict, events as ``(name, attributes, time)``
  tuples, times as int nanoseconds, which ``proxy.telemetry.otlp_encode`` reads from its slots.
* Sampling from ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (always_on,
  always_off, traceidratio and their parentbased_* forms); an unsampled span is
  an API ``NonRecordingSpan`` that still propagates a valid context. The sampler,
  resource, scope and span limits live in ``proxy.telemetry.sampling``.
* An ended span is encoded into its OTLP bytes at once, into a bounded queue
  (`proxy.telemetry.span_queue`): nothing of it stays alive but those bytes. When
  the queue is full, spans are dropped and counted, never waited for. One daemon
  thread exports every ``OTEL_BSP_SCHEDULE_DELAY`` ms or as soon as a batch is
  full, through ``proxy.telemetry.otlp_export.OTLPHttpSpanExporter``.

Spans are meant to be created and ended on one thread (the event loop). Using
them from several threads is safe for the queue, not for one span's fields.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from random import getrandbits
from typing import TYPE_CHECKING, Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from proxy.telemetry.lean_span import PLAIN, LeanSpan, SharedAttributes
from proxy.telemetry.sampling import _MASK64, LeanResource, LeanScope, Sampler, SpanLimits, build_resource
from proxy.telemetry.span_queue import SpanQueue

if TYPE_CHECKING:
    from proxy.telemetry.span_queue import EncodedSpanExporter

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_EMPTY_TRACE_STATE = DEFAULT_TRACE_STATE  # the API's own: the encoder skips it by identity
# SpanContext(...) without its Python-level __new__ (~40 bytecodes a span): a span's context is always
# valid (its ids are drawn non-zero within range, or taken from a valid parent) and its flags and trace
# state are never None, so the tuple that __new__ would build is built directly, is_valid True.
_new_context = tuple.__new__


# ---------------------------------------------------------------------------
# the tracer


class LeanTracer(trace.Tracer):
    def __init__(
        self, *, resource: LeanResource, scope: LeanScope, sampler: Sampler, limits: SpanLimits, queue: SpanQueue
    ) -> None:
        self.resource = resource
        self.scope = scope
        self.sampler = sampler
        self.limits = limits
        self.queue = queue

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        # The parent: the span in `context` (or the current context); INVALID_SPAN when there is none. An
        # empty Context (a request without a traceparent) has none: no lookup.
        parent = trace.get_current_span(context) if context is None or context else None
        return self._start(
            name, None if parent is None else parent.get_span_context(), kind, attributes, links, start_time
        )

    def _start(
        self,
        name: str,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Mapping[str, Any] | None,
        links: Sequence[Link] | None,
        start_time: int | None,
    ) -> trace.Span:
        parent_flags = 0
        if parent is not None:
            # A SpanContext is a tuple (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid);
            # its properties cost ~0.1 us each, unpacking it once much less.
            trace_id, _, _, parent_flags, trace_state, valid = parent
            if not valid:
                parent = None
        if parent is None:
            trace_id = getrandbits(128) or 1  # non-zero: 1 in 2**128 is not worth a loop
            trace_state = _EMPTY_TRACE_STATE
        span_id = getrandbits(64) or 1
        sampler = self.sampler
        if sampler.parent_based and parent is not None:
            sampled = parent_flags & 1
        else:
            sampled = (trace_id & _MASK64) < sampler.bound
        if not sampled:
            return NonRecordingSpan(
                _new_context(SpanContext, (trace_id, span_id, False, _NOT_SAMPLED, trace_state, True))
            )
        span_context = _new_context(SpanContext, (trace_id, span_id, False, _SAMPLED, trace_state, True))
        start = time.time_ns() if start_time is None else start_time
        if type(attributes) is SharedAttributes and len(attributes) <= self.limits.attributes:
            span = LeanSpan(name, span_context, parent, kind, {}, start, self, attributes)
            attributes = None
        else:
            span = LeanSpan(name, span_context, parent, kind, {}, start, self)
        if attributes:
            clean = span.own
            if len(attributes) <= self.limits.attributes:
                for key, value in attributes.items():
                    if type(value) in PLAIN and type(key) is str and key:
                        clean[key] = value
                    else:
                        span.set_attribute(key, value)
            else:
                span.set_attributes(attributes)
        if links:
            for link in links:
                span.add_link(link.context, link.attributes)
        return span

    def start_child(self, name: str, parent: trace.Span, kind: SpanKind, attributes: Mapping[str, Any]) -> trace.Span:
        """``start_span(name, context=<a Context holding parent>, kind=kind, attributes=attributes)``,
        without making the Context."""
        # (a lean parent's context read from its slot: no call)
        context = parent.context if type(parent) is LeanSpan else parent.get_span_context()
        return self._start(name, context, kind, attributes, None, None)

    # opentelemetry-api annotates this with its private _AgnosticContextManager (a context manager that
    # also decorates coroutines); the lean tracer gives a plain one, which is all the sidecar uses.
    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


# ---------------------------------------------------------------------------
# the provider


class _ProcessorView:
    """``provider._active_span_processor._span_processors[0].span_exporter``, as on the SDK's
    provider, for code and tests that reach the exporter that way."""

    def __init__(self, queue: SpanQueue) -> None:
        self._span_processors = (queue,)


class LeanTracerProvider(trace.TracerProvider):
    """Tracers sharing one resource, sampler, limits and export queue."""

    def __init__(
        self,
        exporter: EncodedSpanExporter,
        *,
        service_name: str = "unknown_service",
        environ: Mapping[str, str] = os.environ,
        resource: LeanResource | None = None,
        sampler: Sampler | None = None,
        limits: SpanLimits | None = None,
        max_queue_size: int = 512,
        max_export_batch_size: int = 256,
        schedule_delay_millis: float = 1000,
        export_timeout_millis: float = 30000,
    ) -> None:
        self.resource = resource or build_resource(service_name, environ)
        self.sampler = sampler or Sampler.from_env(environ)
        self.limits = limits or SpanLimits(environ)
        self.queue = SpanQueue(
            exporter,
            resource=self.resource,
            max_queue_size=max_queue_size,
            max_export_batch_size=max_export_batch_size,
            schedule_delay_millis=schedule_delay_millis,
            export_timeout_millis=export_timeout_millis,
        )
        self.queue.span_exporter = exporter  # type: ignore[attr-defined]  # as a BatchSpanProcessor's
        self._active_span_processor = _ProcessorView(self.queue)
        self._tracers: dict[tuple[Any, ...], LeanTracer] = {}

    @property
    def span_exporter(self) -> Any:
        return self.queue.exporter

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> LeanTracer:
        key = (
            instrumenting_module_name,
            instrumenting_library_version,
            schema_url,
            tuple(sorted(attributes.items())) if attributes else None,
        )
        tracer = self._tracers.get(key)
        if tracer is None:
            scope = LeanScope(instrumenting_module_name, instrumenting_library_version, schema_url, attributes)
            if self.queue.scope is None:
                self.queue.scope = scope
            tracer = self._tracers[key] = LeanTracer(
                resource=self.resource, scope=scope, sampler=self.sampler, limits=self.limits, queue=self.queue
            )
        return tracer

    def force_flush(self, timeout_millis: float = 30000) -> bool:
        return self.queue.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float | None = None) -> None:
        self.queue.shutdown(timeout_millis)


__all__ = ["LeanTracer", "LeanTracerProvider", "SpanQueue"]
