"""The jaeger fixture is a real Jaeger: spans sent with the OTLP exporters
come back from its query API."""

from __future__ import annotations

import uuid

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter

from tests.harness.jaeger import JaegerServer

pytestmark = pytest.mark.e2e


def _send_span(exporter: SpanExporter, service: str) -> str:
    """Export one span named "smoke" through ``exporter``; its hex trace id."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("harness-smoke").start_as_current_span("smoke") as span:
        span.set_attribute("smoke.ok", True)
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    return trace_id


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_otlp_span_comes_back_from_query_api(jaeger: JaegerServer, transport: str) -> None:
    service = f"smoke-{transport}-{uuid.uuid4().hex[:8]}"
    exporter: SpanExporter = (
        GrpcExporter(endpoint=jaeger.otlp_grpc_endpoint, insecure=True)
        if transport == "grpc"
        else HttpExporter(endpoint=jaeger.otlp_http_traces_url)
    )
    trace_id = _send_span(exporter, service)

    (trace,) = jaeger.wait_for_traces(service)
    assert trace["traceID"].lstrip("0") == trace_id.lstrip("0")
    (span,) = trace["spans"]
    assert span["operationName"] == "smoke"
    assert {"key": "smoke.ok", "type": "bool", "value": True} in span["tags"]
    assert trace["processes"][span["processID"]]["serviceName"] == service
    assert service in jaeger.services()
    # The by-id endpoint serves the same trace.
    assert jaeger.api(f"/api/traces/{trace_id}")["data"][0]["traceID"] == trace["traceID"]
