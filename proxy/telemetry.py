"""Traces: a server span per request, a CLIENT span per provider attempt.

Names and attributes follow the OpenTelemetry GenAI semantic conventions as of
semconv v1.37.0 (`gen_ai.provider.name`, `gen_ai.operation.name`, ...), plus
`modelway.*` attributes of our own. Prompt and completion text are never
recorded. The tracer and propagator are built in `__main__` and passed in.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import NoOpTracer, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SEMCONV_VERSION = "1.37.0"


class Telemetry:
    def __init__(self, *, tracer: Tracer | None = None, propagator: TextMapPropagator | None = None) -> None:
        self.tracer: Tracer = tracer or NoOpTracer()
        self.propagator = propagator or TraceContextTextMapPropagator()

    def extract(self, headers: Mapping[str, str]) -> Context:
        return self.propagator.extract(headers)

    def inject(self, headers: MutableMapping[str, str], span: Span) -> None:
        self.propagator.inject(headers, context=trace.set_span_in_context(span))

    def server_span(self, *, name: str, parent: Context, attributes: dict[str, Any]) -> AbstractContextManager[Span]:
        # Not "current": nothing reads the ambient context (client spans get their parent
        # explicitly), and attaching/detaching it costs on every request.
        return _ending(self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes))

    def client_span(self, *, name: str, parent: Span, attributes: dict[str, Any]) -> Span:
        return self.tracer.start_span(
            name, context=trace.set_span_in_context(parent), kind=SpanKind.CLIENT, attributes=attributes
        )


@contextmanager
def _ending(span: Span) -> Iterator[Span]:
    try:
        yield span
    finally:
        span.end()


def set_error(span: Span, error_type: str, message: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, message))


def build_tracer_provider(*, service_name: str, environ: Mapping[str, str] = os.environ) -> Any:
    """A TracerProvider configured by the standard OTEL_* variables, or None when tracing is off.

    Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set,
    unless OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none.
    """
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    exporter_name = environ.get("OTEL_TRACES_EXPORTER", "otlp").lower()
    endpoint_set = any(k in environ for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    if exporter_name == "none" or not endpoint_set:
        return None
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import _get_from_env_or_default

    protocol = environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[assignment]
    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", service_name)}).merge(
        OTELResourceDetector().detect()
    )
    provider = TracerProvider(resource=resource, sampler=_get_from_env_or_default())
    # BatchSpanProcessor: a bounded queue exported off the event loop, so a slow
    # or absent collector never holds up a request (spans are dropped instead).
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
