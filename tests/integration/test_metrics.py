"""Known traffic through a real sidecar process, then /metrics on its admin port: the counts,
token sums and cost are exactly what the traffic should have produced."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.integration.sidecar import SidecarProcess

OAI = {
    "gen_ai_provider_name": "openai",
    "gen_ai_request_model": "gpt-4o",
    "server_address": "127.0.0.1",
    "modelway_backend": "oai/gpt-4o",
}
CLAUDE = {
    "gen_ai_provider_name": "anthropic",
    "gen_ai_request_model": "claude-sonnet-4-5",
    "server_address": "127.0.0.1",
    "modelway_backend": "claude/claude-sonnet-4-5",
}


@pytest.fixture(scope="module")
def own_sidecar(snapshot_data: dict[str, Any]) -> Iterator[SidecarProcess]:
    with SidecarProcess(snapshot_data) as process:  # its own: the shared one's counts include other tests
        yield process


def _scrape(sidecar: SidecarProcess) -> str:
    with urllib.request.urlopen(sidecar.admin_url + "/metrics", timeout=5) as resp:
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        return resp.read().decode()


def _samples(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples of `name` whose labels include `labels` (port labels ignored)."""
    out = []
    for line in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            out.append(float(m.group(3)))
    return out


def _one(text: str, name: str, **labels: str) -> float:
    [value] = _samples(text, name, **labels)
    return value


def test_metrics_after_known_traffic(own_sidecar: SidecarProcess, fake_openai: Any, fake_anthropic: Any) -> None:
    client = own_sidecar.openai_client()
    usage = [
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": f"hello {i}"}]).usage
        for i in range(2)
    ]
    stream = client.chat.completions.create(model="gemini", messages=[{"role": "user", "content": "a b"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    fake_openai.script([{"status": 503}])
    client.chat.completions.create(model="resilient", messages=[{"role": "user", "content": "x"}])  # falls back
    fake_openai.script([{"status": 503}])
    client.chat.completions.create(model="retrying", messages=[{"role": "user", "content": "x"}])  # one retry
    fake_openai.script([{"status": 500}])
    fake_anthropic.script([{"status": 500}])
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="doomed", messages=[{"role": "user", "content": "x"}])

    text = _scrape(own_sidecar)
    ok = {"gen_ai_operation_name": "chat", "modelway_outcome": "ok"}
    assert _one(text, "modelway_requests_total", modelway_route="gpt", **ok, **OAI) == 2
    assert _one(text, "modelway_requests_total", modelway_route="gemini", gen_ai_provider_name="gcp.gemini", **ok) == 1
    assert _one(text, "modelway_requests_total", modelway_route="resilient", **ok, **CLAUDE) == 1
    assert (
        _one(
            text,
            "modelway_requests_total",
            modelway_route="doomed",
            modelway_outcome="error",
            error_type="all_backends_failed",
        )
        == 1
    )
    assert sum(_samples(text, "modelway_requests_total")) == 6

    # tokens and cost (oai prices gpt-4o at 2.5 / 10 USD per million tokens)
    tokens_in = sum(u.prompt_tokens for u in usage)
    tokens_out = sum(u.completion_tokens for u in usage)
    assert (
        _one(text, "gen_ai_client_token_usage_sum", modelway_route="gpt", gen_ai_token_type="input", **OAI) == tokens_in
    )
    assert _one(text, "gen_ai_client_token_usage_count", modelway_route="gpt", gen_ai_token_type="output", **OAI) == 2
    cost = _one(text, "modelway_cost_usd_total", modelway_route="gpt", **OAI)
    assert cost == pytest.approx((tokens_in * 2.5 + tokens_out * 10) / 1e6)
    assert not _samples(text, "modelway_cost_usd_total", modelway_route="gemini")  # no pricing: no cost

    # attempts, fallbacks, retries, time to first token
    attempts = "gen_ai_client_operation_duration_seconds_count"
    assert _one(text, attempts, modelway_route="resilient", error_type="5xx", **OAI) == 1
    assert _one(text, attempts, modelway_route="doomed", error_type="5xx", **CLAUDE) == 1
    assert sum(_samples(text, attempts, modelway_route="retrying")) == 2
    assert (
        _one(text, "modelway_fallbacks_total", modelway_route="resilient", modelway_fallback_reason="5xx", **CLAUDE)
        == 1
    )
    assert _one(text, "modelway_retries_total", modelway_route="retrying", modelway_retry_reason="5xx", **OAI) == 1
    assert _one(text, "gen_ai_server_time_to_first_token_seconds_count", modelway_route="gemini") == 1
    assert _one(text, "gen_ai_server_time_to_first_token_seconds_bucket", modelway_route="gemini", le="+Inf") == 1
    assert _one(text, "modelway_request_duration_seconds_count", modelway_route="gpt", modelway_outcome="ok") == 2
    assert _one(text, "modelway_snapshot_age_seconds") >= 0
    # no credentials in the page
    assert "sk-" not in text and "apiKey" not in text
