"""The admin port, live snapshot swaps, and keeping the last good snapshot."""

from __future__ import annotations

import copy
import json
import threading

import openai
import pytest

from tests.fakes.server import DEFAULT_KEYS
from tests.integration.sidecar import SidecarProcess


@pytest.fixture
def own_sidecar(snapshot_data):
    with SidecarProcess(copy.deepcopy(snapshot_data)) as process:
        yield process


def _client(sidecar: SidecarProcess) -> openai.OpenAI:
    return sidecar.openai_client()


def test_health_ready_and_config_without_secrets(sidecar):
    assert sidecar.admin("/healthz") == (200, {"status": "ok"})
    status, ready = sidecar.admin("/readyz")
    assert status == 200 and ready["ready"] and ready["version"]
    status, config = sidecar.admin("/config")
    dumped = json.dumps(config)
    assert status == 200 and "<redacted>" in dumped
    assert all(key not in dumped for key in DEFAULT_KEYS.values())
    assert {r["model"] for r in config["snapshot"]["routes"]} >= {"gpt", "claude"}


def test_credentials_never_reach_the_logs(sidecar, oai, fake_openai):
    fake_openai.script([{"status": 500}, {"status": 500}])
    with pytest.raises(openai.APIStatusError):
        oai.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}])
    logs = sidecar.logs()
    assert "attempt failed" in logs
    assert all(key not in logs for key in DEFAULT_KEYS.values())


def test_a_new_snapshot_swaps_in_without_dropping_requests_in_flight(own_sidecar, snapshot_data, fake_openai):
    client = _client(own_sidecar)
    _, before = own_sidecar.admin("/readyz")
    fake_openai.script([{"delay": 1.5}])
    results: list[str] = []
    slow = threading.Thread(
        target=lambda: results.append(
            client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "slow"}])
            .choices[0]
            .message.content
        )
    )
    slow.start()
    changed = copy.deepcopy(snapshot_data)
    gpt_route = next(r for r in changed["routes"] if r["model"] == "gpt")
    gpt_route["rules"][0]["backends"] = [{"provider": "claude", "model": "claude-sonnet-4-5"}]
    own_sidecar.write_snapshot(changed)
    own_sidecar.wait_for_version(lambda v: v != before["version"])
    reply = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}])
    assert reply.model == "claude-sonnet-4-5"
    slow.join(10)
    assert results == ["echo: slow"]


def test_a_bad_snapshot_is_refused_and_the_last_good_one_keeps_serving(own_sidecar):
    _, before = own_sidecar.admin("/readyz")
    own_sidecar.write_snapshot("routes: [{name: x, model: x, rules: [{backends: [{provider: ghost, model: m}]}]}]")
    client = _client(own_sidecar)
    deadline_logs = ""
    for _ in range(100):
        deadline_logs = own_sidecar.logs()
        if "keeping the last good snapshot" in deadline_logs:
            break
        threading.Event().wait(0.05)
    assert "unknown provider 'ghost'" in deadline_logs
    assert own_sidecar.admin("/readyz")[1]["version"] == before["version"]
    assert client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}]).model == "gpt-4o"


def test_bad_snapshot_at_start_exits_with_a_clear_message(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "s.yaml"
    path.write_text("providers: [{name: x, type: openai, baseUrl: ftp://nope}]")
    result = subprocess.run([sys.executable, "-m", "proxy", "--snapshot", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "providers.0.baseUrl" in result.stderr or "providers.0.base_url" in result.stderr
