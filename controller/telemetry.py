"""The controller's traces and metrics, with the OpenTelemetry SDK, configured by OTEL_*.

Traces: one trace per recompute, `reconcile` with `compile` and `push` children
(the push says how many sidecars were connected and how many it reached), and a
`push` trace when a sidecar connects and is sent its snapshot. Exported by
OTLP/HTTP (or gRPC with OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL=grpc) when an
endpoint is set; the stock exporters read their settings from the environment.

Metrics (`controller.metrics`): always recorded and served as Prometheus text on
the admin port; also exported by OTLP when an endpoint is set and
OTEL_METRICS_EXPORTER is not `none`. OTEL_SDK_DISABLED=true turns both off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import NoOpTracer, Span, Tracer

from controller.metrics import ControllerMetrics, render_prometheus

log = logging.getLogger("modelway.controller")


class ControllerTelemetry:
    def __init__(
        self,
        *,
        tracer: Tracer | None = None,
        meter_provider: Any = None,
        reader: Any = None,
        closers: Sequence[Any] = (),
    ) -> None:
        self.tracer = tracer or NoOpTracer()
        self.metrics = ControllerMetrics(meter=(meter_provider or NoOpMeterProvider()).get_meter("modelway.controller"))
        self._meter_provider = meter_provider
        self._reader = reader  # InMemoryMetricReader for /metrics, or None (telemetry off)
        self._closers = tuple(closers)  # what shutdown() flushes and stops, in order

    @contextmanager
    def span(self, name: str, *, attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
        """A span, current for its body (so spans started inside are its children)."""
        with self.tracer.start_as_current_span(name, attributes=attributes) as span:
            yield span

    def prometheus_text(self) -> str:
        return render_prometheus(self._reader.get_metrics_data() if self._reader is not None else None)

    def shutdown(self) -> None:
        for closer in self._closers:
            try:
                closer.shutdown()
            except Exception:  # exiting anyway: a collector that is away must not turn exit into a crash
                log.exception("telemetry shutdown")


def _endpoint_set(environ: Mapping[str, str], signal: str) -> bool:
    return any(environ.get(k) for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))


def build_controller_telemetry(
    *, service_name: str = "modelway-controller", environ: Mapping[str, str] = os.environ
) -> ControllerTelemetry:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ControllerTelemetry()
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource

    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or service_name}).merge(
        OTELResourceDetector().detect()
    )
    closers: list[Any] = []
    tracer = None
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").lower() != "none" and _endpoint_set(environ, "TRACES"):
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER, as the SDK reads it
        provider.add_span_processor(BatchSpanProcessor(_span_exporter(environ)))
        tracer = provider.get_tracer("modelway.controller")
        closers.append(provider)
    reader = InMemoryMetricReader()
    readers: list[Any] = [reader]
    if environ.get("OTEL_METRICS_EXPORTER", "otlp").lower() not in ("none", "prometheus") and _endpoint_set(
        environ, "METRICS"
    ):
        readers.append(PeriodicExportingMetricReader(_metric_exporter(environ)))
    # Exemplars link a measurement to the span current when it was taken. The controller records on
    # every sidecar's ACK (5,000 per change at 5,000 sidecars) with no span current, so the default
    # trace-based filter only costs a third of each record; OTEL_METRICS_EXEMPLAR_FILTER still decides.
    exemplars: dict[str, Any] = (
        {} if environ.get("OTEL_METRICS_EXEMPLAR_FILTER") else {"exemplar_filter": AlwaysOffExemplarFilter()}
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=readers, **exemplars)
    closers.insert(0, meter_provider)
    return ControllerTelemetry(tracer=tracer, meter_provider=meter_provider, reader=reader, closers=closers)


def _protocol(environ: Mapping[str, str], signal: str) -> str:
    return (
        environ.get(
            f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        )
        .strip()
        .lower()
    )


def _span_exporter(environ: Mapping[str, str]) -> Any:
    if _protocol(environ, "TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Grpc()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _metric_exporter(environ: Mapping[str, str]) -> Any:
    if _protocol(environ, "METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return Grpc()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter()
