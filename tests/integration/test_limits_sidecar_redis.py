"""Limits through a real sidecar process counting in a real Redis: the final usage of a stream charged
there, the snapshot's store preferred over the sidecar's flag, each limit's failureMode while Redis is
away and the counting once it is back, the store's password in no byte the sidecar emits, and no Redis
client loaded by a sidecar whose rules set no limit."""

from __future__ import annotations

import datetime as dt
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness.redis import RedisServer, RestartableRedis
from tests.integration.limits_sidecar import (
    PRICE_IN,
    PRICE_OUT,
    assert_cache_reads_and_writes_charged_at_their_prices,
    chat,
    limit,
    limited_snapshot,
    post,
)
from tests.integration.sidecar import REPO, SidecarProcess, free_port
from tests.integration.test_sidecar_footprint import RUN_AND_LIST

PASSWORD = "limits-pass-0a9f3c2e71"


def _day() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


def _usage(raw: bytes) -> tuple[int, int]:
    for line in raw.decode().splitlines():
        if line.startswith("data: {") and (usage := json.loads(line[6:]).get("usage")):
            return usage["prompt_tokens"], usage["completion_tokens"]
    raise AssertionError(f"no usage in the stream: {raw[-500:]!r}")


def _spent(redis: RedisServer, key: str, want: int, timeout: float = 5.0) -> int:
    """The budget's micro-USD in Redis once it is `want` (settlement runs after the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        value = int(redis.cli("GET", f"{{modelway}}:{key}/usd_day/{_day()}") or 0)
        if value == want or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture
def start(limited_sidecar: Any) -> Any:
    return limited_sidecar


def test_a_stream_is_charged_its_final_usage_in_redis(start: Any, redis: RedisServer) -> None:
    budget = limit("budget", usdPerDay=100)
    sidecar = start(limits=[budget], extra_args=["--limits-redis-url", redis.url])
    body = chat(stream=True, stream_options={"include_usage": True}, max_tokens=500)
    status, _, raw = post(sidecar.base_url, "/v1/chat/completions", body)
    assert status == 200
    used_in, used_out = _usage(raw)
    real = math.ceil(used_in * PRICE_IN + used_out * PRICE_OUT)
    assert _spent(redis, budget["key"], real) == real
    assert sidecar.admin("/limits")[1]["store"] == {"kind": "redis", "source": "flags"}


def test_a_budget_in_redis_charges_prompt_cache_reads_and_writes_at_their_own_prices(
    start: Any, redis: RedisServer, fake_anthropic: Any
) -> None:
    budget = limit("budget", usdPerDay=100)
    sidecar = start(limits=[budget], extra_args=["--limits-redis-url", redis.url])
    assert_cache_reads_and_writes_charged_at_their_prices(
        sidecar, fake_anthropic, lambda want: _spent(redis, budget["key"], want)
    )


def test_the_snapshots_store_wins_over_the_flag_and_its_url_is_never_shown(start: Any, redis: RedisServer) -> None:
    budget = limit("budget", usdPerDay=100)
    nowhere = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    store = {"url": redis.url, "timeoutSeconds": 0.5}
    sidecar = start(limits=[budget], limit_store=store, env={"MODELWAY_LIMITS_REDIS_URL": nowhere})
    status, _, raw = post(sidecar.base_url, "/v1/chat/completions", chat(max_tokens=20))
    assert status == 200
    usage = json.loads(raw)["usage"]
    real = math.ceil(usage["prompt_tokens"] * PRICE_IN + usage["completion_tokens"] * PRICE_OUT)
    assert _spent(redis, budget["key"], real) == real
    page = sidecar.admin("/limits")[1]
    assert page["store"] == {"kind": "redis", "source": "snapshot"}
    for shown in (json.dumps(page), json.dumps(sidecar.admin("/config")[1]), sidecar.logs()):
        assert redis.url not in shown and PASSWORD not in shown


@pytest.fixture
def own_redis_password() -> str:
    return PASSWORD


def test_redis_away_open_limits_serve_closed_ones_refuse_then_counting_resumes(
    start: Any, own_redis: RestartableRedis
) -> None:
    rate = limit("rate", requestsPerMinute=10_000, routes=["gpt"])  # failureMode open (a rate's default)
    budget = limit("budget", usdPerDay=100, failureMode="closed", routes=["claude"])
    sidecar = start(limits=[rate, budget], extra_args=["--limits-redis-url", own_redis.url, "--limits-timeout", "0.2"])
    messages = {"model": "claude", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    assert post(sidecar.base_url, "/v1/chat/completions", chat())[0] == 200
    assert post(sidecar.base_url, "/v1/messages", messages)[0] == 200

    own_redis.kill()
    began = time.monotonic()
    assert post(sidecar.base_url, "/v1/chat/completions", chat())[0] == 200  # open: served, uncounted
    status, headers, raw = post(sidecar.base_url, "/v1/messages", messages)  # closed: refused
    assert time.monotonic() - began < 5  # never a hang
    assert status == 503, raw
    answer = json.loads(raw)
    assert answer["type"] == "error" and "cannot be checked" in answer["error"]["message"]
    assert "retry-after" in headers
    _, metrics = _admin_text(sidecar, "/metrics")
    assert 'modelway_limits_store_unavailable_total{modelway_limit_failure_mode="closed"}' in metrics
    assert 'modelway_limits_store_unavailable_total{modelway_limit_failure_mode="open"}' in metrics

    own_redis.start()
    deadline = time.monotonic() + 20
    while post(sidecar.base_url, "/v1/messages", messages)[0] != 200:  # the pool reconnects on its next use
        assert time.monotonic() < deadline, sidecar.logs()[-3000:]
        time.sleep(0.2)
    spent = int(own_redis.cli("GET", f"{{modelway}}:{budget['key']}/usd_day/{_day()}") or 0)
    assert spent > 0  # counted again (the restarted Redis had lost everything)
    assert PASSWORD not in sidecar.logs()


def _admin_text(sidecar: SidecarProcess, path: str) -> tuple[int, str]:
    import urllib.request

    with urllib.request.urlopen(sidecar.admin_url + path, timeout=5) as response:
        return response.status, response.read().decode()


def _modules_loaded(tmp_path: Path, snapshot: dict[str, Any], env: dict[str, str]) -> list[str]:
    """The modules a sidecar on `snapshot` holds after serving one request, as it exits."""
    tmp_path.mkdir()
    snapshot_file, modules = tmp_path / "snapshot.json", tmp_path / "modules.json"
    snapshot_file.write_text(json.dumps(snapshot))
    port, admin = free_port(), free_port()
    args = ["--snapshot", str(snapshot_file), "--port", str(port), "--admin-port", str(admin)]
    log = (tmp_path / "sidecar.log").open("wb")
    full_env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "OTEL_SDK_DISABLED": "true", **env}
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_AND_LIST, str(modules), *args], cwd=REPO, env=full_env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status = post(f"http://127.0.0.1:{port}", "/v1/chat/completions", chat())[0]
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "sidecar.log").read_text()
                time.sleep(0.1)
        assert status == 200, (tmp_path / "sidecar.log").read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    return list(json.loads(modules.read_text()))


def test_a_sidecar_without_limits_never_loads_the_redis_client(
    tmp_path: Path, fake_openai: Any, fake_anthropic: Any, redis: RedisServer
) -> None:
    env = {"MODELWAY_LIMITS_REDIS_URL": redis.url}  # the flag is set, but no rule sets a limit
    plain = limited_snapshot(fake_openai.base_url, fake_anthropic.base_url)
    loaded = _modules_loaded(tmp_path / "plain", plain, env)
    assert not [m for m in loaded if m == "redis" or m.startswith("redis.") or m.startswith("proxy.limits.re")]
    limited = limited_snapshot(
        fake_openai.base_url, fake_anthropic.base_url, limits=[limit("rpm", requestsPerMinute=9)]
    )
    loaded = _modules_loaded(tmp_path / "limited", limited, env)
    assert "proxy.limits.resp" in loaded  # the check sees the client when it is there
    assert not [m for m in loaded if m == "redis" or m.startswith("redis.")]  # and it is the lean one
