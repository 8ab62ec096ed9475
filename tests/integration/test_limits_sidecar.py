"""Limits on the sidecar's request path, through a real sidecar process (in-process counters): what the
app sees of a refusal in each API, the official SDKs' retry, settlement with the real usage, quota-aware
failover and budgets."""

from __future__ import annotations

import json
import math
import socket
import time
import urllib.request
from typing import Any

import anthropic
import openai
import pytest

from proxy.limits.estimate import estimate
from proxy.snapshot import ModelPricing
from tests.integration.limits_sidecar import (
    POLICY,
    PRICE_IN,
    PRICE_OUT,
    assert_cache_reads_and_writes_charged_at_their_prices,
    capacity,
    chat,
    counter_standing,
    limit,
    post,
)
from tests.integration.sidecar import SidecarProcess


@pytest.fixture
def start(limited_sidecar: Any) -> Any:
    return limited_sidecar


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


def test_a_refusal_is_an_anthropic_error_with_the_anthropic_rate_limit_headers(start: Any) -> None:
    sidecar = start(limits=[limit("rpm", requestsPerMinute=1)])
    body = {"model": "claude", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    status, headers, _ = post(sidecar.base_url, "/v1/messages", body)
    assert status == 200 and headers["anthropic-ratelimit-requests-limit"] == "1"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    status, headers, raw = post(sidecar.base_url, "/v1/messages", body)
    assert status == 429, raw
    answer = json.loads(raw)
    assert answer["type"] == "error" and answer["error"]["type"] == "rate_limit_error"
    assert "limit rpm of ModelPolicy team-a/caps" in answer["error"]["message"]
    assert int(headers["retry-after-ms"]) > 55_000 and headers["retry-after"] == "60"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert headers["anthropic-ratelimit-requests-reset"].endswith("Z")


def _exhaust(sidecar: SidecarProcess, path: str, body: dict[str, Any]) -> None:
    for _ in range(200):
        if post(sidecar.base_url, path, body)[0] == 429:
            return
    raise AssertionError("the limit never refused")


def test_the_official_sdks_retry_after_retry_after_ms_and_get_through(start: Any) -> None:
    # Spent at once, the bucket takes one request back every 2 s: the SDKs' first try is refused.
    sidecar = start(limits=[limit("rpm", requestsPerMinute=30)])
    oai = openai.OpenAI(base_url=sidecar.base_url + "/v1", api_key="x", max_retries=3, timeout=20)
    _exhaust(sidecar, "/v1/chat/completions", chat())
    started = time.monotonic()
    answer = oai.chat.completions.with_raw_response.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    assert answer.http_response.status_code == 200 and answer.retries_taken >= 1
    assert 0.5 < time.monotonic() - started < 10  # it waited what retry-after-ms said (its own backoff: < 0.5 s)
    claude = anthropic.Anthropic(base_url=sidecar.base_url, api_key="x", max_retries=3, timeout=20)
    messages = {"model": "claude", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    _exhaust(sidecar, "/v1/messages", messages)
    reply = claude.messages.with_raw_response.create(**messages)  # type: ignore[call-overload]
    assert reply.http_response.status_code == 200 and reply.retries_taken >= 1


def _standing(sidecar: SidecarProcess, name: str, measure: str, want: int, timeout: float = 5.0) -> dict[str, Any]:
    """The counter's standing once its spend is `want` (settlement runs after the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        status, page = sidecar.admin("/limits")
        assert status == 200
        standing = counter_standing(page, name, measure)
        if standing.get("spentMicroUsd") == want or time.monotonic() > deadline:
            return standing
        time.sleep(0.05)


def _stream_usage(raw: bytes) -> tuple[int, int]:
    for line in raw.decode().splitlines():
        if line.startswith("data: {") and '"usage": {' in line.replace('"usage":{', '"usage": {'):
            usage = json.loads(line[6:])["usage"]
            if usage:
                return usage["prompt_tokens"], usage["completion_tokens"]
    raise AssertionError(f"no usage in the stream: {raw[-500:]!r}")


def test_a_stream_is_charged_its_final_usage_not_its_reservation(start: Any) -> None:
    sidecar = start(limits=[limit("budget", usdPerDay=100), limit("tpm", tokensPerMinute=1_000_000)])
    body = chat(stream=True, stream_options={"include_usage": True}, max_tokens=500)
    status, headers, raw = post(sidecar.base_url, "/v1/chat/completions", body)
    assert status == 200 and headers["x-ratelimit-limit-tokens"] == "1000000"  # a stream's head has them too
    used_in, used_out = _stream_usage(raw)
    real = math.ceil(used_in * PRICE_IN + used_out * PRICE_OUT)
    reserved = _reserved_micro_usd(body)
    assert real < reserved
    assert _standing(sidecar, "budget", "usd_day", real)["spentMicroUsd"] == real


def test_a_budget_charges_prompt_cache_reads_and_writes_at_their_own_prices(start: Any, fake_anthropic: Any) -> None:
    sidecar = start(limits=[limit("budget", usdPerDay=100)])
    assert_cache_reads_and_writes_charged_at_their_prices(
        sidecar, fake_anthropic, lambda want: _standing(sidecar, "budget", "usd_day", want)["spentMicroUsd"]
    )


def _reserved_micro_usd(body: dict[str, Any]) -> int:
    demand = estimate(
        prompt_bytes=len(json.dumps(body).encode()),
        requested_output=body.get("max_tokens"),
        pricing=ModelPricing(input_per_million=PRICE_IN, output_per_million=PRICE_OUT),
    )
    return demand.micro_usd()


def test_a_cut_stream_is_charged_the_estimate(start: Any, fake_openai: Any) -> None:
    sidecar = start(limits=[limit("budget", usdPerDay=100)])
    fake_openai.script([{"cut_after_chunks": 2}])
    body = chat(stream=True, stream_options={"include_usage": True}, max_tokens=300)
    status, _, raw = post(sidecar.base_url, "/v1/chat/completions", body)
    assert status == 200 and b"stream_cut" in raw
    reserved = _reserved_micro_usd(body)
    assert _standing(sidecar, "budget", "usd_day", reserved)["spentMicroUsd"] == reserved


def test_spent_capacity_fails_over_to_the_next_backend_before_any_429(start: Any, fake_openai: Any) -> None:
    sidecar = start(oai_capacity=[capacity("gpt-4o", requestsPerMinute=2)])
    served = []
    for _ in range(5):
        status, _, raw = post(sidecar.base_url, "/v1/chat/completions", chat("failover"))
        assert status == 200, raw  # the app never sees the spent quota while a backend has some
        served.append(json.loads(raw)["model"])
    assert served == ["gpt-4o", "gpt-4o", "gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini"]
    assert [r["json"]["model"] for r in fake_openai.requests()] == served  # nothing sent past the quota
    _, metrics = _get(sidecar.admin_url + "/metrics")
    skips = 'modelway_limits_capacity_skips_total{modelway_route="failover",modelway_backend="oai/gpt-4o"} 3'
    assert skips in metrics
    status, _, raw = post(sidecar.base_url, "/v1/chat/completions", chat("gpt"))  # no backend left with capacity
    assert status == 429 and "'s capacity gpt-4o is reached" in json.loads(raw)["error"]["message"]


def test_a_spent_budget_refuses_with_insufficient_quota_and_no_retry(start: Any) -> None:
    sidecar = start(limits=[limit("daily", usdPerDay=0.0001)])  # 100 micro-USD: one request spends it
    assert post(sidecar.base_url, "/v1/chat/completions", chat(max_tokens=20))[0] == 200
    status, headers, raw = post(sidecar.base_url, "/v1/chat/completions", chat(max_tokens=20))
    assert status == 429
    error = json.loads(raw)["error"]
    assert (
        error["code"] == "insufficient_quota" and "limit daily of ModelPolicy team-a/caps is spent" in error["message"]
    )
    assert headers["x-should-retry"] == "false"
    logs = sidecar.logs()
    audit = [json.loads(line[line.index("{") :]) for line in logs.splitlines() if '"audit":"modelway.policy"' in line]
    assert any(a["decision"] == "refuse" and a["limit"] == "daily" and a["policy"] == [POLICY] for a in audit), logs
    assert _access_line(sidecar, "insufficient_quota")["status"] == 429
    _, metrics = _get(sidecar.admin_url + "/metrics")
    assert _sample(metrics, "modelway_limits_refusals_total") == 1


def test_a_spent_budget_that_reroutes_is_served_by_the_cheaper_backend(start: Any) -> None:
    cheaper = [{"provider": "spare", "model": "gpt-4o-mini"}]
    sidecar = start(limits=[limit("daily", usdPerDay=0.0001, onBudgetSpent="reroute", rerouteTo=cheaper)])
    first = post(sidecar.base_url, "/v1/chat/completions", chat(max_tokens=20))
    second = post(sidecar.base_url, "/v1/chat/completions", chat(max_tokens=20))
    assert first[0] == second[0] == 200
    assert json.loads(first[2])["model"] == "gpt-4o" and json.loads(second[2])["model"] == "gpt-4o-mini"
    assert any('"decision":"reroute"' in line and '"limit":"daily"' in line for line in sidecar.logs().splitlines())


def test_limits_page_shows_what_binds_and_where_it_stands(start: Any) -> None:
    sidecar = start(limits=[limit("rpm", requestsPerMinute=10, routes=["gpt"])])
    assert post(sidecar.base_url, "/v1/chat/completions", chat())[0] == 200
    status, page = sidecar.admin("/limits")
    assert status == 200 and page["store"] == {"kind": "in-process", "source": "in-process"}
    [entry] = page["limits"]
    assert (
        entry["owner"] == POLICY
        and entry["limit"] == 10
        and entry["binds"] == [{"route": "gpt", "provider": "oai", "model": "gpt-4o"}]
    )
    assert entry["standing"]["remaining"] == 9


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def _sample(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def _access_line(sidecar: SidecarProcess, error_type: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in sidecar.logs().splitlines():
            if line.startswith("{") and (entry := json.loads(line)).get("error_type") == error_type:
                return dict(entry)
        time.sleep(0.05)
    raise AssertionError(f"no access line with error_type {error_type}: {sidecar.logs()[-2000:]}")


def test_a_concurrency_lease_is_returned_when_the_provider_fails_and_when_the_client_leaves(
    start: Any, fake_openai: Any
) -> None:
    sidecar = start(limits=[limit("one-at-a-time", concurrentRequests=1)])
    fake_openai.script([{"status": 500}])
    assert post(sidecar.base_url, "/v1/chat/completions", chat())[0] == 502
    assert post(sidecar.base_url, "/v1/chat/completions", chat())[0] == 200  # the failed call's lease is back

    fake_openai.script([{"stall": 30}])  # the provider holds the call: the client gives up first
    body = json.dumps(chat(stream=True)).encode()
    with socket.create_connection(("127.0.0.1", sidecar.port)) as gone:
        head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        gone.sendall(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body)
        deadline = time.monotonic() + 5
        while post(sidecar.base_url, "/v1/chat/completions", chat())[0] != 429:  # the lease is held meanwhile
            assert time.monotonic() < deadline
    deadline = time.monotonic() + 5
    while (status := post(sidecar.base_url, "/v1/chat/completions", chat())[0]) != 200:
        assert status == 429 and time.monotonic() < deadline, "the lease of the request whose client left is held"
        time.sleep(0.05)
