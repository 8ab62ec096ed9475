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
    """A tracer provider configured by the standard OTEL_* variables, or None when tracing is off.

    Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set,
    unless OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none.

    The default protocol, http/protobuf, gets a `proxy.tracing.LeanTracerProvider`: spans of
    plain values behind the OpenTelemetry API, a lock-free bounded queue and one export thread
    posting with the lean exporter of `proxy.otlp_export` (no `requests`, no protobuf runtime).
    It offers `.get_tracer(name)`, `.force_flush()` and `.shutdown()` (all `__main__` uses).

    The OpenTelemetry SDK's TracerProvider + BatchSpanProcessor is used instead
    - with OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL=grpc (the stock gRPC exporter, imported only
      then; it reads its settings from os.environ itself), and
    - with MODELWAY_TRACER=sdk: the escape hatch should the lean recorder misbehave; it exports
      with the same lean OTLP/HTTP exporter, through the SDK's span and processor classes.
    """
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    exporter_name = environ.get("OTEL_TRACES_EXPORTER", "otlp").lower()
    endpoint_set = any(k in environ for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    if exporter_name == "none" or not endpoint_set:
        return None
    import logging

    log = logging.getLogger(__name__)
    protocol = environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    ).strip().lower()
    exporter: Any
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        from proxy.otlp_export import OTLPHttpSpanExporter

        if protocol != "http/protobuf":
            log.warning("OTLP protocol %r is not supported; using http/protobuf", protocol)
        try:
            exporter = OTLPHttpSpanExporter(environ=environ)
        except (ValueError, OSError) as exc:  # a telemetry typo must not take the data plane down
            log.error("tracing off: bad OTLP exporter settings: %s", exc)
            return None

    def bsp_setting(name: str, default: int) -> int:
        raw = environ.get(name, "").strip()
        try:
            value = int(raw) if raw else default
        except ValueError:
            value = -1
        if value <= 0:
            log.warning("%s=%r is not a positive integer; using %d", name, raw, default)
            return default
        return value

    # A bounded queue exported off the event loop, so a slow or absent collector
    # never holds up a request (spans are dropped instead).
    # Sidecar defaults, unless OTEL_BSP_* say otherwise: a queue of 512 instead of
    # the SDK's 2048, because the queue is the memory bound of tracing in every
    # pod (512 ended spans of ~1-2 KiB each, about 1 MiB: 256 requests' worth at
    # 2 spans each). A batch of 256 (half the queue) starts an export early and
    # leaves the other half to fill meanwhile. When the collector falls behind,
    # spans past the queue are dropped, not buffered: counted in the lean queue's
    # `dropped_spans` (the SDK path logs them and counts them in
    # otel.sdk.processor.span.processed{error.type=queue_full} with
    # OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED=true); the exporter counts
    # exported_spans / failed_spans.
    max_queue_size = bsp_setting("OTEL_BSP_MAX_QUEUE_SIZE", 512)
    max_export_batch_size = min(bsp_setting("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 256), max_queue_size)
    export_timeout_millis = bsp_setting("OTEL_BSP_EXPORT_TIMEOUT", 30000)
    use_sdk = protocol == "grpc" or environ.get("MODELWAY_TRACER", "").strip().lower() == "sdk"
    if not use_sdk:
        from proxy.tracing import LeanTracerProvider

        # Schedule delay 1 s instead of the spec's 5 s: at low traffic spans reach the
        # collector (and a developer's Jaeger) within a second, and a quiet export every
        # second costs the worker thread nothing measurable; under load the batch size,
        # not the timer, triggers exports anyway.
        return LeanTracerProvider(
            exporter,
            service_name=service_name,
            environ=environ,
            max_queue_size=max_queue_size,
            max_export_batch_size=max_export_batch_size,
            schedule_delay_millis=bsp_setting("OTEL_BSP_SCHEDULE_DELAY", 1000),
            export_timeout_millis=export_timeout_millis,
        )

    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import _get_from_env_or_default

    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", service_name)}).merge(
        OTELResourceDetector().detect()
    )
    provider = TracerProvider(resource=resource, sampler=_get_from_env_or_default())
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            max_queue_size=max_queue_size,
            max_export_batch_size=max_export_batch_size,
            schedule_delay_millis=bsp_setting("OTEL_BSP_SCHEDULE_DELAY", 5000),
            export_timeout_millis=export_timeout_millis,
        )
    )
    return provider
