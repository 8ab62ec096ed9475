"""The lean recorder's span: `LeanSpan`, an OpenTelemetry API ``Span`` of plain values, and
`SharedAttributes`, attributes made once and shared by many spans.

`LeanTracer` (`proxy.telemetry.tracing`) makes them; the encoder (`proxy.telemetry.otlp_encode`)
reads their slots. Attribute, event and link limits follow the SDK's rules (`SpanLimits`, from
`proxy.telemetry.sampling`). A span is queued for export (`proxy.telemetry.span_queue`) when it ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from proxy.telemetry.sampling import LeanResource, LeanScope
    from proxy.telemetry.tracing import LeanTracer

log = logging.getLogger("proxy.telemetry.tracing")  # the recorder's logger, as configured for it

UNSET_STATUS = Status(StatusCode.UNSET)  # a lean span's status until set (the encoder knows it)
_OK, _ERROR, _UNSET = StatusCode.OK, StatusCode.ERROR, StatusCode.UNSET
PLAIN = frozenset({str, int, float, bool})  # attribute value types stored as they are


class SharedAttributes(dict):  # type: ignore[type-arg]
    """Span attributes built once (per backend, per rule) and passed to many ``start_span`` calls.

    A promise from the caller: the dict is never changed after it is made, and its keys and
    values are plain (str keys; str, int, float or bool values). A lean span then keeps a
    reference instead of checking and copying each item, and the encoder writes the
    attributes' bytes once per shared dict instead of once per span. Any other tracer sees
    an ordinary dict.
    """

    __slots__ = ("encoded",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.encoded: bytes | None = None  # their Span.attributes fields, written once by the OTLP encoder


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
            if type(value) not in PLAIN or type(key) is not str or not key:
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
        if type(value) not in PLAIN or type(key) is not str or not key:
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
                (t in PLAIN or (t is tuple and all(type(v) is str for v in value)))  # e.g. finish reasons
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

    def set_plain(self, attributes: dict[str, Any]) -> None:
        """``set_attributes`` for a dict the caller built itself of plain values (non-empty str keys;
        str, int, float or bool values, or tuples of str), as the request path builds an answer's
        attributes: a promise, as with SharedAttributes. New keys within the limit are taken in a few
        C-level checks (the dict itself kept when the span has none of its own yet: never changed
        after); anything else, as set_attributes would."""
        own, shared = self.own, self.shared
        if self.end_time is None:
            if not own:  # the common case: none of its own yet, the dict taken as it is
                if shared is None:
                    if len(attributes) <= self._tracer.limits.attributes:
                        self.own = attributes
                        return
                elif len(attributes) + len(shared) <= self._tracer.limits.attributes and shared.keys().isdisjoint(
                    attributes
                ):
                    self.own = attributes
                    return
            elif (
                len(own) + len(attributes) + (0 if shared is None else len(shared)) <= self._tracer.limits.attributes
                and own.keys().isdisjoint(attributes)
                and (shared is None or shared.keys().isdisjoint(attributes))
            ):
                own.update(attributes)
                return
        self.set_attributes(attributes)

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
