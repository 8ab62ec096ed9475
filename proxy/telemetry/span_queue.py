"""The lean recorder's export queue: spans encoded as they end, bounded, exported in batches by one thread.

Part of ``proxy.telemetry.tracing`` (see there); kept apart because it is the one piece that runs
off the event loop.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Protocol

from proxy.telemetry.otlp_encode import SpanEncoder

log = logging.getLogger("proxy.telemetry.tracing")

if TYPE_CHECKING:  # (a Protocol class costs a few KiB to define: for the type checker only)
    from proxy.telemetry.otlp_encode import Buffer

    class EncodedSpanExporter(Protocol):
        """What the queue exports through (``proxy.telemetry.otlp_export.OTLPHttpSpanExporter``)."""

        def export_encoded(self, body: bytes | list[Buffer], count: int) -> Any:
            """Post an ExportTraceServiceRequest (bytes, or parts to send as they are) holding ``count`` spans."""

        def shutdown(self) -> None: ...


class SpanQueue:
    """Ended spans, encoded, bounded, exported in batches by one daemon thread.

    ``put`` runs where a span ends (the event loop) and encodes it there, at once, into the
    batch being filled: one bytearray per instrumentation scope of the spans' OTLP messages,
    so that an ended span keeps nothing alive but its bytes (a span object and its
    attributes took ~700 bytes until exported, its message takes ~550 in one buffer with the
    batch's others, and a batch is not built again as an object tree to be encoded). A full
    batch is handed to the worker thread, which puts the request's head around it and posts
    it; the timer, a flush or a shutdown also take the batch being filled. Encoding at the
    end costs the loop's core what encoding in the worker did (the GIL makes them take turns
    on it). One buffer per batch rather than a bytes object per span: the spans of a batch
    in many small allocations left the sidecar's peak RSS ~0.5 MiB higher.

    The bound is in spans, the batch being filled and the full ones waiting for the worker: a
    span past it is dropped, counted in ``dropped_spans``, never waited for. ``failed_spans``
    counts spans that could not be encoded (a bug: the request is answered all the same);
    the exporter counts exported and failed ones.
    """

    def __init__(
        self,
        exporter: EncodedSpanExporter,
        *,
        resource: Any,
        max_queue_size: int = 512,
        max_export_batch_size: int = 256,
        schedule_delay_millis: float = 1000,
        export_timeout_millis: float = 30000,
    ) -> None:
        self.exporter = exporter
        self.resource = resource
        self.max_queue_size = max_queue_size
        self.max_export_batch_size = min(max_export_batch_size, max_queue_size)
        self.schedule_delay_millis = schedule_delay_millis
        self.export_timeout_millis = export_timeout_millis
        self.dropped_spans = 0
        self.failed_spans = 0
        self.scope: Any = None  # the first tracer's: most spans', a shorter path in `put`
        self._encode = SpanEncoder().lean_span_field  # on the threads that end spans
        self._requests = SpanEncoder()  # on the worker: the request around a batch
        # Changed under `_lock`: the batch being filled (scope -> its spans' fields; `_fields` is the first
        # tracer's once it has spans in it) and its count; the full batches waiting for the worker; and
        # `_left`, how many spans may still come in (the bound less the spans of both; 0 once stopping).
        self._batch: dict[Any, bytearray] = {}
        self._fields: bytearray | None = None
        self._count = 0
        self._full: collections.deque[tuple[dict[Any, bytearray], int]] = collections.deque()
        self._left = max_queue_size
        self._lock = threading.Lock()
        self._acquire, self._release = self._lock.acquire, self._lock.release  # (cheaper than `with`)
        self._wake = threading.Event()
        self._flushes: collections.deque[threading.Event] = collections.deque()
        self._stopping = False
        self._logged_drop = False
        self._logged_failure = False
        self._thread: threading.Thread | None = None
        self._start()
        if hasattr(os, "register_at_fork"):  # a forked child has the queue but not the thread
            os.register_at_fork(after_in_child=self._after_fork)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="modelway-span-export", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # (it may have been held by a thread the child does not have)
        self._acquire, self._release = self._lock.acquire, self._lock.release
        self._batch, self._fields, self._count = {}, None, 0
        self._full.clear()
        self._left = 0 if self._stopping else self.max_queue_size
        self._flushes.clear()
        self._wake = threading.Event()
        if not self._stopping:
            self._start()

    def __len__(self) -> int:
        return self.max_queue_size - self._left if not self._stopping else self._count + sum(c for _, c in self._full)

    def put(self, span: Any) -> None:
        """Encode an ended ``proxy.telemetry.lean_span.LeanSpan`` into the batch (or drop it: full, shut down)."""
        if self._left <= 0:  # (not encoded then; checked again under the lock)
            self._drop()
            return
        try:
            field = self._encode(span)
        except Exception:  # a bug: the span is lost, the request that ended it must not be
            self._failed()
            return
        self._acquire()
        try:
            left = self._left
            if left <= 0:
                self._drop()
                return
            fields = self._fields
            if fields is None or span._tracer.scope is not self.scope:
                fields = self._scope_fields(span._tracer.scope)
            fields += field
            self._left = left - 1
            self._count = count = self._count + 1
            if count < self.max_export_batch_size:
                return
            self._full.append((self._batch, count))
            self._batch, self._fields, self._count = {}, None, 0
        finally:
            self._release()
        self._wake.set()

    def _scope_fields(self, scope: Any) -> bytearray:
        """The buffer of `scope`'s spans in the batch being filled (made on its first span)."""
        fields = self._batch.get(scope)
        if fields is None:
            fields = self._batch[scope] = bytearray()
        if scope is self.scope:
            self._fields = fields
        return fields

    def _drop(self) -> None:
        self.dropped_spans += 1
        if not self._logged_drop:  # once: the counter tells the rest
            self._logged_drop = True
            log.warning(
                "span queue full (%d spans) or shut down: dropping spans (counted, not logged again)",
                self.max_queue_size,
            )

    def _failed(self) -> None:
        self.failed_spans += 1
        if not self._logged_failure:
            self._logged_failure = True
            log.exception("a span could not be encoded; dropped (counted, not logged again)")

    def force_flush(self, timeout_millis: float = 30000) -> bool:
        """Export what is queued now; False when that did not finish within the timeout."""
        if self._thread is None or not self._thread.is_alive():
            return not self._count and not self._full
        done = threading.Event()
        self._flushes.append(done)
        self._wake.set()
        return done.wait(max(timeout_millis, 0) / 1000)

    def shutdown(self, timeout_millis: float | None = None) -> None:
        """Export what is queued (within the export timeout, or ``timeout_millis``), then stop."""
        if self._stopping:
            return
        timeout = self.export_timeout_millis if timeout_millis is None else timeout_millis
        with self._lock:  # no span comes in after this
            self._stopping = True
            self._left = 0
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(timeout, 0) / 1000)
        self.exporter.shutdown()  # interrupts a retry still waiting
        if self._thread is not None:
            self._thread.join(1.0)

    def _run(self) -> None:
        while True:
            wake = self._wake
            timed_out = False
            if not self._stopping and not self._full and not self._flushes:
                timed_out = not wake.wait(self.schedule_delay_millis / 1000)
            wake.clear()
            flushes = []
            while self._flushes:
                flushes.append(self._flushes.popleft())
            # Woken by a full batch: export full batches only, and leave the few spans that came
            # meanwhile for the next one (under load, small batches multiply the per-request cost
            # of posting, which is paid on the event loop's core). The timer or a flush takes all.
            stopping = self._stopping
            self._drain(everything=timed_out or bool(flushes) or stopping)
            for done in flushes:
                done.set()
            if stopping:
                while self._flushes:
                    self._flushes.popleft().set()
                return

    def _drain(self, *, everything: bool) -> None:
        """Export the full batches, and with `everything` the one being filled too."""
        while True:
            with self._lock:
                if self._full:
                    batch, count = self._full.popleft()
                elif everything and self._count:
                    batch, count = self._batch, self._count
                    self._batch, self._fields, self._count = {}, None, 0
                    everything = False  # once: spans ended meanwhile wait for a full batch or the timer
                else:
                    return
                if not self._stopping:
                    self._left += count
            try:
                self.exporter.export_encoded(self._requests.lean_request(self.resource, batch), count)
            except Exception:  # the exporter should not raise; the thread must not die if it does
                log.exception("span export raised")
