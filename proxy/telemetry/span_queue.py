"""The lean recorder's export queue: ended spans, bounded, exported in batches by one thread.

Part of ``proxy.telemetry.tracing`` (see there); kept apart because it is the one piece that runs
off the event loop.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from typing import Any

log = logging.getLogger("proxy.telemetry.tracing")


class SpanQueue:
    """Ended spans, bounded, exported in batches by one daemon thread.

    ``put`` runs on the event loop: a length check and a deque append (atomic under
    the GIL), no lock. Only the worker removes spans, so the length checked can only
    shrink before the append and the bound holds. ``dropped_spans`` counts spans
    refused because the queue was full (the exporter counts exported/failed ones).
    """

    def __init__(
        self,
        exporter: Any,
        *,
        max_queue_size: int = 512,
        max_export_batch_size: int = 256,
        schedule_delay_millis: float = 1000,
        export_timeout_millis: float = 30000,
    ) -> None:
        self.exporter = exporter
        self.max_queue_size = max_queue_size
        self.max_export_batch_size = min(max_export_batch_size, max_queue_size)
        self.schedule_delay_millis = schedule_delay_millis
        self.export_timeout_millis = export_timeout_millis
        self.dropped_spans = 0
        self._queue: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._flushes: collections.deque[threading.Event] = collections.deque()
        self._stopping = False
        self._logged_drop = False
        self._thread: threading.Thread | None = None
        self._start()
        if hasattr(os, "register_at_fork"):  # a forked child has the queue but not the thread
            os.register_at_fork(after_in_child=self._after_fork)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="modelway-span-export", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        self._queue.clear()
        self._flushes.clear()
        self._wake = threading.Event()
        if not self._stopping:
            self._start()

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, span: Any) -> None:
        queue = self._queue
        n = len(queue)
        if n >= self.max_queue_size or self._stopping:
            self.dropped_spans += 1
            if not self._logged_drop:  # once: the counter tells the rest
                self._logged_drop = True
                log.warning(
                    "span queue full (%d spans) or shut down: dropping spans (counted, not logged again)",
                    self.max_queue_size,
                )
            return
        queue.append(span)
        if n + 1 == self.max_export_batch_size:
            self._wake.set()

    def force_flush(self, timeout_millis: float = 30000) -> bool:
        """Export what is queued now; False when that did not finish within the timeout."""
        if self._thread is None or not self._thread.is_alive():
            return not self._queue
        done = threading.Event()
        self._flushes.append(done)
        self._wake.set()
        return done.wait(max(timeout_millis, 0) / 1000)

    def shutdown(self, timeout_millis: float | None = None) -> None:
        """Export what is queued (within the export timeout, or ``timeout_millis``), then stop."""
        if self._stopping:
            return
        timeout = self.export_timeout_millis if timeout_millis is None else timeout_millis
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(timeout, 0) / 1000)
        self.exporter.shutdown()  # interrupts a retry still waiting
        if self._thread is not None:
            self._thread.join(1.0)

    def _run(self) -> None:
        queue, batch_size = self._queue, self.max_export_batch_size
        while True:
            wake = self._wake
            timed_out = False
            if not self._stopping and len(queue) < batch_size and not self._flushes:
                timed_out = not wake.wait(self.schedule_delay_millis / 1000)
            wake.clear()
            flushes = []
            while self._flushes:
                flushes.append(self._flushes.popleft())
            # Woken by a full batch: export full batches only, and leave the few spans that came
            # meanwhile for the next one (under load, small batches multiply the per-request cost
            # of posting, which is paid on the event loop's core). The timer or a flush takes all.
            self._drain(full_only=not (timed_out or flushes or self._stopping))
            for done in flushes:
                done.set()
            if self._stopping:
                self._drain()
                while self._flushes:
                    self._flushes.popleft().set()
                return

    def _drain(self, *, full_only: bool = False) -> None:
        queue, batch_size, popleft = self._queue, self.max_export_batch_size, self._queue.popleft
        while queue and (not full_only or len(queue) >= batch_size):
            n = min(len(queue), batch_size)
            batch = [popleft() for _ in range(n)]
            try:
                self.exporter.export(batch)
            except Exception:  # the exporter should not raise; the thread must not die if it does
                log.exception("span export raised")
