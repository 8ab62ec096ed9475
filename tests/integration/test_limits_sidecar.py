"""Limits on the sidecar's request path, through a real sidecar process (in-process counters): what the
app sees of a refusal in each API, the official SDKs' retry, settlement with the real usage, quota-aware
failover and budgets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.limits_sidecar import chat, limit, limited_snapshot, post
from tests.integration.sidecar import SidecarProcess


@pytest.fixture
def start(fake_openai: Any, fake_anthropic: Any) -> Iterator[Any]:
    started: list[SidecarProcess] = []

    def run(**snapshot: Any) -> SidecarProcess:
        process = SidecarProcess(limited_snapshot(fake_openai.base_url, fake_anthropic.base_url, **snapshot))
        process.start()
        started.append(process)
        return process

    yield run
    for process in started:
        process.stop()


def test_a_refusal_is_an_openai_429_with_the_headers_the_sdk_reads(start: Any) -> None:
    sidecar = start(limits=[limit("rpm", requestsPerMinute=1)])
    status, headers, _ = post(sidecar.base_url, "/v1/chat/completions", chat())
    assert status == 200
    assert headers["x-ratelimit-limit-requests"] == "1" and headers["x-ratelimit-remaining-requests"] == "0"
    status, headers, body = post(sidecar.base_url, "/v1/chat/completions", chat())
    assert status == 429, body
    error = json.loads(body)["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert "limit rpm of ModelPolicy team-a/caps" in error["message"]
    assert 55_000 < int(headers["retry-after-ms"]) <= 60_000 and headers["retry-after"] == "60"
    assert headers["x-ratelimit-limit-requests"] == "1" and headers["x-ratelimit-remaining-requests"] == "0"
