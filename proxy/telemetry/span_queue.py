"""The lean recorder's export queue: spans encoded as they end, bounded, exported in batches by one thread.

Part of ``proxy.telemetry.tracing`` (see there); kept apart because it is the one piece that runs
off the event loop.
"""

from __future__ import annotations

import collections
import logging
import mmap
import os
import threading
from typing import TYPE_CHECKING, Any, Protocol

from proxy.telemetry.otlp_encode import SpanEncoder

log = logging.getLogger("proxy.telemetry.tracing")

if TYPE_CHECKING:  # (a Protocol class costs a few KiB to define: for the type checker only)
    from collections.abc import Sequence

    from proxy.telemetry.otlp_encode import Buffer

    class EncodedSpanExporter(Protocol):
        """What the queue exports through (``proxy.telemetry.otlp_export.OTLPHttpSpanExporter``)."""

        def export_encoded(self, body: bytes | Sequence[Buffer], count: int) -> Any:
            """Post an ExportTraceServiceRequest (bytes, or parts to send as they are) holding ``count`` spans."""

        def shutdown(self) -> None: ...


# What a queued span may take on average before the bytes, not the count, bound the queue and a batch: ~4x a
# sidecar span (~550 bytes), so only large spans (prompts captured as content) meet the byte bounds first.
SPAN_BYTES = 2048
# A batch's spans are written into buffers mapped for it alone (anonymous mmap, up to this size each, chained
# as it grows): the pages a buffer touched return to the system when its batch has been posted. A bytearray
# grown span by span (realloc'd, copied, freed in the middle of malloc's heap, which keeps such holes) left
# the sidecar's peak RSS under load ~0.2 MiB higher for the same batches (bench.sidecar). Pages are touched as spans are
# written (a quiet batch costs a page). The bytes bounds count whole buffers, so that a span written into
# one already taken costs no accounting.
CHUNK_BYTES = 64 * 1024
_Part = mmap.mmap | bytes  # a scope's spans in a batch: buffers being written, and large spans' own bytes
# A buffer always full: where a scope with no buffer in the batch yet writes, so that finding no room and
# finding no buffer are one case (and the write one call, whatever the batch holds).
_FULL = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE)
_FULL.seek(mmap.PAGESIZE)


