"""The hand-written OTLP metrics encoder: its bytes equal the official message classes'
serialization of the same data, and the periodic export survives an absent collector."""

from __future__ import annotations

import asyncio
import http.server
import threading
from typing import ClassVar

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from proxy.telemetry.metrics import GAUGE, Registry, flatten
from proxy.telemetry.otlp_export import OTLPHttpSpanExporter
from proxy.telemetry.otlp_metrics import MetricExport, build_metric_export, encode_metrics, metrics_endpoint
from proxy.telemetry.sampling import LeanResource, LeanScope

CUMULATIVE = pb.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


def _any(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=value)


def _kvs(names, key) -> list[KeyValue]:
    return [KeyValue(key=n, value=_any(v)) for n, v in flatten(names, key)]


def _registry() -> Registry:
    registry = Registry()
    requests = registry.counter(
        "modelway.requests",
        unit="{request}",
        description="reqs",
        attributes=("route", ("provider", "port"), "error.type"),
    )
    requests.add(("gpt", ("openai", 443), None))
    requests.add(("gpt", ("openai", 443), None))
    requests.add(("gpt", ("anthropic", 443), "5xx"), 1)
    cost = registry.counter("modelway.cost", unit="USD", description="usd", attributes=("route",))
    cost.add(("gpt",), 0.000125)
    cost.add(("free",), 0.0)
    duration = registry.histogram(
        "gen_ai.client.operation.duration",
        unit="s",
        description="d",
        attributes=("gen_ai.operation.name", "ok"),
        bounds=(0.01, 0.1, 1.0),
    )
    for value in (0.005, 0.01, 0.5, 3.0):
        duration.record(("chat", True), value)
    duration.record(("embeddings", False), 0.0)
    registry.observed(
        "modelway.snapshot.age",
        kind=GAUGE,
        unit="s",
        description="age",
        attributes=("v",),
        callback=lambda: [(("abc",), 1.5)],
    )
    registry.histogram("unused", unit="s", description="", attributes=(), bounds=(1.0,))  # no points: left out
    return registry


def _official(collected, resource: LeanResource, scope: LeanScope) -> bytes:
    metrics = []
    start, now = collected.start_time_ns, collected.time_ns
    for instrument, points in collected.metrics:
        if not points:
            continue
        metric = pb.Metric(name=instrument.name, description=instrument.description, unit=instrument.unit)
        names = instrument.attributes
        if instrument.kind == "histogram":
            metric.histogram.aggregation_temporality = CUMULATIVE
            for key, p in points:
                metric.histogram.data_points.append(
                    pb.HistogramDataPoint(
                        attributes=_kvs(names, key),
                        start_time_unix_nano=start,
                        time_unix_nano=now,
                        count=p[0],
                        sum=p[1],
                        bucket_counts=p[4:],
                        explicit_bounds=instrument.bounds,
                        min=p[2],
                        max=p[3],
                    )
                )
        else:
            target = metric.sum if instrument.kind == "counter" else metric.gauge
            if instrument.kind == "counter":
                metric.sum.aggregation_temporality = CUMULATIVE
                metric.sum.is_monotonic = True
            for key, value in points:
                point = pb.NumberDataPoint(attributes=_kvs(names, key), start_time_unix_nano=start, time_unix_nano=now)
                if isinstance(value, int):
                    point.as_int = value
                else:
                    point.as_double = value
                target.data_points.append(point)
        metrics.append(metric)
    request = ExportMetricsServiceRequest(
        resource_metrics=[
            pb.ResourceMetrics(
                resource=Resource(attributes=[KeyValue(key=k, value=_any(v)) for k, v in resource.attributes.items()]),
                scope_metrics=[
                    pb.ScopeMetrics(scope=InstrumentationScope(name=scope.name, version=scope.version), metrics=metrics)
                ],
            )
        ]
    )
    return request.SerializeToString()


def test_bytes_equal_the_official_messages() -> None:
    resource = LeanResource({"service.name": "modelway-proxy", "k8s.pod.name": "pod-ü", "n": 3})
    scope = LeanScope("modelway.proxy", "0.1.0")
    collected = _registry().collect()
    body, count = encode_metrics(collected, resource=resource, scope=scope)
    assert count == 2 + 2 + 2 + 1  # series: requests, cost, duration, age
    assert body == _official(collected, resource, scope)
    decoded = ExportMetricsServiceRequest.FromString(body)
    [hist] = [m for m in decoded.resource_metrics[0].scope_metrics[0].metrics if m.name.startswith("gen_ai")]
    chat = next(p for p in hist.histogram.data_points if p.attributes[0].value.string_value == "chat")
    assert list(chat.bucket_counts) == [2, 0, 1, 1] and chat.count == 4 and chat.min == 0.005 and chat.max == 3.0


def test_endpoint_and_settings_follow_the_otel_variables() -> None:
    assert metrics_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}) == "http://c:4318/v1/metrics"
    assert (
        metrics_endpoint(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m/x"}
        )
        == "http://m/x"
    )
    assert metrics_endpoint({}) is None
    registry, resource = Registry(), LeanResource({})
    assert build_metric_export(registry=registry, resource=resource, environ={}) is None
    off = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "none"}
    assert build_metric_export(registry=registry, resource=resource, environ=off) is None
    export = build_metric_export(
        registry=registry,
        resource=resource,
        environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
            "OTEL_METRIC_EXPORT_INTERVAL": "250",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-only-traces=1",
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "x-m=2",
        },
    )
    try:
        assert export is not None and export.interval_seconds == 0.25
        assert export.exporter.endpoint == "http://c:4318/v1/metrics"
        assert export.exporter.headers.get("x-m") == "2" and "x-only-traces" not in export.exporter.headers
    finally:
        export.shutdown(0.1)


class _Sink(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["content-length"])))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


async def test_periodic_export_reaches_a_collector_and_drops_when_it_is_away() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    registry = _registry()
    resource, scope = LeanResource({"service.name": "t"}), LeanScope("modelway.proxy")
    exporter = OTLPHttpSpanExporter(endpoint=f"http://127.0.0.1:{server.server_port}/v1/metrics", environ={})
    export = MetricExport(registry=registry, exporter=exporter, resource=resource, scope=scope, interval_seconds=0.05)
    task = asyncio.create_task(export.run())
    await asyncio.sleep(0.3)
    task.cancel()
    assert export.force_flush(5)
    assert _Sink.bodies and export.exported_points > 0 and export.failed_exports == 0
    ExportMetricsServiceRequest.FromString(_Sink.bodies[-1])
    export.shutdown()
    server.shutdown()

    # A collector that is not there: the loop never waits; copies past the queue are dropped and counted.
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    exporter = OTLPHttpSpanExporter(endpoint=f"http://127.0.0.1:{dead}/v1/metrics", environ={}, timeout=0.5)
    export = MetricExport(registry=registry, exporter=exporter, resource=resource, scope=scope, interval_seconds=1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(50):
        export.collect_now()
    assert loop.time() - started < 0.5
    assert export.dropped_exports >= 40
    assert export.force_flush(10)
    assert export.failed_exports >= 1 and export.exported_points == 0
    export.shutdown(1)
