"""The chart ships the dashboard: `helm template` renders the ConfigMap Grafana's sidecar loader
picks up (label grafana_dashboard: "1") holding exactly the JSON in the repo, and the
PodMonitors behind metrics.podMonitor.enabled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.harness.cli import Helm

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "modelway"


def _render(helm: Helm, *values: str) -> list[dict]:
    args = [arg for value in values for arg in ("--set", value)]
    out = helm("template", "mw", str(CHART), "--namespace", "modelway-system", *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_dashboard_configmap_and_pod_monitors(helm_offline: Helm) -> None:
    docs = _render(helm_offline)
    [dashboard] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["modelway.json"]) == json.loads(
        (CHART / "dashboards" / "modelway.json").read_text()
    )
    assert not [d for d in docs if d["kind"] == "PodMonitor"]  # off by default: needs the operator's CRDs

    docs = _render(
        helm_offline,
        "dashboard.enabled=false",
        "metrics.podMonitor.enabled=true",
        "metrics.podMonitor.labels.release=prom",
        "dashboard.namespace=grafana",
    )
    assert not [d for d in docs if d["metadata"]["name"].endswith("-dashboard")]
    monitors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodMonitor"}
    controller, sidecars = monitors["mw-modelway-controller"], monitors["mw-modelway-sidecars"]
    assert controller["spec"]["podMetricsEndpoints"] == [{"port": "admin", "path": "/metrics", "interval": "30s"}]
    assert sidecars["spec"]["podMetricsEndpoints"][0]["port"] == "mw-admin"
    assert sidecars["spec"]["namespaceSelector"] == {"any": True}
    assert controller["metadata"]["labels"]["release"] == "prom"
