"""The lean OTLP/HTTP exporter: its bytes decode to exactly the official encoder's
message, its configuration follows the OTEL_EXPORTER_OTLP_* variables, and its
HTTP behaviour (keep-alive, retries, gzip, quiet failures) holds against a
local http.server."""

from __future__ import annotations

import gzip
import http.server
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as official_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from proxy.telemetry import otlp_export
from proxy.telemetry.configure import build_tracer_provider
from proxy.telemetry.otlp_encode import encode_spans
from proxy.telemetry.otlp_export import OTLPHttpSpanExporter, SpanExportResult
from tests.harness.certs import CertAuthority
from tests.unit.otlp_support import Collector, sdk_provider

REPO = Path(__file__).resolve().parents[2]
LOGGER = "proxy.telemetry.otlp_export"


# ---------------------------------------------------------------------------
# encoder


# ---------------------------------------------------------------------------
# configuration


def test_endpoint_resolution():
    assert otlp_export.resolve_endpoint({}) == "http://localhost:4318/v1/traces"
    assert otlp_export.resolve_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == "http://c:4318/v1/traces"
    assert (
        otlp_export.resolve_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c/otlp/"}) == "https://c/otlp/v1/traces"
    )
    both = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/custom"}
    assert otlp_export.resolve_endpoint(both) == "http://t:1/custom"  # used as-is
    with pytest.raises(ValueError):
        OTLPHttpSpanExporter(endpoint="collector:4318")


