"""The chart's sidecar.egress values reach the injected sidecar as the proxy variables it reads."""

from __future__ import annotations

from typing import Any

from controller.webhook.inject import SidecarSettings
from proxy.egress import EgressSettings
from tests.unit.test_inject import env_of, inject, pod


def _sidecar_env(**settings: Any) -> dict[str, Any]:
    mapping = {"image": "img:2", "controllerURL": "https://c:15012", **settings}
    (sidecar,) = inject(pod(), settings=SidecarSettings.from_mapping(mapping))["spec"]["initContainers"]
    return env_of(sidecar)


def test_egress_settings_become_the_sidecars_proxy_variables() -> None:
    env = _sidecar_env(httpsProxy="http://proxy.corp:3128", httpProxy="http://proxy.corp:3128", noProxy=".svc,llm.corp")
    assert (env["HTTPS_PROXY"], env["HTTP_PROXY"], env["NO_PROXY"]) == (
        "http://proxy.corp:3128",
        "http://proxy.corp:3128",
        ".svc,llm.corp",
    )
    egress = EgressSettings.from_environ(env)  # as the sidecar reads them at start-up
    proxy = egress.proxy_for("api.openai.com", 443, tls=True)
    assert proxy is not None and proxy.name == "proxy.corp:3128"
    assert egress.proxy_for("llm.corp", 443, tls=True) is None


def test_no_egress_values_no_proxy_variables() -> None:
    env = _sidecar_env(httpsProxy="", httpProxy="", noProxy="")
    assert not {"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"} & set(env)
