"""A lean span recorder behind the OpenTelemetry tracing API.

The SDK's ``Tracer.start_span`` / ``Span`` cost the sidecar ~20 % of its event
loop (locked BoundedAttributes, sampler Decision objects, ReadableSpan copies,
a BatchSpanProcessor with its own locks). The sidecar makes two or three spans
per request and uses a small part of the API, so this module implements just
that part, cheaply:

* ``LeanTracerProvider.get_tracer()`` -> ``LeanTracer`` (an API ``Tracer``);
  ``start_span`` returns a ``LeanSpan`` (an API ``Span``) keeping plain Python
  values: an attributes dict, events as ``(name, attributes, time)`` tuples,
  times as int nanoseconds. ``proxy.telemetry.otlp_encode`` has a fast path for it.
* Sampling from ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG`` (always_on,
  always_off, traceidratio and their parentbased_* forms); an unsampled span is
  an API ``NonRecordingSpan`` that still propagates a valid context. The sampler,
  resource, scope and span limits live in ``proxy.telemetry.sampling``.
* Ended spans go to a bounded deque (`proxy.telemetry.span_queue`; no lock: the event loop appends, one
  daemon thread pops); when it is full, spans are dropped and counted, never
  waited for. The worker exports every ``OTEL_BSP_SCHEDULE_DELAY`` ms or as soon
  as a batch is full, through ``proxy.telemetry.otlp_export.OTLPHttpSpanExporter``.

Spans are meant to be created and ended on one thread (the event loop). Using
them from several threads is safe for the queue, not for one span's fields.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from random import getrandbits
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from proxy.telemetry.sampling import _MASK64, LeanResource, LeanScope, Sampler, SpanLimits, build_resource
from proxy.telemetry.span_queue import SpanQueue

log = logging.getLogger(__name__)

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_EMPTY_TRACE_STATE = DEFAULT_TRACE_STATE  # the API's own: the encoder skips it by identity
UNSET_STATUS = Status(StatusCode.UNSET)  # a lean span's status until set (the encoder knows it)
_OK, _ERROR, _UNSET = StatusCode.OK, StatusCode.ERROR, StatusCode.UNSET
_PLAIN = frozenset({str, int, float, bool})  # attribute value types stored as they are


# ---------------------------------------------------------------------------
# the span


class SharedAttributes(dict):  # type: ignore[type-arg]
    """Span attributes built once (per backend, per rule) and passed to many ``start_span`` calls.

    A promise from the caller: the dict is never changed after it is made, and its keys and
    values are plain (str keys; str, int, float or bool values). A lean span then keeps a
    reference instead of checking and copying each item, and the encoder writes the
    attributes' bytes once per shared dict instead of once per span. Any other tracer sees
    an ordinary dict.
    """

    __slots__ = ()


def _clean(key: Any, value: Any) -> tuple[bool, Any]:
    """The slow path of attribute validation (the SDK's rules): (valid, cleaned value)."""
    if not key or not isinstance(key, str):
        log.warning("invalid attribute key %r: must be a non-empty string; dropped", key)
        return False, None
    if type(value) is tuple and all(type(v) is str for v in value):
        return True, value  # e.g. gen_ai.response.finish_reasons: what the SDK's check returns, at 1/20 the cost
    # The SDK's cleaning (sequences to tuples, other types to str or None), through its public
    # container: a slow path, taken only by values that are not plain.
    cleaned = BoundedAttributes(immutable=False)
    cleaned[key] = value
    return True, cleaned.get(key)


def _event_attributes(attributes: Mapping[str, Any] | None, limit: int) -> tuple[dict[str, Any], int]:
    """A copy of an event's or a link's attributes, validated and bounded: (attributes, dropped)."""
    out: dict[str, Any] = {}
    dropped = 0
    if attributes:
        for key, value in attributes.items():
            if type(value) not in _PLAIN or type(key) is not str or not key:
                ok, value = _clean(key, value)
                if not ok:
                    dropped += 1
                    continue
            out.pop(key, None)
            if len(out) >= limit:
                if not limit:
                    dropped += 1
                    continue
                del out[next(iter(out))]
                dropped += 1
            out[key] = value
    return out, dropped


def _append_bounded(items: list[Any] | None, item: Any, limit: int) -> tuple[list[Any], int]:
    """Append to a list kept to `limit` items (made on first use), the oldest giving way, as the
    SDK keeps events and links: (the list, how many items were dropped)."""
    if items is None:
        items = []
    if len(items) < limit:
        items.append(item)
        return items, 0
    if items:
        del items[0]
        items.append(item)
    return items, 1  # with a limit of 0, the new item itself is the one dropped


class _Rare:
    """What few spans have: events, links, and counts of what their limits dropped (made on first use,
    so that a span's making, on every request, sets a few slots less)."""

    __slots__ = ("dropped_attributes", "dropped_events", "dropped_links", "events", "links")

    def __init__(self) -> None:
        self.dropped_attributes = self.dropped_events = self.dropped_links = 0
        self.events: list[tuple[str, dict[str, Any], int, int]] | None = None
        self.links: list[tuple[SpanContext, dict[str, Any], int]] | None = None


class LeanSpan(trace.Span):
    """A recording span of plain values, queued for export when it ends.

    Read by the encoder (``proxy.telemetry.otlp_encode``) straight from its slots: the attributes are
    ``shared`` (a SharedAttributes given at the start, or None) followed by ``own``; ``_rare`` is None
    or holds the events as ``(name, attributes, time_ns, dropped_attributes)`` tuples, the links as
    ``(SpanContext, attributes, dropped_attributes)`` tuples and the dropped counts.
    """

    __slots__ = (
        "_rare",
        "_tracer",
        "context",
        "end_time",
        "kind",
        "name",
        "own",
        "parent",
        "shared",
        "start_time",
        "status",
    )

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        own: dict[str, Any],
        start_time: int,
        tracer: LeanTracer,
        shared: SharedAttributes | None = None,
    ) -> None:
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.start_time = start_time
        self.end_time: int | None = None
        # The attributes: `shared` (never changed, its bytes cached by the encoder), then `own`. Setting
        # a shared key again, or evicting one, first copies them into `own` (`_unshare`).
        self.shared = shared
        self.own = own
        self.status = UNSET_STATUS
        self._rare: _Rare | None = None
        self._tracer = tracer

    def _more(self) -> _Rare:
        rare = self._rare
        if rare is None:
            rare = self._rare = _Rare()
        return rare

    @property
    def resource(self) -> LeanResource:
        return self._tracer.resource

    @property
    def instrumentation_scope(self) -> LeanScope:
        return self._tracer.scope

    @property
    def dropped_attributes(self) -> int:
        return 0 if self._rare is None else self._rare.dropped_attributes

    @property
    def dropped_events(self) -> int:
        return 0 if self._rare is None else self._rare.dropped_events

    @property
    def dropped_links(self) -> int:
        return 0 if self._rare is None else self._rare.dropped_links

    # -- API

    def get_span_context(self) -> SpanContext:
        return self.context

    @property
    def attributes(self) -> dict[str, Any]:
        """All attributes in order (when some are shared, a copy)."""
        return self.own if self.shared is None else {**self.shared, **self.own}

    def _unshare(self) -> dict[str, Any]:
        if self.shared is not None:
            self.own = {**self.shared, **self.own}
            self.shared = None
        return self.own

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self.end_time is not None:
            return
        if type(value) not in _PLAIN or type(key) is not str or not key:
            ok, value = _clean(key, value)
            if not ok:
                self._more().dropped_attributes += 1
                return
        shared = self.shared
        attributes = self._unshare() if shared is not None and key in shared else self.own
        if key in attributes:
            del attributes[key]  # re-set keys move to the end, as in the SDK
        elif len(attributes) + (0 if self.shared is None else len(self.shared)) >= self._tracer.limits.attributes:
            self._more().dropped_attributes += 1
            attributes = self._unshare()  # the oldest, the one to go, may be a shared one
            if not attributes:
                return
            del attributes[next(iter(attributes))]
        attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self.end_time is not None:
            return
        mine, shared = self.own, self.shared
        room = self._tracer.limits.attributes - (0 if shared is None else len(shared))
        for key, value in attributes.items():  # set_attribute's fast path, inlined
            t = type(value)
            if (
                (t in _PLAIN or (t is tuple and all(type(v) is str for v in value)))  # e.g. finish reasons
                and type(key) is str
                and key
                and (shared is None or key not in shared)
            ):
                if key in mine:
                    del mine[key]
                    mine[key] = value
                    continue
                if len(mine) < room:
                    mine[key] = value
                    continue
            # anything to check or clean, a shared key set again, or the limit reached
            self.set_attribute(key, value)
            mine, shared = self.own, self.shared
            room = self._tracer.limits.attributes - (0 if shared is None else len(shared))

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None) -> None:
        if self.end_time is not None:
            return
        limits = self._tracer.limits
        event_attributes, dropped = _event_attributes(attributes, limits.event_attributes)
        event = (name, event_attributes, time.time_ns() if timestamp is None else timestamp, dropped)
        rare = self._more()
        rare.events, overflow = _append_bounded(rare.events, event, limits.events)
        rare.dropped_events += overflow

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        if self.end_time is not None or not (context and (context.is_valid or attributes or context.trace_state)):
            return  # the SDK's rule: an invalid context is kept only with attributes or a trace state
        limits = self._tracer.limits
        link_attributes, dropped = _event_attributes(attributes, limits.link_attributes)
        rare = self._more()
        rare.links, overflow = _append_bounded(rare.links, (context, link_attributes, dropped), limits.links)
        rare.dropped_links += overflow

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # As the SDK: OK is final, UNSET is ignored; a Status object wins over `description`.
        if self.end_time is not None or self.status.status_code is _OK:
            return
        if isinstance(status, Status):
            if status.status_code is not _UNSET:
                self.status = status
        elif status is not _UNSET:
            self.status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        import traceback

        module, qualname = type(exception).__module__, type(exception).__qualname__
        event_attributes: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            event_attributes.update(attributes)
        self.add_event("exception", event_attributes, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return
        self.end_time = time.time_ns() if end_time is None else end_time
        self._tracer.queue.put(self)

    # -- ReadableSpan-like views (tests, debugging; the encoder reads the slots)

    @property
    def events(self) -> tuple[tuple[str, dict[str, Any], int, int], ...]:
        return tuple(self._rare.events or ()) if self._rare is not None else ()

    @property
    def links(self) -> tuple[tuple[SpanContext, dict[str, Any], int], ...]:
        return tuple(self._rare.links or ()) if self._rare is not None else ()

    def __repr__(self) -> str:
        return (
            f"LeanSpan(name={self.name!r}, trace_id=0x{self.context.trace_id:032x}, "
            f"span_id=0x{self.context.span_id:016x}, kind={self.kind}, ended={self.end_time is not None})"
        )


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
        return self._start(name, parent, kind, attributes, links, start_time)

    def _start(
        self,
        name: str,
        parent_span: trace.Span | None,
        kind: SpanKind,
        attributes: Mapping[str, Any] | None,
        links: Sequence[Link] | None,
        start_time: int | None,
    ) -> trace.Span:
        parent = parent_span.get_span_context() if parent_span is not None else None
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
            return NonRecordingSpan(SpanContext(trace_id, span_id, False, _NOT_SAMPLED, trace_state))
        span_context = SpanContext(trace_id, span_id, False, _SAMPLED, trace_state)
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
                    if type(value) in _PLAIN and type(key) is str and key:
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
        return self._start(name, parent, kind, attributes, None, None)

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
        exporter: Any,
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
            tracer = self._tracers[key] = LeanTracer(
                resource=self.resource, scope=scope, sampler=self.sampler, limits=self.limits, queue=self.queue
            )
        return tracer

    def force_flush(self, timeout_millis: float = 30000) -> bool:
        return self.queue.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float | None = None) -> None:
        self.queue.shutdown(timeout_millis)


__all__ = ["LeanSpan", "LeanTracer", "LeanTracerProvider", "SharedAttributes", "SpanQueue"]
