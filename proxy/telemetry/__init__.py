"""Traces and metrics of the sidecar, behind one facade.

The request path imports only this package: `Telemetry` (`facade`, built once in
`__main__` by `build_telemetry` from the OTEL_* variables: `configure`) and `set_error`.
What sits behind it: a lean span recorder (`tracing`, `lean_span`, `sampling`,
`span_queue`) that the OpenTelemetry API drives, its OTLP/HTTP protobuf encoder and
exporter (`otlp_encode` on protobuf primitives in `otlp_wire`, `otlp_export`), the in-process metrics registry and its
Prometheus and OTLP forms (`metrics`, `sidecar_metrics`, `otlp_metrics`), a backend's
attributes and prices for both (`backends`), and the opt-in capture of prompt and
completion text (`content`).
"""

from proxy.telemetry.configure import build_telemetry
from proxy.telemetry.facade import Telemetry, set_error

__all__ = ["Telemetry", "build_telemetry", "set_error"]
