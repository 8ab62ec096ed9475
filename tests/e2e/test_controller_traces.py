"""A real controller process (folder source) and a real sidecar connected to it, tracing to a
real Jaeger: a sidecar's first push and a config change's reconcile -> compile, push show up
as traces of their own, with how many sidecars the push reached. The controller's admin
port answers the probes and serves its metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.harness.jaeger import JaegerServer
from tests.integration.sidecar import REPO, SidecarProcess, free_port

pytestmark = pytest.mark.e2e

CONFIG = """
apiVersion: v1
kind: Secret
metadata: {{name: keys, labels: {{modelway.io/credentials: "true"}}}}
stringData: {{openai: sk-e2e-controller-key}}
---
apiVersion: modelway.io/v1alpha1
kind: ModelProvider
metadata: {{name: openai}}
spec: {{type: openai, baseURL: "http://127.0.0.1:9/v1", credentialsRef: {{name: keys, key: openai}}}}
---
apiVersion: modelway.io/v1alpha1
kind: ModelRoute
metadata: {{name: chat}}
spec:
  model: chat
  rules:
    - backends: [{{provider: openai, model: {model}}}]
"""


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait(predicate: Any, what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := predicate():
                return result
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span["tags"]}


def test_controller_push_is_its_own_trace(jaeger: JaegerServer, tmp_path: Path) -> None:
    service = f"modelway-controller-e2e-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "config"
    config.mkdir()
    (config / "all.yaml").write_text(CONFIG.format(model="gpt-4o"))
    port, admin_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_http_endpoint,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRICS_EXPORTER": "none",
    }
    token = tmp_path / "token"
    log = (tmp_path / "controller.log").open("wb")
    controller = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller",
            "--source",
            "files",
            "--config-dir",
            str(config),
            "--listen",
            f"127.0.0.1:{port}",
            "--dev-token-file",
            str(token),
            "--admin-listen",
            f"127.0.0.1:{admin_port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )
    admin = f"http://127.0.0.1:{admin_port}"
    try:
        _wait(lambda: _get(admin + "/readyz")[0] == 200, "the controller's /readyz")
        assert _get(admin + "/healthz") == (200, '{"status": "ok"}')
        sidecar = SidecarProcess(
            source_args=[
                "--controller",
                f"http://127.0.0.1:{port}",
                "--token-file",
                str(token),
                "--reconnect-max-seconds",
                "1",
            ]
        )
        with sidecar:
            first = sidecar.admin("/readyz")[1]["version"]
            (config / "all.yaml").write_text(CONFIG.format(model="gpt-4o-mini"))  # a change: recompute, push
            sidecar.wait_for_version(lambda v: v != first)

            def found(traces: list[dict[str, Any]]) -> bool:
                names = [sorted(s["operationName"] for s in t["spans"]) for t in traces]
                return (
                    ["compile", "push", "reconcile"] in names
                    and ["push"] in names
                    and any(
                        _tags(s).get("modelway.sidecars.reached") == 1
                        for t in traces
                        for s in t["spans"]
                        if s["operationName"] == "push" and len(t["spans"]) == 3
                    )
                )

            traces = jaeger.wait_for_traces(service, found)
            # the config change: reconcile -> compile, push (reached the one connected sidecar)
            changed = next(
                t
                for t in traces
                if len(t["spans"]) == 3
                and any(
                    _tags(s).get("modelway.sidecars.reached") == 1 for s in t["spans"] if s["operationName"] == "push"
                )
            )
            spans = {s["operationName"]: s for s in changed["spans"]}
            root = spans["reconcile"]
            assert root["references"] == [] and _tags(root)["modelway.sidecars.reached"] == 1
            for child in ("compile", "push"):
                [ref] = spans[child]["references"]
                assert ref["refType"] == "CHILD_OF" and ref["spanID"] == root["spanID"]
            assert _tags(spans["push"])["modelway.sidecars.connected"] == 1
            assert _tags(spans["compile"])["modelway.routes"] == 1
            assert spans["compile"]["startTime"] + spans["compile"]["duration"] <= spans["push"]["startTime"] + 1
            # the sidecar's first connection: a push trace of its own, naming the sidecar
            [attach] = [t for t in traces if [s["operationName"] for s in t["spans"]] == ["push"]]
            attach_tags = _tags(attach["spans"][0])
            assert attach_tags["modelway.sidecars.reached"] == 1 and attach_tags["modelway.sidecar"].startswith(
                "default/"
            )
            assert "sk-e2e-controller-key" not in json.dumps(traces)

            # metrics on the admin port: one sidecar, two pushes ACKed
            def acked_twice() -> str | None:
                text = _get(admin + "/metrics")[1]
                return text if "modelway_controller_push_to_ack_duration_seconds_count 2" in text else None

            text = _wait(acked_twice, "two ACKs in /metrics")
            assert "\nmodelway_controller_sidecars 1\n" in text
            assert "\nmodelway_controller_snapshot_pushes_total 2\n" in text
            assert "\nmodelway_controller_sidecars_out_of_date 0\n" in text
            assert "modelway_controller_sidecar_snapshot_age_seconds{modelway_sidecar=" in text
            assert "sk-e2e-controller-key" not in text
    finally:
        controller.terminate()
        try:
            controller.wait(10)
        except subprocess.TimeoutExpired:
            controller.kill()
        log.close()