class SpanQueue:
    """Ended spans, encoded, bounded, exported in batches by one daemon thread.

    ``put`` runs where a span ends (the event loop) and encodes it there, at once, into the
    batch being filled: buffers per instrumentation scope of the spans' OTLP messages (see
    ``CHUNK_BYTES``), so that an ended span keeps nothing alive but its bytes (a span object
    and its attributes took ~700 bytes until exported, its message takes ~550 in a buffer with
    the batch's others, and a batch is not built again as an object tree to be encoded). A full
    batch is handed to the worker thread, which puts the request's head around it and posts
    it; the timer, a flush or a shutdown also take the batch being filled. Encoding at the
    end costs the loop's core what encoding in the worker did (the GIL makes them take turns
    on it). Buffers per batch rather than a bytes object per span: the spans of a batch in many
    small allocations left the sidecar's peak RSS ~0.5 MiB higher.

    A batch is full at ``max_export_batch_size`` spans or ``SPAN_BYTES`` times that many bytes,
    whichever comes first. The queue (the batch being filled and the full ones waiting for the
    worker) is bounded the same way, at ``max_queue_size`` spans or ``SPAN_BYTES`` times that
    many bytes: a span past either bound is dropped, counted in ``dropped_spans``, never waited
    for. Bytes are counted as buffers fill (``CHUNK_BYTES``, or a batch's bytes if fewer) and as
    spans too large for one come (queued as their own bytes): the bounds in bytes hold within a
    buffer per scope. ``failed_spans`` counts spans that could not be encoded (a bug: the request
    is answered all the same); the exporter counts exported and failed ones.
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
        # Changed under `_lock`: the batch being filled (scope -> its spans' parts; `_open`, scope -> the
        # buffer its next span goes into; `_write`, the first tracer's, bound), its spans and bytes (its parts'
        # sizes); the full batches waiting for the worker; and `_left` and `_room`, how many spans and
        # bytes may still come in (the bounds less the spans and bytes of both; 0 once stopping).
        self._batch: dict[Any, list[_Part]] = {}
        self._open: dict[Any, mmap.mmap] = {}
        self._write = _FULL.write  # the first tracer's buffer's, bound (a method looked up per span costs more)
        self._count = 0
        self._size = 0
        self._full: collections.deque[tuple[dict[Any, list[_Part]], int, int]] = collections.deque()
        self._left = max_queue_size
        self._room = self.max_queue_bytes
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

    # (Computed, not kept: past 30 attributes CPython 3.11 gives up an instance's compact layout, and each
    # `self.x` in `put` then costs a dict lookup: ~1k instructions per span more.)
    @property
    def max_queue_bytes(self) -> int:
        return self.max_queue_size * SPAN_BYTES

    @property
    def max_export_batch_bytes(self) -> int:
        return self.max_export_batch_size * SPAN_BYTES

    @property
    def _chunk_bytes(self) -> int:
        return min(CHUNK_BYTES, self.max_export_batch_bytes)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="modelway-span-export", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # (it may have been held by a thread the child does not have)
        self._acquire, self._release = self._lock.acquire, self._lock.release
        self._new_batch()
        self._full.clear()
        self._left = 0 if self._stopping else self.max_queue_size
        self._room = 0 if self._stopping else self.max_queue_bytes
        self._flushes.clear()
        self._wake = threading.Event()
        if not self._stopping:
            self._start()

    def _new_batch(self) -> None:
        self._batch, self._open, self._write, self._count, self._size = {}, {}, _FULL.write, 0, 0

    def __len__(self) -> int:
        return (
            self.max_queue_size - self._left if not self._stopping else self._count + sum(c for _, c, _ in self._full)
        )

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
            scope = span._tracer.scope
            try:
                (self._write if scope is self.scope else self._open.get(scope, _FULL).write)(field)
            except ValueError:  # no room left in the buffer (or no buffer yet: `_FULL`)
                if not self._add(scope, field):
                    return
            self._left = left - 1
            self._count = count = self._count + 1
            if count < self.max_export_batch_size:
                return
            self._cut()
        finally:
            self._release()
        self._wake.set()

    def _add(self, scope: Any, field: bytes) -> bool:
        """Queue `field` in a new part of `scope`'s spans, a new buffer or (large) its own bytes, after
        counting the bytes of the buffer it replaces, and cutting the batch first if the part would
        take it past its bytes; False if the queue has no room for it (dropped) or no memory (failed)."""
        full = self._open.pop(scope, None)
        if full is not None:  # (its bytes count now, once: a cut below counts the buffers still open)
            self._count_bytes(full.tell())
            if scope is self.scope:
                self._write = _FULL.write
        n = len(field)
        own = n > self._chunk_bytes // 4
        if self._count and self._size + (n if own else self._chunk_bytes) > self.max_export_batch_bytes:
            self._cut()
            self._wake.set()
        if (n if own else 1) > self._room:
            self._drop()
            return False
        parts = self._batch.get(scope)
        if parts is None:
            parts = self._batch[scope] = []
        chunk = _FULL  # (after a span in its own bytes, the next one starts a buffer)
        if own:
            parts.append(field)
            self._count_bytes(n)
        else:
            try:
                chunk = mmap.mmap(-1, self._chunk_bytes, flags=mmap.MAP_PRIVATE)
            except OSError:  # no memory: the span is lost, as one that cannot be encoded
                self._failed()
                return False
            chunk.write(field)
            parts.append(chunk)
        if chunk is _FULL:
            self._open.pop(scope, None)
        else:
            self._open[scope] = chunk
        if scope is self.scope:
            self._write = chunk.write
        return True

    def _count_bytes(self, n: int) -> None:
        """Bytes of the batch being filled, counted as its buffers fill (not span by span)."""
        self._room -= n
        self._size += n

    def _cut(self) -> None:
        """Hand the batch being filled to the worker (the caller wakes it) and begin a new one."""
        for chunk in self._open.values():  # (the bytes of the buffers still open count now)
            self._count_bytes(chunk.tell())
        self._full.append((self._batch, self._count, self._size))
        self._new_batch()

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
                    batch, count, size = self._full.popleft()
                elif everything and self._count:
                    self._cut()
                    batch, count, size = self._full.pop()
                    everything = False  # once: spans ended meanwhile wait for a full batch or the timer
                else:
                    return
                if not self._stopping:
                    self._left += count
                    self._room += size
            self._export(batch, count)
            del batch  # (its buffers are unmapped once posted, before the next batch is taken)

    def _export(self, batch: dict[Any, list[_Part]], count: int) -> None:
        scopes = {scope: [_written(part) for part in parts] for scope, parts in batch.items()}
        try:
            self.exporter.export_encoded(self._requests.lean_request(self.resource, scopes), count)
        except Exception:  # the exporter should not raise; the thread must not die if it does
            log.exception("span export raised")


def _written(part: _Part) -> Buffer:
    """What of a batch's part is spans: a buffer up to where its spans end (a view, not a copy)."""
    return memoryview(part)[: part.tell()] if isinstance(part, mmap.mmap) else part
