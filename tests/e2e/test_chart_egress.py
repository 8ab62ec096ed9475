"""`helm template`: sidecar.egress values land in the injection settings the controller reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controller.webhook.inject import SidecarSettings
from tests.harness.cli import Helm

pytestmark = pytest.mark.e2e

CHART = Path(__file__).resolve().parents[2] / "charts" / "modelway"


def _inject_settings(helm: Helm, *values: str) -> SidecarSettings:
    args = [arg for value in values for arg in ("--set", value)]
    out = helm("template", "mw", str(CHART), "--namespace", "modelway-system", *args).stdout
    docs = [doc for doc in yaml.safe_load_all(out) if doc]
    [config] = [d for d in docs if d["kind"] == "ConfigMap" and "sidecar.yaml" in d.get("data", {})]
    return SidecarSettings.from_mapping(yaml.safe_load(config["data"]["sidecar.yaml"]))


def test_egress_values_reach_the_injection_settings(helm_offline: Helm) -> None:
    default = _inject_settings(helm_offline)
    assert (default.https_proxy, default.http_proxy, default.no_proxy) == ("", "", "")
    settings = _inject_settings(
        helm_offline,
        "sidecar.egress.httpsProxy=http://proxy.corp:3128",
        "sidecar.egress.httpProxy=http://proxy.corp:3128",
        "sidecar.egress.noProxy=.svc\\,llm.corp",
    )
    assert settings.https_proxy == settings.http_proxy == "http://proxy.corp:3128"
    assert settings.no_proxy == ".svc,llm.corp"


def test_a_proxy_url_with_a_path_is_refused(helm_offline: Helm) -> None:
    with pytest.raises(Exception, match="httpsProxy"):
        _inject_settings(helm_offline, "sidecar.egress.httpsProxy=http://proxy/some/path")