def test_headers_timeout_and_compression_from_env(caplog):
    assert otlp_export.parse_headers("Api-Key=secret%20value, x-tenant = a%3Db,bad,=x,") == {
        "api-key": "secret value",
        "x-tenant": "a=b",
    }
    env = {
        "OTEL_EXPORTER_OTLP_HEADERS": "a=1",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "GZIP",
    }
    exporter = OTLPHttpSpanExporter(environ=env, headers={"C": "3"})
    assert exporter.headers["b"] == "2" and "a" not in exporter.headers and exporter.headers["c"] == "3"
    assert exporter.headers["content-type"] == "application/x-protobuf"
    assert exporter.timeout == 2.5 and exporter.compression == "gzip" and exporter.headers["content-encoding"] == "gzip"
    assert (
        otlp_export.resolve_timeout({"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "100", "OTEL_EXPORTER_OTLP_TIMEOUT": "9000"})
        == 0.1
    )
    with caplog.at_level(logging.WARNING, LOGGER):
        assert otlp_export.resolve_timeout({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}) == 10.0
        assert otlp_export.resolve_compression({"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}) == "none"
    assert otlp_export.resolve_timeout({}) == 10.0


def test_https_uses_the_certificate_from_env(tmp_path):
    with pytest.raises(OSError):  # the CA file is read when the exporter is built
        OTLPHttpSpanExporter(
            environ={
                "OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4318",
                "OTEL_EXPORTER_OTLP_CERTIFICATE": str(tmp_path / "missing.pem"),
            }
        )
    exporter = OTLPHttpSpanExporter(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c"})
    assert exporter._ssl_context is not None and exporter._port == 443


# ---------------------------------------------------------------------------
# HTTP behaviour against a local server


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def spans():
    provider, out = sdk_provider(Resource.create({"service.name": "t"}))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("a", kind=SpanKind.SERVER, attributes={"x": 1}):
        tracer.start_span("b", kind=SpanKind.CLIENT).end()
    return list(out.get_finished_spans())


def _exporter(url: str, **env: str) -> OTLPHttpSpanExporter:
    return OTLPHttpSpanExporter(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": url, **env}, backoff=0.02)


def test_posts_protobuf_with_env_headers_and_reuses_the_connection(collector, spans):
    exporter = _exporter(collector.url + "/", OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer%20t0k,x-scope=a")
    for _ in range(3):
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert len(collector.requests) == 3 and collector.connections == 1  # kept alive
    request = collector.requests[0]
    assert request["path"] == "/v1/traces"
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["authorization"] == "Bearer t0k" and headers["x-scope"] == "a"
    assert ExportTraceServiceRequest.FromString(request["body"]) == official_encode(spans)
    assert exporter.exported_spans == 6 and exporter.failed_spans == 0
    exporter.shutdown()


def test_gzip(collector, spans):
    exporter = _exporter(collector.url, OTEL_EXPORTER_OTLP_TRACES_COMPRESSION="gzip")
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    [request] = collector.requests
    assert {k.lower(): v for k, v in request["headers"].items()}["content-encoding"] == "gzip"
    assert ExportTraceServiceRequest.FromString(gzip.decompress(request["body"])) == official_encode(spans)


@pytest.mark.parametrize("compression", ["none", "gzip", "deflate"])
def test_an_encoded_request_in_parts_is_posted_whole(collector, spans, compression):
    """The lean span queue hands over a request in parts (bytes and bytearrays): the collector gets the
    message they make, compressed as configured."""
    exporter = _exporter(collector.url, OTEL_EXPORTER_OTLP_COMPRESSION=compression)
    whole = encode_spans(spans)
    parts = [whole[:5], bytearray(whole[5:40]), b"", whole[40:]]
    assert exporter.export_encoded(parts, len(spans)) is SpanExportResult.SUCCESS
    [request] = collector.requests
    body = {"gzip": gzip.decompress, "deflate": zlib.decompress, "none": bytes}[compression](request["body"])
    assert body == whole and exporter.exported_spans == 2


def test_a_request_in_more_parts_than_one_system_call_takes_is_posted_whole(collector, spans):
    """A request in more parts than sendmsg takes buffers (1024): joined, posted all the same."""
    exporter = _exporter(collector.url)
    whole = encode_spans(spans)
    parts = [whole[i : i + 1] for i in range(len(whole))] + [b""] * 1500
    assert exporter.export_encoded(parts, len(spans)) is SpanExportResult.SUCCESS
    [request] = collector.requests
    assert request["body"] == whole and exporter.exported_spans == 2


def test_retries_503_and_429_then_succeeds(collector, spans, caplog):
    collector.script = [(503, {}), (429, {"Retry-After": "0"}), (200, {})]
    exporter = _exporter(collector.url)
    with caplog.at_level(logging.INFO, LOGGER):
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert len(collector.requests) == 3 and exporter.exported_spans == 2 and not caplog.records


def test_client_error_is_not_retried_and_failures_log_once_per_streak(collector, spans, caplog):
    collector.script = [(400, {}), (400, {}), (200, {}), (400, {})]
    exporter = _exporter(collector.url)
    with caplog.at_level(logging.INFO, LOGGER):
        results = [exporter.export(spans) for _ in range(4)]
    assert results == [
        SpanExportResult.FAILURE,
        SpanExportResult.FAILURE,
        SpanExportResult.SUCCESS,
        SpanExportResult.FAILURE,
    ]
    assert len(collector.requests) == 4
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO", "WARNING"]
    assert "HTTP 400" in caplog.records[0].getMessage()
    assert exporter.failed_spans == 6 and exporter.exported_spans == 2


def test_nothing_listening_fails_quietly(spans, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    exporter = _exporter(f"http://127.0.0.1:{port}", OTEL_EXPORTER_OTLP_TIMEOUT="300")
    with caplog.at_level(logging.DEBUG, LOGGER):
        started = time.monotonic()
        assert [exporter.export(spans) for _ in range(3)] == [SpanExportResult.FAILURE] * 3
        elapsed = time.monotonic() - started
    # each export is bounded by the 300 ms timeout (unbounded retries would wait out the 10 s default);
    # the rest is room for a loaded machine
    assert elapsed < 3.0
    [record] = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert record.levelname == "WARNING" and "ConnectionRefusedError" in record.getMessage()
    assert exporter.failed_spans == 6


def test_stale_kept_alive_connection_is_replaced(collector, spans, caplog):
    collector.close_after_response = True  # the server closes each connection silently after answering
    exporter = _exporter(collector.url)
    with caplog.at_level(logging.INFO, LOGGER):
        for _ in range(3):
            assert exporter.export(spans) is SpanExportResult.SUCCESS
            time.sleep(0.05)
    assert len(collector.requests) == 3 and collector.connections == 3 and not caplog.records


def test_https_with_the_ca_from_env_and_no_retries_for_an_untrusted_cert(tmp_path, spans, caplog):
    ca = CertAuthority(tmp_path / "ca")
    pair = ca.issue("collector", common_name="collector", hosts=("127.0.0.1",), server=True)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pair.cert, pair.key)
    collector = Collector(tls)
    try:
        trusted = _exporter(collector.url, OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE=str(ca.cert))
        assert trusted.export(spans) is SpanExportResult.SUCCESS and trusted.export(spans) is SpanExportResult.SUCCESS
        assert len(collector.requests) == 2 and trusted.connections_opened == 1
        untrusted = _exporter(collector.url)  # the system CAs do not know our CA
        with caplog.at_level(logging.WARNING, LOGGER):
            assert untrusted.export(spans) is SpanExportResult.FAILURE
        assert untrusted.connections_opened == 0 and "CERTIFICATE_VERIFY_FAILED" in caplog.text
    finally:
        collector.stop()


def test_partial_success_counts_rejected_spans(spans, caplog):
    class Partial(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            # ExportTraceServiceResponse{partial_success{rejected_spans: 1, error_message: "too old"}}
            body = b"\x0a\x0b\x08\x01\x12\x07too old"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Partial)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        exporter = _exporter(f"http://127.0.0.1:{server.server_address[1]}")
        with caplog.at_level(logging.WARNING, LOGGER):
            assert exporter.export(spans) is SpanExportResult.SUCCESS
            assert exporter.export(spans) is SpanExportResult.SUCCESS
        assert exporter.exported_spans == 2 and exporter.failed_spans == 2
        [record] = caplog.records
        assert "too old" in record.getMessage()
    finally:
        server.shutdown()
        server.server_close()


def test_shutdown_interrupts_retries_and_later_spans_are_dropped(collector, spans):
    collector.script = [(503, {})] * 1000
    exporter = OTLPHttpSpanExporter(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}, backoff=0.5)
    results = []
    worker = threading.Thread(target=lambda: results.append(exporter.export(spans)))
    worker.start()
    time.sleep(0.2)
    started = time.monotonic()
    exporter.shutdown()
    worker.join(2)
    assert time.monotonic() - started < 1.0 and results == [SpanExportResult.FAILURE]
    assert exporter.export(spans) is SpanExportResult.FAILURE and exporter.dropped_spans == 2


# ---------------------------------------------------------------------------
# build_tracer_provider


def _processor(provider):
    [processor] = provider._active_span_processor._span_processors
    return processor


def test_provider_uses_the_lean_exporter_and_sidecar_batch_sizes(collector):
    from proxy.telemetry.tracing import LeanTracerProvider, SpanQueue

    provider = build_tracer_provider(service_name="svc", environ={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url})
    try:
        assert isinstance(provider, LeanTracerProvider)
        queue = _processor(provider)  # the SDK-shaped path to the exporter still works
        assert isinstance(queue, SpanQueue) and queue is provider.queue
        assert isinstance(queue.span_exporter, OTLPHttpSpanExporter)
        assert queue.span_exporter.endpoint == collector.url + "/v1/traces"
        assert (queue.max_queue_size, queue.max_export_batch_size, queue.schedule_delay_millis) == (1024, 512, 1000)
        with provider.get_tracer("t").start_as_current_span("s"):
            pass
    finally:
        provider.shutdown()
    [request] = collector.requests
    [resource_spans] = ExportTraceServiceRequest.FromString(request["body"]).resource_spans
    assert {"key": "service.name", "value": "svc"} in [
        {"key": kv.key, "value": kv.value.string_value} for kv in resource_spans.resource.attributes
    ]

    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_MAX_QUEUE_SIZE": "100",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    provider = build_tracer_provider(service_name="svc", environ=env)
    queue = provider.queue
    assert (queue.max_queue_size, queue.max_export_batch_size, queue.schedule_delay_millis) == (100, 100, 50)
    provider.shutdown()


def test_modelway_tracer_sdk_keeps_the_sdk_provider_and_batch_processor(collector):
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "MODELWAY_TRACER": "sdk"}
    provider = build_tracer_provider(service_name="svc", environ=env)
    try:
        assert isinstance(provider, TracerProvider)
        processor = _processor(provider)
        assert isinstance(processor, BatchSpanProcessor)
        assert isinstance(processor.span_exporter, OTLPHttpSpanExporter)
        batch = processor._batch_processor
        assert (batch._max_queue_size, batch._max_export_batch_size) == (1024, 512)
        assert batch._schedule_delay_millis == 5000
        with provider.get_tracer("t").start_as_current_span("s"):
            pass
    finally:
        provider.shutdown()
    [request] = collector.requests
    [resource_spans] = ExportTraceServiceRequest.FromString(request["body"]).resource_spans
    assert {"key": "service.name", "value": "svc"} in [
        {"key": kv.key, "value": kv.value.string_value} for kv in resource_spans.resource.attributes
    ]


def test_bad_exporter_settings_turn_tracing_off_instead_of_failing_the_sidecar(caplog):
    with caplog.at_level(logging.ERROR, "proxy.telemetry.configure"):
        assert (
            build_tracer_provider(service_name="svc", environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}) is None
        )
    assert "tracing off" in caplog.text
    assert build_tracer_provider(service_name="svc", environ={}) is None  # no endpoint: tracing off, quietly


def test_grpc_protocol_keeps_the_stock_exporter():
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    provider = build_tracer_provider(
        service_name="svc",
        environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    )
    try:
        assert isinstance(_processor(provider).span_exporter, GrpcExporter)
    finally:
        provider.shutdown()


def test_tracing_imports_neither_requests_nor_the_stock_exporters():
    code = (
        "import sys; from proxy.telemetry.configure import build_tracer_provider\n"
        "p = build_tracer_provider(service_name='s', environ={'OTEL_EXPORTER_OTLP_ENDPOINT': 'http://127.0.0.1:1'})\n"
        "assert p is not None\n"
        "heavy = sorted(m for m in sys.modules if m == 'requests' or m.startswith(('opentelemetry.exporter', 'grpc',"
        " 'google.protobuf', 'opentelemetry.proto')))\n"
        "assert not heavy, heavy\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, timeout=30)
