"""The controller's metrics (OpenTelemetry SDK instruments) and their Prometheus text.

The controller is not on a request path, so it uses the SDK as it comes: a
MeterProvider with an in-memory reader that `/metrics` renders at scrape time,
plus a periodic OTLP reader when an endpoint is set (`controller.telemetry`).
The controller may import only `proxy.snapshot` from the sidecar, so the
Prometheus rendering (the OpenTelemetry Prometheus-compatibility naming) is its own.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics.export import Gauge, Histogram, MetricsData, Sum

ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# (name, kind, unit, description): the instruments ControllerMetrics makes, in one place so the
# dashboard test checks its queries against exactly these.
INSTRUMENTS = (
    ("modelway.controller.sidecars", "gauge", "{sidecar}", "Sidecars connected to this controller replica."),
    (
        "modelway.controller.sidecars.out_of_date",
        "gauge",
        "{sidecar}",
        "Connected sidecars whose acknowledged snapshot is not the one they should run.",
    ),
    (
        "modelway.controller.sidecar.snapshot.age",
        "gauge",
        "s",
        "Per sidecar: seconds since it acknowledged the snapshot it runs.",
    ),
    ("modelway.controller.snapshot.pushes", "counter", "{push}", "Snapshots sent to sidecars."),
    ("modelway.controller.snapshot.nacks", "counter", "{nack}", "Snapshots a sidecar refused (NACK)."),
    ("modelway.controller.push_to_ack.duration", "histogram", "s", "From sending a snapshot to its ACK."),
    ("modelway.controller.reconcile.duration", "histogram", "s", "One recompute: judge, compile, push."),
)


class ControllerMetrics:
    """The instruments; `watch(controller)` gives the observable ones their source."""

    def __init__(self, *, meter: Meter) -> None:
        spec = {name: (unit, description) for name, _, unit, description in INSTRUMENTS}
        self._controller: Any = None

        def gauge(name: str, read: Callable[[Any], Iterable[Observation]]) -> None:
            def callback(options: CallbackOptions) -> Iterable[Observation]:
                return list(read(self._controller)) if self._controller is not None else []

            meter.create_observable_gauge(name, callbacks=[callback], unit=spec[name][0], description=spec[name][1])

        gauge("modelway.controller.sidecars", lambda c: [Observation(len(c.sidecars))])
        gauge(
            "modelway.controller.sidecars.out_of_date",
            lambda c: [
                Observation(
                    sum(
                        1
                        for s in c.sidecars
                        if s.compiled is not None and s.acked_version != s.compiled.snapshot.version
                    )
                )
            ],
        )
        gauge(
            "modelway.controller.sidecar.snapshot.age",
            lambda c: [
                Observation(
                    time.time() - s.acked_at, {"modelway.sidecar": s.name, "modelway.snapshot.version": s.acked_version}
                )
                for s in c.sidecars
                if s.acked_version and s.acked_at
            ],
        )
        self.pushes = meter.create_counter(
            "modelway.controller.snapshot.pushes", *spec["modelway.controller.snapshot.pushes"]
        )
        self.nacks = meter.create_counter(
            "modelway.controller.snapshot.nacks", *spec["modelway.controller.snapshot.nacks"]
        )
        self.ack_latency = meter.create_histogram(
            "modelway.controller.push_to_ack.duration",
            *spec["modelway.controller.push_to_ack.duration"],
            explicit_bucket_boundaries_advisory=ACK_BUCKETS,
        )
        self.reconcile = meter.create_histogram(
            "modelway.controller.reconcile.duration",
            *spec["modelway.controller.reconcile.duration"],
            explicit_bucket_boundaries_advisory=RECONCILE_BUCKETS,
        )

    def watch(self, controller: Any) -> None:
        self._controller = controller


# ---------------------------------------------------------------------------
# Prometheus text (format 0.0.4)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": ""}
_BAD = re.compile(r"[^a-zA-Z0-9_:]+")


def _sanitize(name: str) -> str:
    name = _BAD.sub("_", name)
    return "_" + name if name[:1].isdigit() else name


def prometheus_name(name: str, unit: str, kind: str) -> str:
    unit = re.sub(r"\{[^}]*\}", "", unit or "")
    unit = _sanitize(_UNITS.get(unit, unit)) if unit else ""
    name = _sanitize(name)
    if unit and not name.endswith("_" + unit):
        name = f"{name}_{unit}"
    return name + "_total" if kind == "counter" and not name.endswith("_total") else name


def prometheus_names() -> dict[str, str]:
    """Prometheus family name -> OTel name of every controller instrument."""
    return {prometheus_name(name, unit, kind): name for name, kind, unit, _ in INSTRUMENTS}


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1 << 53):
        return str(int(value))
    return repr(float(value))


def _labels(attributes: Any, extra: str = "") -> str:
    pairs = [
        f'{_sanitize(k)}="' + str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        for k, v in sorted((attributes or {}).items())
    ]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def render_prometheus(data: MetricsData | None) -> str:
    lines: list[str] = []
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points = metric.data
                kind = (
                    "counter"
                    if isinstance(points, Sum) and points.is_monotonic
                    else "histogram"
                    if isinstance(points, Histogram)
                    else "gauge"
                )
                name = prometheus_name(metric.name, metric.unit or "", kind)
                lines += [f"# HELP {name} {metric.description}", f"# TYPE {name} {kind}"]
                if not isinstance(points, Histogram):
                    assert isinstance(points, (Sum, Gauge))  # no view here makes exponential histograms
                    lines += [f"{name}{_labels(p.attributes)} {_number(p.value)}" for p in points.data_points]
                    continue
                for point in points.data_points:
                    running = 0
                    for bound, count in zip((*point.explicit_bounds, math.inf), point.bucket_counts, strict=True):
                        running += count
                        le = 'le="' + _number(bound) + '"'
                        lines.append(f"{name}_bucket{_labels(point.attributes, le)} {running}")
                    lines.append(f"{name}_sum{_labels(point.attributes)} {_number(point.sum)}")
                    lines.append(f"{name}_count{_labels(point.attributes)} {point.count}")
    return "\n".join(lines) + "\n"
