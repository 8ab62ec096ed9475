"""What the lean span recorder's tests share: a capturing exporter and a recorder built on it."""

from __future__ import annotations

import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from proxy.telemetry.sampling import LeanResource
from proxy.telemetry.tracing import LeanTracerProvider

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
APP_TRACE, APP_SPAN = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7
PROPAGATOR = TraceContextTextMapPropagator()


class Capture:
    """A span exporter keeping what it is given, as the lean queue gives it: each request decoded
    (`requests`), its spans (protobuf Spans, in order: `spans`) and how many the queue said it held."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS, delay: float = 0.0) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.spans: list = []
        self.batches: list[int] = []
        self.result, self.delay = result, delay
        self.shut = False
        self.failed_spans = 0  # (as the OTLP exporter counts them)

    def export_encoded(self, body, count):
        if self.delay:
            time.sleep(self.delay)
        request = ExportTraceServiceRequest.FromString(b"".join(body) if isinstance(body, list) else body)
        self.requests.append(request)
        self.spans += [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
        self.batches.append(count)
        return self.result

    def shutdown(self):
        self.shut = True


def _lean(environ=None, exporter=None, **kwargs) -> tuple[LeanTracerProvider, Capture]:
    exporter = exporter or Capture()
    kwargs.setdefault("resource", LeanResource({"service.name": "svc", "k8s.pod.name": "pod-ü"}))
    provider = LeanTracerProvider(exporter, environ=environ or {}, **kwargs)
    return provider, exporter


def _finished(provider: LeanTracerProvider, exporter: Capture) -> list:
    assert provider.force_flush(5000)
    assert sum(exporter.batches) == len(exporter.spans)  # each request held the spans the queue counted
    return exporter.spans


def _attrs(key_values) -> dict:
    out = {}
    for kv in key_values:
        which = kv.value.WhichOneof("value")
        value = getattr(kv.value, which) if which else None
        if which == "array_value":
            value = tuple(getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None for v in value.values)
        out[kv.key] = value
    return out
