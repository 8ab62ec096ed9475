"""The 429 and the rate-limit headers, from decisions the in-process limiter really made."""

from __future__ import annotations

import datetime as dt

import pytest

from proxy.frontends.anthropic_messages import AnthropicFrontend
from proxy.frontends.openai_chat import OpenAIFrontend
from proxy.limits.headers import go_duration, rate_limit_headers, refusal_error, rfc3339
from proxy.limits.memory import InProcessLimiter
from proxy.limits.model import Counter, CounterState, Decision
from proxy.limits.redis_store import RedisLimiter, connect
from tests.limits_support.semantics import START, FakeClock, counter, demand


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.0201, "21ms"), (0.02, "20ms"), (1, "1s"), (1.5, "1.5s"), (12.25, "12.25s"), (360, "6m0s"),
     (3723, "1h2m3s"), (86400, "24h0m0s")],
)  # fmt: skip
def test_resets_are_written_as_go_durations_like_openai_does(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_anthropic_resets_are_rfc3339_rounded_up() -> None:
    assert rfc3339(START + 0.2) == "2026-03-31T23:00:01Z"
    assert rfc3339(START) == "2026-03-31T23:00:00Z"


async def refused_by(counters: list[Counter], *, reserve_first: int) -> tuple[Decision, FakeClock]:
    clock = FakeClock()
    limiter = InProcessLimiter(clock=clock)
    for _ in range(reserve_first):
        assert (await limiter.reserve(counters, demand(), lease_seconds=30)).allowed
    return await limiter.reserve(counters, demand(), lease_seconds=30), clock


async def test_a_token_refusal_is_an_openai_429_naming_the_limit_and_policy() -> None:
    rpm, tpm = counter("requests", 100, name="team-rate"), counter("tokens", 1000, name="team-tokens")
    decision, clock = await refused_by([rpm, tpm], reserve_first=3)
    error = refusal_error(decision, api="openai", now=clock())
    assert error.status == 429
    assert OpenAIFrontend().error_body(error) == {
        "error": {
            "message": "limit team-tokens of ModelPolicy team-a/caps is reached: 100 of 1000 tokens left this "
            "minute (a full minute's worth in 54s); retry in 12s",
            "type": "tokens",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert error.headers == {
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "97",
        "x-ratelimit-reset-requests": "1.8s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "100",
        "x-ratelimit-reset-tokens": "54s",
        "retry-after": "12",
        "retry-after-ms": "12000",
    }


async def test_the_same_refusal_for_anthropic_has_its_shape_and_reset_times() -> None:
    decision, clock = await refused_by([counter("requests", 2, name="rate")], reserve_first=2)
    error = refusal_error(decision, api="anthropic", now=clock())
    body = AnthropicFrontend().error_body(error)
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "limit rate of ModelPolicy team-a/caps is reached: 0 of 2 requests left" in body["error"]["message"]
    reset = dt.datetime.fromtimestamp(START + 60, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert error.headers == {
        "anthropic-ratelimit-requests-limit": "2",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": reset,
        "retry-after": "30",
        "retry-after-ms": "30000",
    }


async def test_anthropic_input_and_output_limits_have_their_own_headers_and_the_tightest_is_tokens() -> None:
    limits = [counter("input_tokens", 10_000, name="in"), counter("output_tokens", 500, name="out")]
    clock = FakeClock()
    decision = await InProcessLimiter(clock=clock).reserve(limits, demand(), lease_seconds=30)
    headers = rate_limit_headers(decision.states, api="anthropic", now=clock())
    assert headers["anthropic-ratelimit-input-tokens-remaining"] == "9900"
    assert headers["anthropic-ratelimit-output-tokens-remaining"] == "300"
    assert headers["anthropic-ratelimit-tokens-remaining"] == "300"
    assert rate_limit_headers(decision.states, api="openai", now=clock())["x-ratelimit-remaining-tokens"] == "300"
    # The Responses API is OpenAI's too: its SDK reads the same headers.
    responses = rate_limit_headers(decision.states, api="openai-responses", now=clock())
    assert responses["x-ratelimit-remaining-tokens"] == "300"


async def test_a_spent_budget_says_so_with_its_reset_and_asks_sdks_not_to_retry() -> None:
    budget = counter("usd_day", 5_000, name="daily")
    clock = FakeClock()
    limiter = InProcessLimiter(clock=clock)
    priced = demand(100, 200, price_in=10.0, price_out=20.0)
    assert (await limiter.reserve([budget], priced, lease_seconds=30)).allowed
    decision = await limiter.reserve([budget], priced, lease_seconds=30)
    error = refusal_error(decision, api="openai", now=clock())
    assert (error.status, error.type, error.code) == (429, "insufficient_quota", "insufficient_quota")
    assert error.message == (
        "limit daily of ModelPolicy team-a/caps is spent: $0.00 of $0.01 USD per day left; "
        "it resets at 2026-04-01T00:00:00Z"
    )
    assert error.headers == {"retry-after": "3600", "retry-after-ms": "3600000", "x-should-retry": "false"}


async def test_a_closed_limit_with_its_store_away_is_a_503_saying_why() -> None:
    limiter = RedisLimiter(connect("redis://127.0.0.1:1/0", timeout=0.05), timeout=0.05)
    try:
        daily = counter("usd_day", 10, name="daily", failure_mode="closed")
        decision = await limiter.reserve([daily], demand(), lease_seconds=30)
    finally:
        await limiter.close()
    error = refusal_error(decision, api="openai", now=START)
    assert (error.status, error.code) == (503, "limits_unavailable")
    assert "limit daily of ModelPolicy team-a/caps (USD per day) cannot be checked" in error.message
    assert error.headers["retry-after"] == "1"


async def test_a_provider_quota_is_named_as_the_providers() -> None:
    quota = Counter("ModelProvider/team-a/openai/capacity/gpt-4o/requests", "requests", 1,
                    "ModelProvider team-a/openai", "capacity gpt-4o", "open", capacity=True)  # fmt: skip
    decision, clock = await refused_by([quota], reserve_first=1)
    message = refusal_error(decision, api="openai", now=clock()).message
    assert message.startswith("ModelProvider team-a/openai's capacity gpt-4o is reached: 0 of 1 requests left")


def test_an_admitted_decision_has_nothing_to_refuse() -> None:
    state = CounterState(counter("requests", 1), True, 0, 60.0)
    with pytest.raises(ValueError, match="nothing to refuse"):
        refusal_error(Decision(True, (state,), None), api="openai", now=START)
