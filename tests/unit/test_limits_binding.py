"""Which counters bind a request (matched once per snapshot), and what a request reserves."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.limits.binding import LimitTable
from proxy.limits.estimate import BYTES_PER_TOKEN, DEFAULT_OUTPUT_TOKENS, estimate, requested_output_tokens
from proxy.snapshot import ModelPricing, Snapshot, parse_snapshot


def _backend(provider: str, model: str) -> dict[str, Any]:
    return {"provider": provider, "model": model}


def snapshot(limits: list[dict[str, Any]], capacity: list[dict[str, Any]] | None = None) -> Snapshot:
    return parse_snapshot(
        {
            "providers": [
                {"name": "team-a.openai", "type": "openai", "baseUrl": "https://api.openai.com/v1",
                 "capacity": capacity or []},
                {"name": "team-a.vllm", "type": "openai-compatible", "baseUrl": "http://vllm:8000/v1"},
                {"name": "team-a.cheap", "type": "openai-compatible", "baseUrl": "http://cheap:8000/v1"},
            ],
            "routes": [
                {"name": "team-a/chat", "model": "chat", "rules": [
                    {"backends": [_backend("team-a.openai", "gpt-4o")], "fallbacks": [_backend("team-a.vllm", "llama")]}
                ]},
                {"name": "team-a/batch", "model": "batch",
                 "rules": [{"backends": [_backend("team-a.openai", "gpt-4o-mini")]}]},
            ],
            "policy": {"workload": "team-a/bot", "limits": limits},
        }
    )  # fmt: skip


def limit(name: str, **spec: Any) -> dict[str, Any]:
    return {"policy": "ModelPolicy team-a/caps", "name": name, "key": f"ModelPolicy/team-a/caps/{name}/policy", **spec}


def names(table: LimitTable, route: str, provider: str, model: str, **kw: Any) -> list[tuple[str, str]]:
    return [(c.name, c.measure) for c in table.counters(route, provider, model, **kw)]


def test_no_limits_and_no_capacity_make_an_empty_table() -> None:
    table = LimitTable.build(snapshot([]))
    assert table.empty and table.counters("team-a/chat", "team-a.openai", "gpt-4o") == ()


def test_globs_on_routes_providers_and_models_are_matched_at_load() -> None:
    table = LimitTable.build(
        snapshot(
            [
                limit("all", requestsPerMinute=100),
                limit("chat-only", tokensPerMinute=1000, routes=["chat"]),
                limit("openai", concurrentRequests=4, providers=["open*"]),
                limit("minis", usdPerDay=5, models=["*-mini"]),
            ]
        )
    )
    assert names(table, "team-a/chat", "team-a.openai", "gpt-4o") == [
        ("all", "requests"), ("chat-only", "tokens"), ("openai", "concurrency")
    ]  # fmt: skip
    assert names(table, "team-a/chat", "team-a.vllm", "llama") == [("all", "requests"), ("chat-only", "tokens")]
    assert names(table, "team-a/batch", "team-a.openai", "gpt-4o-mini") == [
        ("all", "requests"), ("openai", "concurrency"), ("minis", "usd_day")
    ]  # fmt: skip
    assert table.counters("team-a/batch", "team-a.vllm", "llama") == ()  # not a backend of that route


def test_counter_keys_and_amounts_come_from_the_limit() -> None:
    table = LimitTable.build(snapshot([limit("caps", tokensPerMinute=1000, usdPerMonth=12.5, failureMode="closed")]))
    tokens, budget = table.counters("team-a/chat", "team-a.openai", "gpt-4o")
    assert tokens.key == "ModelPolicy/team-a/caps/caps/policy/tokens" and tokens.limit == 1000
    assert budget.key == "ModelPolicy/team-a/caps/caps/policy/usd_month" and budget.limit == 12_500_000
    assert budget.owner == "ModelPolicy team-a/caps" and budget.failure_mode == "closed"


def test_capacity_binds_the_models_its_glob_matches() -> None:
    capacity = [{"key": "ModelProvider/team-a/openai/capacity/gpt-4o", "model": "gpt-4o", "tokensPerMinute": 30_000}]
    table = LimitTable.build(snapshot([], capacity))
    (quota,) = table.counters("team-a/chat", "team-a.openai", "gpt-4o")
    assert quota.capacity and quota.owner == "ModelProvider team-a/openai" and quota.name == "capacity gpt-4o"
    assert table.counters("team-a/batch", "team-a.openai", "gpt-4o-mini") == ()


def test_a_rerouted_request_is_not_counted_by_the_budget_that_rerouted_it() -> None:
    reroute = limit(
        "budget",
        usdPerDay=10,
        requestsPerMinute=100,
        onBudgetSpent="reroute",
        rerouteTo=[_backend("team-a.cheap", "small")],
    )
    table = LimitTable.build(snapshot([reroute]))
    assert names(table, "team-a/chat", "team-a.cheap", "small") == [("budget", "requests"), ("budget", "usd_day")]
    assert names(table, "team-a/chat", "team-a.cheap", "small", rerouted=True) == [("budget", "requests")]
    (_, budget) = table.counters("team-a/chat", "team-a.openai", "gpt-4o")
    assert [(b.provider, b.model) for b in budget.reroute_to] == [("team-a.cheap", "small")]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"max_tokens": 300}, 300),
        ({"max_completion_tokens": 200, "max_tokens": 300}, 200),
        ({"max_output_tokens": 50}, 50),
        ({"generationConfig": {"maxOutputTokens": 70}}, 70),
        ({"max_tokens": True}, None),
        ({"max_tokens": 0}, None),
        ({}, None),
    ],
)
def test_the_output_bound_is_read_in_every_api_spelling(body: dict[str, Any], expected: int | None) -> None:
    assert requested_output_tokens(body) == expected


def test_the_estimate_reserves_the_prompt_conservatively_and_the_bound_or_a_default() -> None:
    pricing = ModelPricing(input_per_million=2.5, output_per_million=10.0)
    asked = estimate(prompt_bytes=1001, requested_output=300, pricing=pricing)
    assert asked.input_tokens == 501 == -(-1001 // BYTES_PER_TOKEN) and asked.output_tokens == 300
    assert asked.micro_usd() == 1253 + 3000  # 501 x 2.5 rounded up, plus 300 x 10
    assert estimate(prompt_bytes=0, requested_output=None).output_tokens == DEFAULT_OUTPUT_TOKENS
    assert estimate(prompt_bytes=0, requested_output=None, output_limit=8192).output_tokens == 8192
    assert estimate(prompt_bytes=0, requested_output=100_000, output_limit=8192).output_tokens == 8192
    assert estimate(prompt_bytes=10, requested_output=5).micro_usd() == 0  # no prices: budgets see nothing


def test_english_text_is_overestimated_against_a_typical_four_bytes_a_token() -> None:
    prompt = "The quick brown fox jumps over the lazy dog. " * 40
    assert estimate(prompt_bytes=len(prompt.encode()), requested_output=1).input_tokens >= len(prompt.encode()) / 4


def test_the_limits_package_imports_no_redis_client_until_one_is_built() -> None:
    """A sidecar without a Redis URL (or without limits) never pays for a client's import, and a plain
    redis:// URL never for redis-py's."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from proxy.limits import binding, estimate, headers, memory, settings\n"
        "limiter = settings.build_limiter(settings.LimitSettings())\n"
        "assert type(limiter).__name__ == 'InProcessLimiter'\n"
        "assert not [m for m in sys.modules if m == 'redis' or m.startswith('redis.')], 'redis imported'\n"
        "assert 'proxy.limits.redis_store' not in sys.modules\n"
        "settings.build_limiter(settings.LimitSettings(redis_url='redis://127.0.0.1:1/0'))\n"
        "assert 'proxy.limits.redis_store' in sys.modules  # the lean client, not redis-py\n"
        "assert not [m for m in sys.modules if m == 'redis' or m.startswith('redis.')], 'redis-py imported'\n"
        "settings.build_limiter(settings.LimitSettings(redis_url='redis+sentinel://127.0.0.1:1/main'))\n"
        "assert 'redis.asyncio' in sys.modules  # Sentinel (and Cluster) go through redis-py\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
