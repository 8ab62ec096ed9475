"""Budget spend read back from a real Redis into policy status: the sidecars' own limiter charges the
budgets (RedisLimiter reserve and settle, with the counters the controller compiles for each workload),
the controller's reader finds them with a bounded SCAN and status shows them; Redis gone keeps the last
numbers with their time, says so, logs once, and holds nothing else up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from controller.compile import compile_workload, judge
from controller.core import Controller
from controller.limit_store import connect
from controller.spend_reader import SpendReader
from controller.status import desired_statuses, render
from controller.store import Key, ResourceStore
from controller.workload import Workload
from proxy.limits.binding import limit_counters
from proxy.limits.model import Counter, Demand, Usage
from proxy.limits.redis_store import RedisLimiter
from proxy.limits.redis_store import connect as sidecar_connect
from proxy.snapshot import LimitStore, Secret
from tests.harness.redis import RedisServer, RestartableRedis
from tests.unit.test_policy_compile import EU_SAAS, IN_CLUSTER, US_SAAS, chat_route, cluster_policy, policy

CAPS: Key = ("ModelPolicy", "team-a", "caps")
ORG: Key = ("ClusterModelPolicy", "", "org")
TEAM: Key = ("ModelPolicy", "team-a", "team")
# $10 per million input tokens, $30 per million output tokens: 100k in + 100k out is $4.00.
PRICES = {"input_micro_usd_per_token": 10.0, "output_micro_usd_per_token": 30.0}


def _policies() -> list[Any]:
    return [
        policy("caps", limits=[{"name": "mine", "usdPerDay": 50}]),  # per workload
        policy("team", limits=[{"name": "all", "usdPerDay": 20, "usdPerMonth": 300, "per": "policy"}]),
        cluster_policy("org", limits=[{"name": "ns", "usdPerMonth": 200, "per": "namespace"}]),
    ]


def _store() -> ResourceStore:
    store = ResourceStore()
    for item in (EU_SAAS, US_SAAS, IN_CLUSTER, chat_route(), *_policies()):
        store.apply(item)
    return store


def counters_of(store: ResourceStore, workload: Workload) -> list[Counter]:
    """The budget counters a sidecar of `workload` charges: from the snapshot the controller compiles for it."""
    snapshot = compile_workload(judge(store.view()), workload)
    return [c for limit in snapshot.policy.limits for c in limit_counters(limit) if c.measure.startswith("usd_")]


async def charge(limiter: RedisLimiter, counters: list[Counter], *, reserve_out: int, out: int) -> None:
    """One request as the sidecar runs it: reserve what it may cost, settle what it did."""
    demand = Demand(input_tokens=100_000, output_tokens=reserve_out, **PRICES)
    decision = await limiter.reserve(counters, demand, lease_seconds=30)
    assert decision.allowed and decision.reservation is not None, decision
    await limiter.settle(decision.reservation, Usage(input_tokens=100_000, output_tokens=out))


@pytest.fixture
async def limiter(redis: RedisServer) -> AsyncIterator[RedisLimiter]:
    redis.cli("FLUSHALL")
    sidecar = RedisLimiter(sidecar_connect(redis.url, timeout=1.0), timeout=1.0)
    yield sidecar
    await sidecar.close()


def reader_for(url: str, controller: Controller, **kwargs: Any) -> SpendReader:
    store = LimitStore(url=Secret(url))
    return SpendReader(connect(store, timeout=1.0), controller, prefix=store.key_prefix, timeout=2.0, **kwargs)


def status_of(controller: Controller, reader: SpendReader, key: Key) -> dict[str, Any]:
    desired = desired_statuses(controller.judgement, {}, controller.store.view(), spend=reader.spend())
    return render(desired[key], None, "2026-01-01T00:00:00Z")


async def test_spend_the_sidecars_charged_is_what_each_policys_status_shows(
    limiter: RedisLimiter, redis: RedisServer
) -> None:
    store = _store()
    bot, batch, other = Workload("team-a", "bot"), Workload("team-a", "batch"), Workload("team-b", "bot")
    store.apply(chat_route(ns="team-b"))
    for _ in range(2):
        await charge(limiter, counters_of(store, bot), reserve_out=200_000, out=100_000)  # $4.00 each
    await charge(limiter, counters_of(store, batch), reserve_out=50_000, out=50_000)  # $2.50
    await charge(limiter, counters_of(store, other), reserve_out=10_000, out=10_000)  # $1.30, the org policy only
    controller = Controller(store=store)
    await controller.recompute()
    reader = reader_for(redis.url, controller)
    try:
        await reader.read_once()
    finally:
        await reader.close()

    caps = status_of(controller, reader, CAPS)["spend"]
    assert caps["summary"] == "$8.00/$50 day (top of 2 workloads)"
    (mine,) = caps["budgets"]
    assert (mine["spentUSD"], mine["totalUSD"], mine["subjects"]) == (8.0, 10.5, 2)
    assert mine["top"] == [{"subject": "team-a/bot", "spentUSD": 8.0}, {"subject": "team-a/batch", "spentUSD": 2.5}]
    assert status_of(controller, reader, TEAM)["spend"]["summary"] == "$10.50/$20 day, $10.50/$300 month"
    org = status_of(controller, reader, ORG)["spend"]
    assert org["summary"] == "$10.50/$200 month (top of 2 namespaces)"
    assert org["budgets"][0]["top"] == [{"subject": "team-a", "spentUSD": 10.5}, {"subject": "team-b", "spentUSD": 1.3}]
    conditions = {c["type"]: c for c in status_of(controller, reader, CAPS)["conditions"]}
    assert conditions["SpendReported"]["status"] == "True"


async def test_a_reservation_in_flight_counts_and_its_refund_shows_once_settled(
    limiter: RedisLimiter, redis: RedisServer
) -> None:
    store = _store()
    controller = Controller(store=store)
    await controller.recompute()
    reader = reader_for(redis.url, controller)
    counters = counters_of(store, Workload("team-a", "bot"))
    try:
        decision = await limiter.reserve(
            counters, Demand(input_tokens=100_000, output_tokens=1_000_000, **PRICES), lease_seconds=30
        )
        assert decision.reservation is not None
        await reader.read_once()
        assert status_of(controller, reader, TEAM)["spend"]["summary"].startswith("$31.00/$20 day")  # reserved
        await limiter.settle(decision.reservation, Usage(input_tokens=100_000, output_tokens=100_000))
        await reader.read_once()
        assert status_of(controller, reader, TEAM)["spend"]["summary"].startswith("$4.00/$20 day")  # settled
    finally:
        await reader.close()


async def test_one_read_is_a_few_round_trips_whatever_the_number_of_subjects(
    limiter: RedisLimiter, redis: RedisServer
) -> None:
    store = _store()
    controller = Controller(store=store)
    await controller.recompute()
    (budget,) = [c for c in counters_of(store, Workload("team-a", "bot")) if c.name == "mine"]
    day = budget.key.rsplit("/", 3)[0]  # "ModelPolicy/team-a/caps/mine/workload"
    window = time.strftime("%Y-%m-%d", time.gmtime())
    pipe = await _fill(redis, [f"{{modelway}}:{day}/team-a/sa-{i}/usd_day/{window}" for i in range(3000)])
    assert pipe == 3000
    reader = reader_for(redis.url, controller)
    calls_before = _calls(redis)
    try:
        await reader.read_once()
    finally:
        await reader.close()
    calls = _calls(redis) - calls_before
    (mine,) = status_of(controller, reader, CAPS)["spend"]["budgets"]
    assert mine["subjects"] == 3000 and mine["spentUSD"] == 3.0 and len(mine["top"]) == 5
    # SCANs of 1000 and MGETs of 500 over 3,000 keys: about 4 + 6 calls, not one per subject
    assert calls < 30, calls


async def test_the_scan_stops_at_its_bound_and_status_says_partial(limiter: RedisLimiter, redis: RedisServer) -> None:
    store = _store()
    controller = Controller(store=store)
    await controller.recompute()
    window = time.strftime("%Y-%m-%d", time.gmtime())
    await _fill(
        redis, [f"{{modelway}}:ModelPolicy/team-a/caps/mine/workload/team-a/sa-{i}/usd_day/{window}" for i in range(50)]
    )
    reader = reader_for(redis.url, controller, max_keys=20)
    try:
        await reader.read_once()
    finally:
        await reader.close()
    conditions = {c["type"]: c for c in status_of(controller, reader, CAPS)["conditions"]}
    assert conditions["SpendReported"]["status"] == "True" and "partial" in conditions["SpendReported"]["message"]


async def _fill(redis: RedisServer, keys: list[str]) -> int:
    client = aioredis.from_url(redis.url, socket_timeout=5.0)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for i, key in enumerate(keys):
                pipe.set(key, (i % 4) * 1_000_000)
            await pipe.execute()
        return len(keys)
    finally:
        await client.aclose()


def _calls(redis: RedisServer) -> int:
    stats = dict(
        line.split(":", 1)
        for line in redis.cli("INFO", "stats").splitlines()
        if ":" in line and not line.startswith("#")
    )
    return int(stats["total_commands_processed"])


# --- Redis gone ------------------------------------------------------------------------------


@pytest.mark.parametrize("outage", ["killed", "hung"])
async def test_redis_gone_keeps_the_last_numbers_says_so_logs_once_and_blocks_nothing(
    own_redis: RestartableRedis, outage: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store()
    controller = Controller(store=store)
    await controller.recompute()
    sidecar = RedisLimiter(sidecar_connect(own_redis.url, timeout=1.0), timeout=1.0)
    reader = reader_for(own_redis.url, controller)
    try:
        await charge(sidecar, counters_of(store, Workload("team-a", "bot")), reserve_out=100_000, out=100_000)
        await reader.read_once()
        before = status_of(controller, reader, TEAM)["spend"]
        assert before["summary"] == "$4.00/$20 day, $4.00/$300 month"

        own_redis.kill() if outage == "killed" else own_redis.signal(signal.SIGSTOP)
        caplog.set_level(logging.INFO, logger="modelway.spend")
        reading = asyncio.create_task(reader.read_once())
        await asyncio.sleep(0.05)  # the read is in flight
        began = time.monotonic()
        await controller.recompute()  # reconciling goes on while the read waits on a dead store
        assert time.monotonic() - began < 1.0
        if outage == "hung":
            assert not reading.done()  # it waits for its timeout, alone
        await reading
        assert reader.spend()[TEAM].state == "read"  # one lost read is no news
        for _ in range(2):
            await reader.read_once()
        status = status_of(controller, reader, TEAM)
        assert status["spend"]["summary"] == "$4.00/$20 day, $4.00/$300 month (stale)"
        assert status["spend"]["readAt"] == before["readAt"]  # the time the numbers were read
        reported = {c["type"]: c for c in status["conditions"]}["SpendReported"]
        assert (reported["status"], reported["reason"]) == ("False", "StoreUnreachable")
        assert before["readAt"] in reported["message"]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "did not answer" in warnings[0].getMessage()
        assert own_redis.url not in caplog.text

        if outage == "hung":
            own_redis.signal(signal.SIGCONT)
        else:
            own_redis.start()
        for _ in range(50):  # a fresh connection on a loaded machine may need a moment
            await reader.read_once()
            if reader.spend()[TEAM].state == "read":
                break
            await asyncio.sleep(0.1)
        assert "answers again" in caplog.text
        reported = {c["type"]: c for c in status_of(controller, reader, TEAM)["conditions"]}["SpendReported"]
        assert reported["status"] == "True"
    finally:
        await reader.close()
        await sidecar.close()


async def test_status_is_told_only_when_spend_moved_enough(limiter: RedisLimiter, redis: RedisServer) -> None:
    store = _store()
    controller = Controller(store=store)
    await controller.recompute()
    reader = reader_for(redis.url, controller)
    told: list[float] = []
    reader.add_listener(lambda: told.append(time.monotonic()))
    counters = counters_of(store, Workload("team-a", "bot"))
    try:
        await charge(limiter, counters, reserve_out=100_000, out=100_000)  # $4.00
        await reader.read_once()
        assert len(told) == 1  # the first reading
        for _ in range(3):
            await reader.read_once()
        assert len(told) == 1  # nothing moved: no status write
        tiny = Demand(input_tokens=100, output_tokens=100, **PRICES)  # $0.004 a request
        for _ in range(5):
            decision = await limiter.reserve(counters, tiny, lease_seconds=30)
            assert decision.reservation is not None
            await limiter.settle(decision.reservation, Usage(input_tokens=100, output_tokens=100))
            await reader.read_once()
        assert len(told) == 1  # two cents within the minute: waits for the next step or a minute
        await charge(limiter, counters, reserve_out=100_000, out=100_000)  # $4 more: a step of the $20 budget
        await reader.read_once()
        assert len(told) == 2
        assert status_of(controller, reader, TEAM)["spend"]["summary"] == "$8.02/$20 day, $8.02/$300 month"
    finally:
        await reader.close()


async def test_a_new_budget_is_read_at_once_and_only_the_replica_writing_status_reads(redis: RedisServer) -> None:
    store = ResourceStore()
    controller = Controller(store=store)
    leading = False
    reader = reader_for(redis.url, controller, interval=3600, min_gap=0.05, active=lambda: leading)
    task = asyncio.create_task(reader.run())
    try:
        await asyncio.sleep(0.2)
        assert reader.reads == 0  # not the writer of status: no Redis call at all
        leading = True
        reader.on_leadership(True)
        await _until(lambda: reader.reads == 1)
        assert reader.spend() == {}
        for item in (EU_SAAS, US_SAAS, IN_CLUSTER, chat_route(), *_policies()):
            store.apply(item)
        await controller.recompute()  # new budgets: read now, not in an hour
        await _until(lambda: set(reader.spend()) == {CAPS, TEAM, ORG})
        await controller.recompute()  # nothing changed: no read
        await asyncio.sleep(0.2)
        assert reader.reads == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await reader.close()


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "not reached"
        await asyncio.sleep(0.02)
