"""Redis gone or hung in the middle of a run: each limit follows its failureMode within the timeout,
and once Redis is back the counting resumes (one real redis-server of the test's own, on one port)."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from proxy.limits.model import Counter, Decision, Usage
from proxy.limits.redis_store import RedisLimiter, connect
from tests.harness.fixtures import HarnessSession, tool
from tests.harness.process import ManagedProcess
from tests.harness.redis import RestartableRedis, ping
from tests.limits_support.semantics import counter, demand

TIMEOUT = 0.1
# What a check may take beyond the timeout: the event loop's own lateness on a shared, loaded machine.
SLACK = 0.25
TASKS = 32


async def timed(limiter: RedisLimiter, counters: list[Counter]) -> tuple[Decision, float]:
    began = time.monotonic()
    decision = await limiter.reserve(counters, demand(), lease_seconds=30)
    return decision, time.monotonic() - began


async def answered(limiter: RedisLimiter, counters: list[Counter]) -> Decision:
    """A check Redis answered: on a loaded machine a new connection can miss a 100 ms deadline."""
    for _ in range(50):
        decision = await limiter.reserve(counters, demand(), lease_seconds=30)
        if not decision.store_unreachable:
            return decision
        await asyncio.sleep(0.1)
    raise AssertionError("Redis never answered")


async def burst(limiter: RedisLimiter, counters: list[Counter]) -> list[tuple[Decision, float]]:
    return await asyncio.gather(*(timed(limiter, counters) for _ in range(TASKS)))


@pytest.mark.parametrize("outage", ["killed", "hung"])
async def test_open_limits_allow_and_closed_refuse_within_the_timeout_then_counting_resumes(
    own_redis: RestartableRedis, outage: str
) -> None:
    rate = counter("tokens", 1_000_000, name="rate")  # failureMode open (a rate's default)
    budget = counter("usd_day", 1_000_000, name="budget", failure_mode="closed")
    limiter = RedisLimiter(connect(own_redis.url, timeout=TIMEOUT), timeout=TIMEOUT)
    try:
        assert (await answered(limiter, [rate])).reservation is not None

        own_redis.kill() if outage == "killed" else own_redis.signal(signal.SIGSTOP)
        open_only = await burst(limiter, [rate])
        with_budget = await burst(limiter, [rate, budget])
        for decision, took in open_only:
            assert decision.allowed and decision.store_unreachable and decision.reservation is None
            assert took < TIMEOUT + SLACK
        for decision, took in with_budget:
            assert not decision.allowed and decision.store_unreachable and decision.refusal is not None
            assert decision.refusal.counter == budget and decision.refusal.unreachable
            assert took < TIMEOUT + SLACK
        slowest = max(took for _, took in open_only + with_budget)
        print(f"{outage}: slowest check while Redis was away {slowest * 1000:.0f} ms (timeout {TIMEOUT * 1000:.0f} ms)")

        own_redis.start() if outage == "killed" else own_redis.signal(signal.SIGCONT)
        assert (await answered(limiter, [rate, budget])).reservation is not None
        small = counter("requests", 3, name="small")  # counted again: the fourth is refused
        results = [(await answered(limiter, [small])).allowed for _ in range(4)]
        assert results == [True, True, True, False]
    finally:
        await limiter.close()


async def test_a_settlement_while_redis_is_away_returns_within_the_timeout(own_redis: RestartableRedis) -> None:
    rate = counter("tokens", 1000, name="rate")
    limiter = RedisLimiter(connect(own_redis.url, timeout=TIMEOUT), timeout=TIMEOUT)
    try:
        decision = await limiter.reserve([rate], demand(), lease_seconds=30)
        assert decision.reservation is not None
        own_redis.signal(signal.SIGSTOP)
        began = time.monotonic()
        await limiter.settle(decision.reservation, Usage(1, 1))
        assert time.monotonic() - began < TIMEOUT + SLACK
    finally:
        await limiter.close()


async def test_nothing_listening_at_all_is_an_unreachable_store_not_an_error(harness: HarnessSession) -> None:
    url = f"redis://127.0.0.1:{harness.ports.take()}/0"
    limiter = RedisLimiter(connect(url, timeout=TIMEOUT), timeout=TIMEOUT)
    try:
        decision, took = await timed(limiter, [counter("requests", 1, failure_mode="closed")])
        assert not decision.allowed and decision.store_unreachable and took < TIMEOUT + SLACK
    finally:
        await limiter.close()


async def test_a_sentinel_url_finds_the_primary_and_counts_there(
    own_redis: RestartableRedis, harness: HarnessSession
) -> None:
    """redis+sentinel://host:port/service: the client asks a real Sentinel where the primary is."""
    port = harness.ports.take()
    config = own_redis.workdir / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\nsentinel monitor limits 127.0.0.1 {own_redis.port} 1\n"
        "sentinel down-after-milliseconds limits 5000\n"
    )
    sentinel = ManagedProcess(
        "redis-sentinel", [tool("redis-server"), str(config), "--sentinel"], own_redis.workdir / "sentinel.log"
    )
    try:
        sentinel.wait_ready(lambda: ping("127.0.0.1", port), timeout=30)
        limiter = RedisLimiter(connect(f"redis+sentinel://127.0.0.1:{port}/limits", timeout=1.0), timeout=1.0)
        try:
            small = counter("requests", 2, name="sentinel")
            results = [(await limiter.reserve([small], demand(), lease_seconds=30)).allowed for _ in range(3)]
            assert results == [True, True, False]
        finally:
            await limiter.close()
        # the counts are on the primary the Sentinel named
        keys = [k for k in own_redis.server.cli("KEYS", "*sentinel*").split() if small.key in k]
        assert keys
    finally:
        sentinel.stop()
