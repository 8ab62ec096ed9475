"""Leader election under clock skew: two electors on an in-memory Lease API, in simulated time.

Every replica's clocks are injected: the monotonic ones run at the same rate from
different origins, the wall clocks are offset by minutes or hours. Time advances in
small steps; at every step at most one elector may call itself leader.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.kube.errors import KubeApiError, KubeConnectionError
from controller.leader import LeaseElector, micro_time, parse_time

EPOCH = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE_DURATION, RENEW_EVERY, RETRY_EVERY = 15.0, 5.0, 2.0
RENEW_DEADLINE = LEASE_DURATION * 2 / 3
STEP = 0.25


class FakeLeaseApi:
    """One namespace's Leases in memory, with the API server's optimistic concurrency."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self._version = 0
        self.conflicts = 0

    def _stored(self, spec: dict[str, Any], name: str, namespace: str) -> dict[str, Any]:
        self._version += 1
        self.lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(self._version)},
            "spec": copy.deepcopy(spec),
        }
        return copy.deepcopy(self.lease)

    async def get_lease(self, name: str, *, namespace: str) -> dict[str, Any] | None:
        await asyncio.sleep(0)  # let a racing candidate read the same version
        return copy.deepcopy(self.lease)

    async def create_lease(self, name: str, *, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        if self.lease is not None:
            self.conflicts += 1
            raise KubeApiError(409, "AlreadyExists", f"leases {name} already exists")
        return self._stored(spec, name, namespace)

    async def update_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        meta = lease["metadata"]
        if self.lease is None:
            raise KubeApiError(404, "NotFound", f"leases {meta['name']} not found")
        if meta.get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            self.conflicts += 1
            raise KubeApiError(409, "Conflict", "the object has been modified")
        return self._stored(lease["spec"], meta["name"], meta["namespace"])


class Link:
    """One replica's way to the API: can be cut (a network partition)."""

    def __init__(self, api: FakeLeaseApi) -> None:
        self.api = api
        self.broken = False

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.api, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.broken:
                raise KubeConnectionError(f"{name}: connection refused (test partition)")
            return await method(*args, **kwargs)

        return call


@dataclass
class World:
    """True time; every replica sees it through its own clocks."""

    now: float = 0.0
    api: FakeLeaseApi = field(default_factory=FakeLeaseApi)

    def elector(self, identity: str, *, wall_skew: float = 0.0, monotonic_origin: float = 0.0) -> Replica:
        link = Link(self.api)
        elector = LeaseElector(
            link,
            namespace="ns",
            identity=identity,  # type: ignore[arg-type]
            lease_duration=LEASE_DURATION,
            renew_every=RENEW_EVERY,
            retry_every=RETRY_EVERY,
            monotonic=lambda: monotonic_origin + self.now,
            wall_clock=lambda: EPOCH + timedelta(seconds=self.now + wall_skew),
        )
        return Replica(elector, link)


@dataclass
class Replica:
    elector: LeaseElector
    link: Link
    due: float = 0.0
    stopped: bool = False  # a crashed process: no more ticks, no release
    renewed: list[float] = field(default_factory=list)  # true times of its successful acquires/renewals


async def simulate(
    world: World, replicas: list[Replica], *, until: float, events: dict[float, Callable[[], None]] | None = None
) -> list[tuple[float, tuple[str, ...]]]:
    """Runs every due tick (concurrently, so reads and writes interleave) and samples who leads."""
    timeline: list[tuple[float, tuple[str, ...]]] = []
    pending = dict(events or {})
    while world.now < until:
        for at in [t for t in pending if t <= world.now]:
            pending.pop(at)()
        due = [r for r in replicas if not r.stopped and r.due <= world.now]

        async def tick(replica: Replica) -> None:
            started = world.now
            wait = await replica.elector._tick()
            replica.due = world.now + wait
            if wait == RENEW_EVERY:  # held: acquired or renewed
                replica.renewed.append(started)

        await asyncio.gather(*(tick(r) for r in due))
        leaders = tuple(r.elector.identity for r in replicas if r.elector.is_leader)
        assert len(leaders) <= 1, f"two leaders at t={world.now}: {leaders}"
        timeline.append((world.now, leaders))
        world.now += STEP
    return timeline


def first_time(timeline: list[tuple[float, tuple[str, ...]]], who: str, *, after: float = 0.0) -> float:
    return next(t for t, leaders in timeline if t >= after and leaders == (who,))


SKEWS = [-3600.0, -120.0, -16.0, 16.0, 120.0, 3600.0]  # seconds; ±16 s is just over the lease duration


@pytest.mark.parametrize("skew", SKEWS)
async def test_skewed_clocks_never_give_two_leaders_and_a_crashed_holder_is_replaced(skew: float) -> None:
    world = World()
    a = world.elector("a")
    b = world.elector("b", wall_skew=skew, monotonic_origin=98765.0)
    b.due = 0.5  # a starts first and leads
    crash_at = 40.0

    def crash() -> None:
        a.stopped = True

    timeline = await simulate(world, [a, b], until=90.0, events={crash_at: crash})
    assert first_time(timeline, "a") == 0.0
    # While a renews, b never takes over, however far its wall clock is from a's.
    assert all(leaders == ("a",) for t, leaders in timeline if t < crash_at)
    last_renewal = max(t for t in a.renewed if t < crash_at)
    took_over = first_time(timeline, "b", after=crash_at)
    # Not before a lease duration without change, and not much later (retry period plus a step).
    assert LEASE_DURATION <= took_over - last_renewal <= LEASE_DURATION + RETRY_EVERY + 2 * STEP, took_over
    assert all(leaders == ("b",) for t, leaders in timeline if t >= took_over)
    lease = world.api.lease or {}
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
    renewed = (parse_time(lease["spec"]["renewTime"]) or EPOCH) - EPOCH - timedelta(seconds=skew)
    assert crash_at < renewed.total_seconds() < 90.0  # stamped by b's own (skewed) wall clock


@pytest.mark.parametrize("skew", SKEWS)
async def test_a_cut_off_holder_steps_down_before_a_skewed_successor_takes_over(skew: float) -> None:
    world = World()
    a = world.elector("a", wall_skew=skew, monotonic_origin=5.0)
    b = world.elector("b", monotonic_origin=123456.0)
    b.due = 0.5
    cut_at = 30.0

    def cut() -> None:
        a.link.broken = True  # a keeps running, but cannot reach the API server

    timeline = await simulate(world, [a, b], until=80.0, events={cut_at: cut})
    last_renewal = max(t for t in a.renewed if t < cut_at)
    a_gone = next(t for t, leaders in timeline if t >= cut_at and "a" not in leaders)
    took_over = first_time(timeline, "b", after=cut_at)
    assert a_gone - last_renewal <= RENEW_DEADLINE + STEP
    assert took_over > a_gone
    assert took_over - last_renewal <= LEASE_DURATION + RETRY_EVERY + 2 * STEP


@pytest.mark.parametrize("skew", [-3600.0, 3600.0])
async def test_both_skewed_and_started_together_one_wins_the_race(skew: float) -> None:
    world = World()
    a = world.elector("a", wall_skew=skew)
    b = world.elector("b", wall_skew=-skew, monotonic_origin=777.0)
    timeline = await simulate(world, [a, b], until=30.0)
    winners = {leaders for _, leaders in timeline}
    assert winners in ({("a",)}, {("b",)})  # one from the first tick on, never a change of hands
    assert world.api.conflicts >= 1  # both tried to create it; the API server let one through


@pytest.mark.parametrize("renewed", [EPOCH - timedelta(days=3650), EPOCH + timedelta(days=3650)])
async def test_a_foreign_lease_is_taken_after_one_unchanged_duration_whatever_its_times(renewed: datetime) -> None:
    """A Lease left by a replica that is gone: its times say nothing we can trust; its silence does."""
    world = World()
    stamp = micro_time(renewed)
    await world.api.create_lease(
        "modelway-controller",
        namespace="ns",
        spec={
            "holderIdentity": "gone",
            "leaseDurationSeconds": 15,
            "renewTime": stamp,
            "acquireTime": stamp,
            "leaseTransitions": 4,
        },
    )
    a = world.elector("a")
    a.due = 1.0
    timeline = await simulate(world, [a], until=30.0)
    took_over = first_time(timeline, "a")
    assert 1.0 + LEASE_DURATION <= took_over <= 1.0 + LEASE_DURATION + RETRY_EVERY + STEP
    assert (world.api.lease or {})["spec"]["leaseTransitions"] == 5


async def test_the_holders_duration_counts_not_ours() -> None:
    world = World()
    stamp = micro_time(EPOCH)
    await world.api.create_lease(
        "modelway-controller",
        namespace="ns",
        spec={"holderIdentity": "patient", "leaseDurationSeconds": 40, "renewTime": stamp, "acquireTime": stamp},
    )
    a = world.elector("a")
    timeline = await simulate(world, [a], until=50.0)
    assert 40.0 <= first_time(timeline, "a") <= 40.0 + RETRY_EVERY + STEP


@pytest.mark.parametrize("skew", [-3600.0, 3600.0])
async def test_a_released_lease_is_taken_at_the_next_retry(skew: float) -> None:
    world = World()
    a = world.elector("a")
    b = world.elector("b", wall_skew=skew, monotonic_origin=42.0)
    b.due = 0.5
    await simulate(world, [a, b], until=10.0)
    assert a.elector.is_leader
    await a.elector.release()
    a.stopped = True
    released_at = world.now
    timeline = await simulate(world, [a, b], until=20.0)
    assert first_time(timeline, "b") - released_at <= RETRY_EVERY + STEP


async def test_a_lease_touched_by_anyone_restarts_the_count() -> None:
    """Any change to the record (here only its resourceVersion moves) means someone is alive."""
    world = World()
    stamp = micro_time(EPOCH)
    await world.api.create_lease(
        "modelway-controller",
        namespace="ns",
        spec={"holderIdentity": "other", "leaseDurationSeconds": 15, "renewTime": stamp, "acquireTime": stamp},
    )
    a = world.elector("a")

    def touch() -> None:
        lease = world.api.lease or {}
        world.api._stored(lease["spec"], "modelway-controller", "ns")

    timeline = await simulate(world, [a], until=40.0, events={10.0: touch})
    assert 25.0 <= first_time(timeline, "a") <= 25.0 + RETRY_EVERY + STEP


def test_renew_deadline_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaseElector(
            Link(FakeLeaseApi()),
            namespace="ns",
            identity="a",  # type: ignore[arg-type]
            lease_duration=15,
            renew_every=5,
            renew_deadline=15,
        )
