"""Telemetry as the standard OTEL_* variables configure it, built once by `__main__`.

`build_telemetry` makes the request path's `Telemetry` (`proxy.telemetry.facade`): the tracer
(`build_tracer_provider`: the lean recorder, or the OpenTelemetry SDK for gRPC or on request),
the metrics registry with its OTLP export, and whether prompt text is captured. Nothing here
runs per request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from proxy.telemetry.facade import Telemetry
from proxy.telemetry.sidecar_metrics import SidecarMetrics

log = logging.getLogger(__name__)


def build_tracer_provider(*, service_name: str, environ: Mapping[str, str] = os.environ) -> Any:
    """A tracer provider configured by the standard OTEL_* variables, or None when tracing is off.

    Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set,
    unless OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none.

    The default protocol, http/protobuf, gets a `proxy.telemetry.tracing.LeanTracerProvider`: spans of
    plain values behind the OpenTelemetry API, a lock-free bounded queue and one export thread
    posting with the lean exporter of `proxy.telemetry.otlp_export` (no `requests`, no protobuf runtime).
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
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"))
        .strip()
        .lower()
    )
    exporter: Any
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        from proxy.telemetry.otlp_export import OTLPHttpSpanExporter

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
    # Sidecar defaults, unless OTEL_BSP_* say otherwise: a queue of 1024 instead of
    # the SDK's 2048, because the queue is the memory bound of tracing in every
    # pod (1024 ended spans, kept as their OTLP bytes, ~550 each: ~0.55 MiB, 512
    # requests' worth at 2 spans each). A batch of 512 (the SDK's, half the queue) starts an export
    # early and leaves the other half to fill meanwhile; under load, batches of
    # 256 cost the event loop's core ~7 % more (bench.sidecar_telemetry), for ~0.2 MiB
    # less peak RSS under load now that queued spans are bytes (bench.sidecar). When the collector falls behind,
    # spans past the queue are dropped, not buffered: counted in the lean queue's
    # `dropped_spans` (the SDK path logs them and counts them in
    # otel.sdk.processor.span.processed{error.type=queue_full} with
    # OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED=true); the exporter counts
    # exported_spans / failed_spans.
    max_queue_size = bsp_setting("OTEL_BSP_MAX_QUEUE_SIZE", 1024)
    max_export_batch_size = min(bsp_setting("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), max_queue_size)
    export_timeout_millis = bsp_setting("OTEL_BSP_EXPORT_TIMEOUT", 30000)
    use_sdk = protocol == "grpc" or environ.get("MODELWAY_TRACER", "").strip().lower() == "sdk"
    if not use_sdk:
        from proxy.telemetry.tracing import LeanTracerProvider

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

    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", service_name)}).merge(
        OTELResourceDetector().detect()
    )
    provider = TracerProvider(resource=resource)  # its sampler from OTEL_TRACES_SAMPLER[_ARG]
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


def build_telemetry(*, service_name: str, holder: Any, environ: Mapping[str, str] = os.environ) -> Telemetry:
    """Traces, metrics and content capture as the OTEL_* variables say.

    OTEL_SDK_DISABLED=true turns all of it off (no spans, no metrics recorded: /metrics is
    empty). Otherwise metrics are recorded and served as Prometheus text on the admin port,
    and also exported by OTLP/HTTP when an endpoint is set (`proxy.telemetry.otlp_metrics`); traces
    as `build_tracer_provider` says."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Telemetry()
    from proxy.telemetry.content import CAPTURE_VARIABLE
    from proxy.telemetry.metrics import Registry
    from proxy.telemetry.otlp_metrics import build_metric_export
    from proxy.telemetry.sampling import build_resource
    from proxy.telemetry.sidecar_metrics import telemetry_drops

    tracer_provider = build_tracer_provider(service_name=service_name, environ=environ)
    registry = Registry()
    metric_export = build_metric_export(
        registry=registry, resource=build_resource(service_name, environ), environ=environ
    )
    queue = getattr(tracer_provider, "queue", None)  # the lean provider's; the SDK's counts its own
    drops = telemetry_drops(
        span_queue=queue, span_exporter=getattr(queue, "exporter", None), metric_export=metric_export
    )
    telemetry = Telemetry(
        tracer=tracer_provider.get_tracer("modelway.proxy") if tracer_provider else None,
        metrics=SidecarMetrics(registry=registry, holder=holder, telemetry_drops=drops),
        capture_content=environ.get(CAPTURE_VARIABLE, "").strip().lower() == "true",
    )
    telemetry.metric_export = metric_export
    telemetry.closers = [c for c in (metric_export, tracer_provider) if c is not None]
    return telemetry
