"""The Redis limiter runs the shared semantic suite against a real redis-server, and keeps its promises
about the store itself: one script per check (reloaded after a flush), keys in one Cluster slot, and
the failure modes when Redis is gone or hangs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from proxy.limits.redis_store import RedisLimiter, connect
from tests.harness.redis import RedisServer
from tests.limits_support.semantics import *  # noqa: F403  (the shared suite's tests and fixtures)
from tests.limits_support.semantics import LEASE, FakeClock, counter, demand


@pytest.fixture
def make_limiter(redis: RedisServer) -> Callable[[FakeClock], Awaitable[RedisLimiter]]:
    async def make(clock: FakeClock) -> RedisLimiter:
        return RedisLimiter(connect(redis.url, timeout=1.0), timeout=1.0, clock=clock)

    return make


@pytest.fixture
async def server_clock_limiter(redis: RedisServer) -> AsyncIterator[RedisLimiter]:
    limiter = RedisLimiter(connect(redis.url, timeout=1.0), timeout=1.0)
    yield limiter
    await limiter.close()


async def test_every_key_of_a_check_shares_one_cluster_slot(limiter: RedisLimiter, redis: RedisServer) -> None:
    counters = [counter("tokens", 1000), counter("usd_day", 10), counter("concurrency", 2)]
    assert (await limiter.reserve(counters, demand(), lease_seconds=LEASE)).allowed
    slots = {redis.cli("CLUSTER", "KEYSLOT", limiter.key(c)) for c in counters}
    assert len(slots) == 1
    assert all(limiter.key(c).startswith("{modelway}:ModelPolicy/t/p/") for c in counters)


async def test_a_flushed_script_cache_is_reloaded_by_eval(limiter: RedisLimiter, redis: RedisServer) -> None:
    tokens = counter("tokens", 1000)
    assert (await limiter.reserve([tokens], demand(), lease_seconds=LEASE)).allowed
    redis.cli("SCRIPT", "FLUSH")  # what a restarted Redis looks like to EVALSHA
    second = await limiter.reserve([tokens], demand(), lease_seconds=LEASE)
    assert second.allowed and second.states[0].remaining == 400 and not second.store_unreachable


async def test_with_the_servers_clock_the_bucket_refills_in_real_time(server_clock_limiter: RedisLimiter) -> None:
    rpm = counter("requests", 6)  # one every ten seconds
    for _ in range(6):
        assert (await server_clock_limiter.reserve([rpm], demand(), lease_seconds=LEASE)).allowed
    refused = await server_clock_limiter.reserve([rpm], demand(), lease_seconds=LEASE)
    assert not refused.allowed and refused.refusal is not None
    assert 9.0 < refused.refusal.retry_after_seconds <= 10.0  # the refill since the first, on Redis's clock


async def test_keys_expire_once_they_say_nothing(limiter: RedisLimiter, redis: RedisServer) -> None:
    tokens, budget, inflight = counter("tokens", 1000), counter("usd_day", 10), counter("concurrency", 2)
    assert (await limiter.reserve([tokens, budget, inflight], demand(), lease_seconds=LEASE)).allowed
    assert 0 < int(redis.cli("PTTL", limiter.key(tokens))) <= 18_000 + 1000  # 300 of 1000 a minute in use
    assert 0 < int(redis.cli("PTTL", limiter.key(inflight))) <= (LEASE + 60) * 1000
    (window,) = {k for k in redis.cli("KEYS", "*usd_day*").split() if budget.key in k}
    assert window.endswith("/2026-03-31")
    assert 3600_000 < int(redis.cli("PTTL", window)) <= 3600_000 + 86_400_000
