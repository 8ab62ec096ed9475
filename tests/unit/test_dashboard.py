"""The Grafana dashboard loads, covers what the issue asks for, and every query names metrics
(and grouping labels) that the code really registers: the sidecar's registry and the
controller's instruments, converted to Prometheus names by the same code that serves /metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from controller.metrics import INSTRUMENTS
from controller.metrics import prometheus_names as controller_names
from proxy.telemetry.metrics import Registry, flatten, prometheus_name
from proxy.telemetry.sidecar_metrics import SidecarMetrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "charts" / "modelway" / "dashboards" / "modelway.json"

PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "le",
    "inf",
    "nan",
}


def _sidecar_families() -> dict[str, set[str]]:
    """Prometheus family -> its label names, from the sidecar's real instruments."""
    registry = Registry()
    SidecarMetrics(registry=registry)
    families: dict[str, set[str]] = {}
    for instrument in registry.instruments:
        names = {n.replace(".", "_") for n, _ in flatten(instrument.attributes, _placeholders(instrument.attributes))}
        families[prometheus_name(instrument)] = names | ({"le"} if instrument.kind == "histogram" else set())
    return families


def _placeholders(names: tuple) -> tuple:
    return tuple(_placeholders(n) if isinstance(n, tuple) else "x" for n in names)


def _controller_families() -> dict[str, set[str]]:
    labels = {"modelway.controller.sidecar.snapshot.age": {"modelway_sidecar", "modelway_snapshot_version"}}
    out = {}
    for prom, otel in controller_names().items():
        kind = next(k for n, k, _, _ in INSTRUMENTS if n == otel)
        out[prom] = labels.get(otel, set()) | ({"le"} if kind == "histogram" else set())
    return out


REGISTERED = {**_sidecar_families(), **_controller_families()}
FAMILIES = REGISTERED


def _series_names(expr: str) -> list[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, label
    names inside {...}, grouping labels or range durations."""
    stripped = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # ranges
    stripped = re.sub(r"\b(by|without)\s*\([^)]*\)", "", stripped)  # grouping
    names = []
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", stripped):
        word = m.group(0)
        after = stripped[m.end() :].lstrip()
        if after.startswith("(") or word.lower() in PROMQL_WORDS:
            continue  # a function, or a keyword
        names.append(word)
    return names


def _family(series: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix) and series.removesuffix(suffix) in FAMILIES:
            return series.removesuffix(suffix)
    return series


def _queries(dashboard: dict) -> list[tuple[str, str]]:
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            out.append((f"variable {variable['name']}", variable["definition"]))
    return out


def test_dashboard_loads_and_covers_the_issue() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "Modelway"
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "share by route",
        "share by model",
        "share by provider",
        "error",
        "fallback",
        "latency",
        "time to first token",
        "tokens",
        "cost",
        "sidecars",
        "push to ack",
        "snapshot age",
        "limit refusals by policy and limit",
        "without the shared store",
        "capacity skips",
        "backpressure refusals",
        "spend",
        "experiment traffic share by arm",
        "experiment error ratio by arm",
        "experiment latency",
        "experiment cost",
    ):
        assert topic in titles, topic
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("title, expr", _queries(json.loads(DASHBOARD.read_text())))
def test_every_query_names_metrics_the_code_emits(title: str, expr: str) -> None:
    if m := re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", expr):  # a variable: (metric, label)
        assert m.group(1) in FAMILIES and m.group(2) in FAMILIES[m.group(1)], expr
        return
    series = _series_names(expr)
    assert series, f"{title}: no metric in {expr!r}"
    for name in series:
        family = _family(name)
        assert family in FAMILIES, f"{title}: {name!r} is not a metric the code registers ({sorted(FAMILIES)})"
        if name != family:
            assert "le" in FAMILIES[family], f"{title}: {name} on a non-histogram"
    # grouping and matcher labels exist on the metrics they are used with
    labels = set(re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr))
    used = {label.strip() for group in labels for label in group.split(",") if label.strip()}
    used |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!=|=)", " ".join(re.findall(r"\{([^}]*)\}", expr))))
    available = set().union(*(FAMILIES[_family(s)] for s in series))
    assert used <= available, f"{title}: labels {sorted(used - available)} are not on {series}"


LIMITS_FAMILIES = (
    "modelway_limits_refusals_total",
    "modelway_limits_store_unavailable_total",
    "modelway_limits_capacity_skips_total",
    "modelway_backpressure_refusals_total",
    "modelway_backpressure_in_flight",
)


def test_the_limits_panels_use_the_limits_metrics() -> None:
    exprs = " ".join(expr for _, expr in _queries(json.loads(DASHBOARD.read_text())))
    for family in LIMITS_FAMILIES:
        assert family in REGISTERED, family
        assert family in exprs, family
    for error_type in ("rate_limit_exceeded", "insufficient_quota", "limits_unavailable", "overloaded"):
        assert error_type in exprs, error_type
