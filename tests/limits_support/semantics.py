"""The limiter's semantics, one suite for both implementations (in-process and Redis).

A test module imports these tests and provides the `make_limiter` fixture: a function of a
`FakeClock` returning a limiter whose clock it is (the Redis limiter passes it to the script).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from proxy.limits.model import Counter, Demand, Measure, Usage
from proxy.snapshot import RerouteBackend

START = dt.datetime(2026, 3, 31, 23, 0, tzinfo=dt.UTC).timestamp()  # an hour before a day and a month end
LEASE = 30.0


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeLimiter = Callable[[FakeClock], Awaitable[Any]]
_serial = iter(range(1_000_000))


def counter(measure: Measure, limit: int, *, name: str = "lim", **extra: Any) -> Counter:
    # a fresh key per counter: the Redis suite shares one server between tests
    return Counter(
        key=f"ModelPolicy/t/p/{name}-{next(_serial)}/{measure}",
        measure=measure,
        limit=limit,
        owner="ModelPolicy team-a/caps",
        name=name,
        failure_mode=extra.pop("failure_mode", "open"),
        **extra,
    )


def demand(
    input_tokens: int = 100, output_tokens: int = 200, *, price_in: float = 0.0, price_out: float = 0.0
) -> Demand:
    return Demand(input_tokens, output_tokens, price_in, price_out)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def limiter(make_limiter: MakeLimiter, clock: FakeClock) -> Any:
    made = await make_limiter(clock)
    yield made
    await made.close()


async def test_a_token_bucket_admits_its_minute_then_says_when_the_next_fits(limiter: Any, clock: FakeClock) -> None:
    tokens = counter("tokens", 1000)
    for expected_remaining in (700, 400, 100):
        decision = await limiter.reserve([tokens], demand(), lease_seconds=LEASE)
        assert decision.allowed and decision.states[0].remaining == expected_remaining
    refused = await limiter.reserve([tokens], demand(), lease_seconds=LEASE)
    assert not refused.allowed and refused.reservation is None
    assert refused.refusal is not None and refused.refusal.counter == tokens
    assert refused.refusal.remaining == 100
    assert refused.refusal.retry_after_seconds == pytest.approx(12.0)  # 200 tokens over, 1000 a minute
    assert refused.refusal.reset_seconds == pytest.approx(54.0)  # 900 in use
    clock.advance(11.9)
    assert not (await limiter.reserve([tokens], demand(), lease_seconds=LEASE)).allowed
    clock.advance(0.1)
    assert (await limiter.reserve([tokens], demand(), lease_seconds=LEASE)).allowed


async def test_requests_per_minute_count_one_a_request(limiter: Any, clock: FakeClock) -> None:
    rpm = counter("requests", 60)
    results = [(await limiter.reserve([rpm], demand(), lease_seconds=LEASE)).allowed for _ in range(61)]
    assert results == [True] * 60 + [False]
    clock.advance(1.0)  # one request's worth of refill
    assert (await limiter.reserve([rpm], demand(), lease_seconds=LEASE)).allowed
    assert not (await limiter.reserve([rpm], demand(), lease_seconds=LEASE)).allowed


async def test_all_pass_or_none_is_charged(limiter: Any) -> None:
    roomy, tight = counter("tokens", 10_000), counter("input_tokens", 150)
    assert (await limiter.reserve([roomy, tight], demand(), lease_seconds=LEASE)).allowed
    refused = await limiter.reserve([roomy, tight], demand(), lease_seconds=LEASE)
    assert not refused.allowed and refused.refusal is not None and refused.refusal.counter == tight
    assert [s.ok for s in refused.states] == [True, False]
    assert refused.states[0].remaining == 10_000 - 300  # reported as it stands: the refusal charged nothing
    alone = await limiter.reserve([roomy], demand(), lease_seconds=LEASE)
    assert alone.states[0].remaining == 10_000 - 600  # charged twice, not three times


async def test_a_request_bigger_than_the_bucket_passes_only_into_a_full_one(limiter: Any, clock: FakeClock) -> None:
    tokens = counter("tokens", 1000)
    assert (await limiter.reserve([tokens], demand(10, 10), lease_seconds=LEASE)).allowed
    huge = demand(1000, 500)
    refused = await limiter.reserve([tokens], huge, lease_seconds=LEASE)
    assert not refused.allowed and refused.refusal is not None
    assert refused.refusal.retry_after_seconds == pytest.approx(1.2)  # until the 20 in use are refilled
    clock.advance(1.2)
    assert (await limiter.reserve([tokens], huge, lease_seconds=LEASE)).allowed
    after = await limiter.reserve([tokens], demand(1, 0), lease_seconds=LEASE)
    assert not after.allowed and after.refusal is not None
    assert after.refusal.retry_after_seconds == pytest.approx(30.06)  # 1500 in use: 501 over, 1000 a minute


async def test_settlement_returns_what_was_not_used_and_charges_what_was(limiter: Any) -> None:
    tokens = counter("tokens", 1000)
    first = await limiter.reserve([tokens], demand(400, 500), lease_seconds=LEASE)
    assert first.reservation is not None
    await limiter.settle(first.reservation, Usage(400, 100))  # stopped early: 400 of 900 back
    second = await limiter.reserve([tokens], demand(100, 100), lease_seconds=LEASE)
    assert second.states[0].remaining == 1000 - 500 - 200
    assert second.reservation is not None
    await limiter.settle(second.reservation, Usage(300, 400))  # used more than it reserved: charged
    refused = await limiter.reserve([tokens], demand(1, 0), lease_seconds=LEASE)
    assert not refused.allowed and refused.refusal is not None and refused.refusal.remaining == 0


async def test_concurrency_leases_are_returned_on_settlement_or_expire(limiter: Any, clock: FakeClock) -> None:
    inflight = counter("concurrency", 2)
    first = await limiter.reserve([inflight], demand(), lease_seconds=LEASE)
    second = await limiter.reserve([inflight], demand(), lease_seconds=LEASE)
    assert first.allowed and second.allowed and second.states[0].remaining == 0
    third = await limiter.reserve([inflight], demand(), lease_seconds=LEASE)
    assert not third.allowed and third.refusal is not None and third.refusal.retry_after_seconds == 1.0
    assert first.reservation is not None
    await limiter.settle(first.reservation, Usage(0, 0))
    assert (await limiter.reserve([inflight], demand(), lease_seconds=LEASE)).allowed
    assert not (await limiter.reserve([inflight], demand(), lease_seconds=LEASE)).allowed
    clock.advance(LEASE + 0.001)  # a crashed sidecar never settles: its leases expire
    assert (await limiter.reserve([inflight], demand(), lease_seconds=LEASE)).allowed


async def test_a_daily_budget_stops_at_its_line_and_a_new_day_starts_at_zero(limiter: Any, clock: FakeClock) -> None:
    budget = counter("usd_day", 10_000, name="budget", failure_mode="closed")  # one cent
    priced = demand(100, 200, price_in=10.0, price_out=20.0)  # 1000 + 4000 micro-USD
    assert (await limiter.reserve([budget], priced, lease_seconds=LEASE)).allowed
    second = await limiter.reserve([budget], priced, lease_seconds=LEASE)
    assert second.allowed and second.states[0].remaining == 0
    refused = await limiter.reserve([budget], demand(1, 0, price_in=1.0), lease_seconds=LEASE)
    assert not refused.allowed and refused.refusal is not None
    assert refused.refusal.retry_after_seconds == pytest.approx(3600.0)  # midnight UTC
    assert second.reservation is not None
    await limiter.settle(second.reservation, Usage(100, 50))  # 2000 of 5000: 3000 back
    exact = await limiter.reserve([budget], demand(100, 100, price_in=10.0, price_out=20.0), lease_seconds=LEASE)
    assert exact.allowed and exact.states[0].remaining == 0  # 5000 + 2000 + 3000: exactly the line
    clock.advance(3600.0)
    fresh = await limiter.reserve([budget], priced, lease_seconds=LEASE)
    assert fresh.allowed and fresh.states[0].remaining == 5000


async def test_a_monthly_budget_resets_with_the_calendar_month(limiter: Any, clock: FakeClock) -> None:
    budget = counter("usd_month", 5000, name="budget")
    priced = demand(100, 200, price_in=10.0, price_out=20.0)
    assert (await limiter.reserve([budget], priced, lease_seconds=LEASE)).allowed
    refused = await limiter.reserve([budget], priced, lease_seconds=LEASE)
    assert not refused.allowed and refused.refusal is not None
    assert refused.refusal.reset_seconds == pytest.approx(3600.0)  # March 31st, 23:00 UTC
    clock.advance(3600.0)
    assert (await limiter.reserve([budget], priced, lease_seconds=LEASE)).allowed


async def test_a_spent_budget_that_reroutes_says_where_and_a_rate_refusal_does_not(limiter: Any) -> None:
    cheap = RerouteBackend(provider="team-a.cheap", model="small")
    budget = counter("usd_day", 1000, name="budget", reroute_to=(cheap,))
    rate = counter("requests", 1, name="rate")
    priced = demand(100, 0, price_in=10.0)
    assert (await limiter.reserve([budget], priced, lease_seconds=LEASE)).allowed
    rerouted = await limiter.reserve([budget], priced, lease_seconds=LEASE)
    assert not rerouted.allowed and rerouted.reroute_to == (cheap,)
    assert (await limiter.reserve([rate], priced, lease_seconds=LEASE)).allowed
    both = await limiter.reserve([budget, rate], priced, lease_seconds=LEASE)
    assert not both.allowed and both.reroute_to == ()  # rerouting would not get past the rate


async def test_a_provider_quota_refusal_says_the_next_backend_may_take_it(limiter: Any) -> None:
    quota = counter("requests", 1, name="capacity gpt-4o*", capacity=True)
    assert (await limiter.reserve([quota], demand(), lease_seconds=LEASE)).allowed
    refused = await limiter.reserve([quota], demand(), lease_seconds=LEASE)
    assert not refused.allowed and refused.capacity_refused


async def test_no_counters_allow_without_a_reservation_to_settle(limiter: Any) -> None:
    decision = await limiter.reserve([], demand(), lease_seconds=LEASE)
    assert decision.allowed and decision.refusal is None and decision.reservation is None


async def test_a_budget_of_zero_admits_nothing(limiter: Any) -> None:
    blocked = counter("usd_month", 0, name="blocked")
    refused = await limiter.reserve([blocked], demand(price_in=1.0), lease_seconds=LEASE)
    assert not refused.allowed and refused.refusal is not None and refused.refusal.remaining == 0
    free = await limiter.reserve([blocked], demand(), lease_seconds=LEASE)  # a model without prices costs nothing
    assert free.allowed
