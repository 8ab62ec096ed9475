"""Spans from `build_tracer_provider` (the lean OTLP/HTTP exporter, and the stock
gRPC one when asked for) arrive in a real Jaeger whole: names, kinds,
attributes, events, status, parent links and the service name."""

from __future__ import annotations

import os
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from proxy.telemetry.configure import build_tracer_provider
from proxy.telemetry.otlp_export import OTLPHttpSpanExporter
from tests.harness.jaeger import JaegerServer

pytestmark = pytest.mark.e2e

APP_PARENT = 0x00F067AA0BA902B7


def _request_spans(provider, app_trace: int, n: int = 1) -> None:
    """What the sidecar makes per request: a SERVER span continuing the app's trace, a CLIENT span per attempt."""
    tracer = provider.get_tracer("modelway.proxy")
    app = SpanContext(app_trace, APP_PARENT, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    for i in range(n):
        with tracer.start_as_current_span(
            "chat gpt",
            context=trace.set_span_in_context(NonRecordingSpan(app)),
            kind=SpanKind.SERVER,
            attributes={
                "gen_ai.operation.name": "chat",
                "modelway.route": "gpt",
                "modelway.request": i,
                "gen_ai.request.temperature": 0.5,
                "modelway.streaming": False,
                "gen_ai.response.finish_reasons": ("stop", "length"),
                "modelway.note": "ünïcødé ✓",
            },
        ) as server:
            attempt = tracer.start_span(
                "chat gpt-4o",
                kind=SpanKind.CLIENT,
                attributes={"gen_ai.provider.name": "openai", "server.port": 443, "http.response.status_code": 503},
            )
            attempt.set_status(Status(StatusCode.ERROR, "upstream said 503"))
            attempt.end()
            server.add_event("modelway.fallback", {"modelway.from": "oai/gpt-4o", "modelway.attempt": 2})
            server.set_attribute("error.type", "5xx")
            server.set_status(Status(StatusCode.ERROR, "all backends failed"))


def _tags(span: dict) -> dict:
    return {t["key"]: t["value"] for t in span["tags"]}


def _check_trace(trace_json: dict, service: str, app_trace: int) -> None:
    assert int(trace_json["traceID"], 16) == app_trace
    by_name = {s["operationName"]: s for s in trace_json["spans"]}
    server, client = by_name["chat gpt"], by_name["chat gpt-4o"]
    assert {trace_json["processes"][s["processID"]]["serviceName"] for s in (server, client)} == {service}

    tags = _tags(server)
    assert tags["span.kind"] == "server" and _tags(client)["span.kind"] == "client"
    assert tags["gen_ai.operation.name"] == "chat" and tags["modelway.request"] == 0
    assert tags["gen_ai.request.temperature"] == 0.5 and tags["modelway.streaming"] is False
    assert tags["modelway.note"] == "ünïcødé ✓"
    assert '"stop"' in tags["gen_ai.response.finish_reasons"] and '"length"' in tags["gen_ai.response.finish_reasons"]
    assert tags["otel.status_code"] == "ERROR" and tags["otel.status_description"] == "all backends failed"
    assert tags["otel.scope.name"] == "modelway.proxy"
    client_tags = _tags(client)
    assert client_tags["server.port"] == 443 and client_tags["http.response.status_code"] == 503
    assert client_tags["otel.status_description"] == "upstream said 503"

    # parent links: server <- app's span (not exported), client <- server
    [server_ref] = server["references"]
    assert server_ref["refType"] == "CHILD_OF" and int(server_ref["spanID"], 16) == APP_PARENT
    [client_ref] = client["references"]
    assert client_ref["refType"] == "CHILD_OF" and client_ref["spanID"] == server["spanID"]

    [event] = server["logs"]
    fields = {f["key"]: f["value"] for f in event["fields"]}
    assert fields["event"] == "modelway.fallback"
    assert fields["modelway.from"] == "oai/gpt-4o" and fields["modelway.attempt"] == 2
    assert server["startTime"] <= event["timestamp"] <= server["startTime"] + server["duration"]
    assert client["startTime"] >= server["startTime"]


def _two_spans(traces: list[dict]) -> bool:
    return len(traces) == 1 and len(traces[0]["spans"]) >= 2


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_lean_exporter_spans_arrive_in_jaeger(jaeger: JaegerServer, compression: str) -> None:
    app_trace = uuid.uuid4().int  # each test its own trace: Jaeger groups spans by trace id
    service = f"modelway-lean-{compression}-{uuid.uuid4().hex[:8]}"
    provider = build_tracer_provider(
        service_name=service,
        environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_http_endpoint,
            "OTEL_EXPORTER_OTLP_COMPRESSION": compression,
            "OTEL_EXPORTER_OTLP_HEADERS": "x-modelway-test=yes",
        },
    )
    [processor] = provider._active_span_processor._span_processors
    exporter = processor.span_exporter
    assert isinstance(exporter, OTLPHttpSpanExporter)
    _request_spans(provider, app_trace)
    provider.shutdown()  # flushes the batch
    assert exporter.exported_spans == 2 and exporter.failed_spans == 0

    [found] = jaeger.wait_for_traces(service, _two_spans)
    assert len(found["spans"]) == 2
    _check_trace(found, service, app_trace)
    assert service in jaeger.services()


def test_many_batches_over_one_connection(jaeger: JaegerServer) -> None:
    app_trace = uuid.uuid4().int  # each test its own trace: Jaeger groups spans by trace id
    service = f"modelway-lean-batches-{uuid.uuid4().hex[:8]}"
    provider = build_tracer_provider(
        service_name=service,
        environ={"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_http_endpoint, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16"},
    )
    [processor] = provider._active_span_processor._span_processors
    exporter = processor.span_exporter
    _request_spans(provider, app_trace, n=100)  # 200 spans, batches of 16 as the queue fills
    provider.shutdown()
    assert exporter.exported_spans == 200 and exporter.failed_spans == 0
    assert exporter.connections_opened == 1 and exporter.requests_sent >= 13

    def all_spans(traces: list[dict]) -> bool:
        return len(traces) == 1 and len(traces[0]["spans"]) == 200

    [found] = jaeger.wait_for_traces(service, all_spans)
    assert {s["operationName"] for s in found["spans"]} == {"chat gpt", "chat gpt-4o"}


def test_grpc_protocol_still_reaches_jaeger(jaeger: JaegerServer, monkeypatch: pytest.MonkeyPatch) -> None:
    app_trace = uuid.uuid4().int  # each test its own trace: Jaeger groups spans by trace id
    service = f"modelway-grpc-{uuid.uuid4().hex[:8]}"
    # The stock gRPC exporter reads its endpoint from os.environ itself.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{jaeger.otlp_grpc_endpoint}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    provider = build_tracer_provider(service_name=service, environ=os.environ)
    [processor] = provider._active_span_processor._span_processors
    assert not isinstance(processor.span_exporter, OTLPHttpSpanExporter)
    _request_spans(provider, app_trace)
    provider.shutdown()

    [found] = jaeger.wait_for_traces(service, _two_spans)
    _check_trace(found, service, app_trace)
