"""OTLP metrics for the sidecar: ExportMetricsServiceRequest bytes written by hand, exported
periodically off the event loop.

Like ``proxy.telemetry.otlp_encode`` for spans (and for the same reason: no protobuf object
tree, no protobuf runtime on the request path), the message is written directly
(field numbers from opentelemetry-proto ``metrics/v1/metrics.proto``); a unit test
keeps the bytes equal to the official message classes' serialization.

Export: every ``OTEL_METRIC_EXPORT_INTERVAL`` ms a task on the event loop copies
the registry's points (``Registry.collect``, a few hundred series) into a
bounded queue; one daemon thread encodes and posts them with the lean OTLP/HTTP
exporter of ``proxy.telemetry.otlp_export`` (its transport is signal-agnostic: bytes in,
retries bounded by the timeout). Temporality is cumulative, so when the collector
is away a full queue drops its oldest copy (counted in ``dropped_exports``) and
the next copy that gets through carries every total: nothing is lost but points.
Nothing here ever waits on the collector from the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import struct
import threading
from collections.abc import Mapping
from typing import Any

from proxy.telemetry.metrics import COUNTER, GAUGE, HISTOGRAM, Collected, Registry, flatten
from proxy.telemetry.otlp_wire import delimited, key_value, lp
from proxy.telemetry.sampling import LeanResource, LeanScope

log = logging.getLogger(__name__)

_fixed64 = struct.Struct("<Q").pack
_double = struct.Struct("<d").pack
_sfixed64 = struct.Struct("<q").pack
_CUMULATIVE = b"\x10\x02"  # aggregation_temporality (2) = AGGREGATION_TEMPORALITY_CUMULATIVE


def _attributes(names: Any, key: Any, tag: bytes) -> bytes:
    return b"".join([tag + lp(key_value(n, v)) for n, v in flatten(names, key)])


def _number_point(names: Any, key: Any, value: float, start: bytes, now: bytes) -> bytes:
    """NumberDataPoint: start 2, time 3, as_double 4 | as_int 6, attributes 7 (field-number order)."""
    number = b"\x31" + _sfixed64(value) if type(value) is int else b"\x21" + _double(float(value))
    return b"\x11" + start + b"\x19" + now + number + _attributes(names, key, b"\x3a")


def _histogram_point(
    names: Any, key: Any, point: list[float], bounds: tuple[float, ...], start: bytes, now: bytes
) -> bytes:
    """HistogramDataPoint: start 2, time 3, count 4, sum 5, bucket_counts 6, explicit_bounds 7,
    attributes 9, min 11, max 12."""
    buckets = b"".join([_fixed64(int(c)) for c in point[4:]])
    explicit = b"".join([_double(float(b)) for b in bounds])
    return b"".join(
        [
            b"\x11",
            start,
            b"\x19",
            now,
            b"\x21",
            _fixed64(int(point[0])),
            b"\x29",
            _double(float(point[1])),
            delimited(b"\x32", buckets),
            delimited(b"\x3a", explicit) if bounds else b"",
            _attributes(names, key, b"\x4a"),
            b"\x59",
            _double(float(point[2])),
            b"\x61",
            _double(float(point[3])),
        ]
    )


def encode_metrics(collected: Collected, *, resource: LeanResource, scope: LeanScope) -> tuple[bytes, int]:
    """(ExportMetricsServiceRequest bytes, number of data points). Instruments with no points are left out."""
    start, now = _fixed64(collected.start_time_ns), _fixed64(collected.time_ns)
    metrics: list[bytes] = []
    count = 0
    for instrument, points in collected.metrics:
        if not points:
            continue
        names = instrument.attributes
        count += len(points)
        if instrument.kind == HISTOGRAM:
            bounds = instrument.bounds  # type: ignore[attr-defined]
            body = b"".join([b"\x0a" + lp(_histogram_point(names, k, p, bounds, start, now)) for k, p in points])
            data = delimited(b"\x4a", body + _CUMULATIVE)  # Metric.histogram (9)
        else:
            body = b"".join([b"\x0a" + lp(_number_point(names, k, v, start, now)) for k, v in points])
            if instrument.kind == COUNTER:  # Metric.sum (7), is_monotonic (3)
                data = delimited(b"\x3a", body + _CUMULATIVE + b"\x18\x01")
            elif instrument.kind == GAUGE:  # Metric.gauge (5)
                data = delimited(b"\x2a", body)
            else:
                raise ValueError(f"unknown instrument kind {instrument.kind!r}")
        header = delimited(b"\x0a", instrument.name.encode())
        if instrument.description:
            header += delimited(b"\x12", instrument.description.encode())
        if instrument.unit:
            header += delimited(b"\x1a", instrument.unit.encode())
        metrics.append(b"\x12" + lp(header + data))  # ScopeMetrics.metrics (2)
    scope_body = delimited(b"\x0a", scope.name.encode()) if scope.name else b""
    if scope.version:
        scope_body += delimited(b"\x12", scope.version.encode())
    scope_metrics = delimited(b"\x0a", scope_body) + b"".join(metrics)  # ScopeMetrics.scope (1)
    resource_body = b"".join([b"\x0a" + lp(key_value(k, v)) for k, v in resource.attributes.items()])
    resource_metrics = delimited(b"\x0a", resource_body) + delimited(b"\x12", scope_metrics)
    return delimited(b"\x0a", resource_metrics), count


def metrics_endpoint(environ: Mapping[str, str]) -> str | None:
    """``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` as-is, else the generic endpoint + ``/v1/metrics``."""
    if url := (environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or "").strip():
        return url
    if base := (environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip():
        return base.rstrip("/") + "/v1/metrics"
    return None


def metrics_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment as the (trace-named) lean exporter should see it for metrics: the
    OTEL_EXPORTER_OTLP_METRICS_* settings in place of the _TRACES_ ones."""
    out = {k: v for k, v in environ.items() if not k.startswith("OTEL_EXPORTER_OTLP_TRACES_")}
    for k, v in environ.items():
        if k.startswith("OTEL_EXPORTER_OTLP_METRICS_"):
            out["OTEL_EXPORTER_OTLP_TRACES_" + k.removeprefix("OTEL_EXPORTER_OTLP_METRICS_")] = v
    return out


class MetricExport:
    """Periodic cumulative export: ``run()`` on the event loop collects, a thread posts."""

    def __init__(
        self,
        *,
        registry: Registry,
        exporter: Any,
        resource: LeanResource,
        scope: LeanScope,
        interval_seconds: float,
        max_queue: int = 2,
    ) -> None:
        self.registry, self.exporter, self.resource, self.scope = registry, exporter, resource, scope
        self.interval_seconds = interval_seconds
        self.max_queue = max_queue
        self.dropped_exports = 0  # copies dropped because the queue was full (collector slow or away)
        self.failed_exports = 0
        self.exported_points = 0
        self._queue: collections.deque[Collected] = collections.deque()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="modelway-metric-export", daemon=True)
        self._thread.start()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._queue.clear()
        self._wake = threading.Event()
        if not self._stopping:
            self._thread = threading.Thread(target=self._work, name="modelway-metric-export", daemon=True)
            self._thread.start()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            self.collect_now()

    def collect_now(self) -> None:
        """Queue a copy of the registry now (on the event loop: the registry's thread)."""
        if self._stopping:
            return
        if len(self._queue) >= self.max_queue:  # only the loop appends: the check holds
            self._queue.popleft()
            self.dropped_exports += 1
        self._idle.clear()
        self._queue.append(self.registry.collect())
        self._wake.set()

    def _work(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._queue:
                try:
                    collected = self._queue.popleft()
                except IndexError:
                    break
                try:
                    body, count = encode_metrics(collected, resource=self.resource, scope=self.scope)
                    result = self.exporter.export_encoded(body, count)
                    if getattr(result, "name", "SUCCESS") == "SUCCESS":
                        self.exported_points += count
                    else:
                        self.failed_exports += 1
                except Exception:  # the thread must outlive a bug
                    self.failed_exports += 1
                    log.exception("metric export raised")
            self._idle.set()
            if self._stopping:
                return

    def force_flush(self, timeout_seconds: float = 10.0) -> bool:
        """Wait until what is queued has been posted (tests; shutdown)."""
        return self._idle.wait(timeout_seconds)

    def shutdown(self, timeout_seconds: float = 2.0) -> None:
        """Post what is queued (within the timeout, short: totals are cumulative, and a pod's grace
        period is shared with the span flush), then stop the thread and the exporter."""
        if self._stopping:
            return
        self._idle.wait(timeout_seconds)
        self._stopping = True
        self._wake.set()
        self._thread.join(1.0)
        self.exporter.shutdown()


def build_metric_export(
    *, registry: Registry, resource: LeanResource, environ: Mapping[str, str] = os.environ
) -> MetricExport | None:
    """OTLP/HTTP metric export configured by the OTEL_* variables, or None when it is off
    (no endpoint, OTEL_METRICS_EXPORTER=none, OTEL_SDK_DISABLED=true, or bad settings)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if environ.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower() in ("none", "prometheus"):
        return None
    endpoint = metrics_endpoint(environ)
    if endpoint is None:
        return None
    from proxy.telemetry.otlp_export import OTLPHttpSpanExporter

    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"))
        .strip()
        .lower()
    )
    if protocol != "http/protobuf":
        log.warning("OTLP metrics: protocol %r is not supported by the sidecar; using http/protobuf", protocol)
    raw = (environ.get("OTEL_METRIC_EXPORT_INTERVAL") or "").strip()
    try:
        interval = float(raw) / 1000 if raw else 60.0
        if interval <= 0:
            raise ValueError
    except ValueError:
        log.warning("OTEL_METRIC_EXPORT_INTERVAL=%r is not a positive number of ms; using 60000", raw)
        interval = 60.0
    try:
        exporter = OTLPHttpSpanExporter(endpoint=endpoint, environ=metrics_environ(environ))
    except (ValueError, OSError) as exc:  # a telemetry typo must not take the data plane down
        log.error("metric export off: bad OTLP exporter settings: %s", exc)
        return None
    return MetricExport(
        registry=registry,
        exporter=exporter,
        resource=resource,
        scope=LeanScope("modelway.proxy"),
        interval_seconds=interval,
    )
