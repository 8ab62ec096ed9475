"""Summing sidecar counts across controller replicas: the pure part, no API server."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.api import ModelRoute, parse_resource
from controller.compile import Judgement, RouteVerdict, Verdict
from controller.compile_provider import ACCEPTED, RESOLVED
from controller.core import RouteSync
from controller.leader import micro_time
from controller.replicas import (
    ANNOTATION,
    Published,
    ReplicaCounts,
    aggregate,
    expired,
    expired_long_ago,
    format_counts,
    lease_name,
    parse_counts,
    peer_counts,
    served_generations,
)

CHAT = ("ModelRoute", "team-a", "chat")
EMBED = ("ModelRoute", "team-b", "embed")
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def route(name: str, namespace: str, generation: int) -> ModelRoute:
    obj = {
        "kind": "ModelRoute",
        "metadata": {"name": name, "namespace": namespace, "generation": generation},
        "spec": {"model": name, "rules": [{"backends": [{"provider": "openai", "model": "gpt-4o"}]}]},
    }
    return parse_resource(obj)  # type: ignore[return-value]


def lease(holder: str, counts: str | None, *, renewed: datetime = NOW, seconds: int = 15) -> dict[str, Any]:
    annotations = {} if counts is None else {ANNOTATION: counts}
    return {
        "metadata": {"name": lease_name(holder), "annotations": annotations},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds, "renewTime": micro_time(renewed)},
    }


# --- the annotation ---------------------------------------------------------------------------


def test_format_is_compact_and_keeps_only_routes_with_sidecars() -> None:
    counts = {CHAT: RouteSync(2, 3), EMBED: RouteSync(0, 0)}
    text = format_counts(counts, {CHAT: 4, EMBED: 1})
    assert text == '{"team-a/chat":[2,3,4]}'


def test_format_skips_a_route_without_a_served_generation() -> None:
    assert format_counts({CHAT: RouteSync(1, 1)}, {}) == "{}"


def test_parse_reads_what_format_wrote() -> None:
    counts = {CHAT: RouteSync(2, 3), EMBED: RouteSync(1, 1)}
    assert parse_counts(format_counts(counts, {CHAT: 4, EMBED: 7})) == {
        CHAT: Published(2, 3, 4),
        EMBED: Published(1, 1, 7),
    }


@pytest.mark.parametrize("text", [None, "", "not json", "[]", '"x"', "42"])
def test_parse_of_no_or_broken_annotation_is_empty(text: object) -> None:
    assert parse_counts(text) == {}


def test_parse_skips_malformed_entries_and_keeps_the_rest() -> None:
    text = json.dumps(
        {
            "team-a/chat": [1, 1, 2],
            "no-slash": [1, 1, 1],
            "/x": [1, 1, 1],
            "a/b": [1, 1],
            "a/c": ["1", 1, 1],
            "a/d": [-1, 1, 1],
            "a/e": [True, 1, 1],
            "a/f": {"synced": 1},
        }
    )
    assert parse_counts(text) == {CHAT: Published(1, 1, 2)}


def test_parse_caps_synced_at_total() -> None:
    assert parse_counts('{"team-a/chat":[5,2,1]}') == {CHAT: Published(2, 2, 1)}


def test_lease_names_are_valid_object_names() -> None:
    assert lease_name("controller-0_1a2b3c4d") == "modelway-replica-controller-0-1a2b3c4d"
    assert lease_name("Host.Example_ab") == "modelway-replica-host.example-ab"
    assert len(lease_name("x" * 400)) == 253


def test_served_generations_are_the_last_good_ones() -> None:
    broken = RouteVerdict(ACCEPTED, Verdict(False, "BackendNotFound", "x"), 5, route("chat", "team-a", 4))
    never_good = RouteVerdict(ACCEPTED, Verdict(False, "BackendNotFound", "x"), 1, None)
    judgement = Judgement(providers={}, routes={CHAT: broken, EMBED: never_good})
    assert served_generations(judgement, [CHAT, EMBED]) == {CHAT: 4}


def test_served_generation_of_a_good_route() -> None:
    judgement = Judgement(providers={}, routes={CHAT: RouteVerdict(ACCEPTED, RESOLVED, 3, route("chat", "team-a", 3))})
    assert served_generations(judgement, [CHAT, ("ModelRoute", "team-a", "gone")]) == {CHAT: 3}


# --- expiry and which Leases count ------------------------------------------------------------


def test_expiry_is_renew_time_plus_duration() -> None:
    spec = lease("b", "{}", renewed=NOW - timedelta(seconds=10), seconds=15)["spec"]
    assert not expired(spec, NOW)
    assert not expired(spec, NOW + timedelta(seconds=5))
    assert expired(spec, NOW + timedelta(seconds=5, milliseconds=1))


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"renewTime": micro_time(NOW)},
        {"leaseDurationSeconds": 15},
        {"renewTime": "yesterday", "leaseDurationSeconds": 15},
    ],
)
def test_a_lease_without_times_counts_as_expired(spec: dict[str, Any]) -> None:
    assert expired(spec, NOW)


def test_expired_long_ago_waits_another_duration() -> None:
    spec = lease("b", "{}", renewed=NOW - timedelta(seconds=20), seconds=15)["spec"]
    assert expired(spec, NOW) and not expired_long_ago(spec, NOW)
    assert expired_long_ago(spec, NOW + timedelta(seconds=11))


def test_peers_are_live_leases_of_others() -> None:
    leases = [
        lease("me", '{"team-a/chat":[9,9,1]}'),  # our own: the leader uses its local counts, fresher
        lease("b", '{"team-a/chat":[1,1,1]}'),
        lease("c", '{"team-a/chat":[2,2,1]}', renewed=NOW - timedelta(seconds=16)),  # expired
        lease("d", None),  # live, nothing published yet
        {"metadata": {"name": "stray"}, "spec": {"leaseDurationSeconds": 15, "renewTime": micro_time(NOW)}},
    ]
    assert peer_counts(leases, identity="me", now=NOW) == {"b": {CHAT: Published(1, 1, 1)}, "d": {}}


# --- the sum ----------------------------------------------------------------------------------


def test_aggregate_adds_peers_to_the_local_counts() -> None:
    local = {CHAT: RouteSync(1, 1)}
    peers = [{CHAT: Published(1, 1, 3)}, {CHAT: Published(0, 2, 3), EMBED: Published(1, 1, 2)}]
    assert aggregate(local, {CHAT: 3, EMBED: 2}, peers) == {CHAT: RouteSync(2, 4), EMBED: RouteSync(1, 1)}


def test_counts_for_another_generation_are_total_but_not_synced() -> None:
    # The peer's sidecars ACKed generation 2, the leader is about to write about 3 (or the other way round).
    local = {CHAT: RouteSync(1, 1)}
    assert aggregate(local, {CHAT: 3}, [{CHAT: Published(1, 1, 2)}]) == {CHAT: RouteSync(1, 2)}
    assert aggregate(local, {CHAT: 3}, [{CHAT: Published(1, 1, 4)}]) == {CHAT: RouteSync(1, 2)}


def test_a_route_the_leader_does_not_know_is_never_synced() -> None:
    assert aggregate({}, {}, [{EMBED: Published(1, 1, 1)}]) == {EMBED: RouteSync(0, 1)}


def test_no_peers_leaves_the_local_counts_alone() -> None:
    local = {CHAT: RouteSync(2, 3)}
    assert aggregate(local, {CHAT: 1}, []) == local


def test_self_is_ignored_end_to_end() -> None:
    """The leader's own Lease would double its local sidecars."""
    local = {CHAT: RouteSync(1, 1)}
    leases = [lease("me", format_counts(local, {CHAT: 1})), lease("b", '{"team-a/chat":[1,1,1]}')]
    peers = peer_counts(leases, identity="me", now=NOW)
    assert aggregate(local, {CHAT: 1}, peers.values()) == {CHAT: RouteSync(2, 2)}


# --- ReplicaCounts against an in-memory Lease store -------------------------------------------


class FakeElector:
    def __init__(self, is_leader: bool = True) -> None:
        self.is_leader = is_leader
        self.listeners: list[Any] = []

    def add_listener(self, callback: Any) -> None:
        self.listeners.append(callback)


class FakeLeases:
    """What ReplicaCounts uses of KubeClient, over a dict of Leases."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.writes = 0

    async def get_lease(self, name: str, *, namespace: str) -> dict[str, Any] | None:
        return self.leases.get(name)

    async def create(self, rt: Any, body: dict[str, Any], *, namespace: str) -> dict[str, Any]:
        self.writes += 1
        self.leases[body["metadata"]["name"]] = body
        return body

    async def update_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        self.writes += 1
        self.leases[body["metadata"]["name"]] = body
        return body

    async def list(self, rt: Any, *, namespace: str, label_selector: str) -> Any:
        key, _, value = label_selector.partition("=")
        items = [lease for lease in self.leases.values() if lease["metadata"].get("labels", {}).get(key) == value]
        return type("Listed", (), {"items": items})()

    async def delete(self, rt: Any, name: str, *, namespace: str) -> dict[str, Any]:
        self.leases.pop(name)
        return {}


class FakeController:
    def __init__(self, sync: dict[Any, RouteSync], generation: int) -> None:
        self.sync = sync
        verdict = RouteVerdict(ACCEPTED, RESOLVED, generation, route("chat", "team-a", generation))
        self.judgement = Judgement(providers={}, routes={CHAT: verdict})

    def route_sync(self) -> dict[Any, RouteSync]:
        return dict(self.sync)

    def subscribe(self, **callbacks: Any) -> None:
        pass


def replica(
    client: FakeLeases, identity: str, controller: FakeController, *, leading: bool, min_interval: float = 0.05
) -> ReplicaCounts:
    return ReplicaCounts(
        client,  # type: ignore[arg-type]
        controller,  # type: ignore[arg-type]
        namespace="system",
        identity=identity,
        elector=FakeElector(leading),  # type: ignore[arg-type]
        min_interval=min_interval,
        poll_every=0.05,
    )


async def test_replicas_publish_and_the_leader_sums() -> None:
    client = FakeLeases()
    leader_controller = FakeController({CHAT: RouteSync(1, 1)}, generation=2)
    follower_controller = FakeController({CHAT: RouteSync(1, 1)}, generation=2)
    leader = replica(client, "a_1", leader_controller, leading=True)
    follower = replica(client, "b_2", follower_controller, leading=False)
    woken: list[bool] = []
    leader.add_peers_listener(lambda: woken.append(True))
    tasks = [asyncio.create_task(leader.run()), asyncio.create_task(follower.run())]
    try:
        for _ in range(100):
            if leader.sync_counts() == {CHAT: RouteSync(2, 2)}:
                break
            await asyncio.sleep(0.02)
        assert leader.sync_counts() == {CHAT: RouteSync(2, 2)} and woken
        lease = client.leases["modelway-replica-b-2"]
        assert lease["metadata"]["labels"] == {"modelway.io/replica-of": "modelway-controller"}
        assert lease["metadata"]["annotations"][ANNOTATION] == '{"team-a/chat":[1,1,2]}'
        assert follower.sync_counts() == {CHAT: RouteSync(1, 1)}  # not leading: nothing polled

        follower_controller.sync = {}  # its sidecar goes
        follower.notify()
        for _ in range(100):
            if leader.sync_counts() == {CHAT: RouteSync(1, 1)}:
                break
            await asyncio.sleep(0.02)
        assert leader.sync_counts() == {CHAT: RouteSync(1, 1)}
        assert client.leases["modelway-replica-b-2"]["metadata"]["annotations"][ANNOTATION] == "{}"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert client.leases == {}  # a clean stop deletes each replica's Lease


async def test_publishing_is_rate_limited() -> None:
    client = FakeLeases()
    controller = FakeController({CHAT: RouteSync(0, 1)}, generation=1)
    counts = replica(client, "a_1", controller, leading=False, min_interval=0.3)
    task = asyncio.create_task(counts.run())
    try:
        await asyncio.sleep(0.05)
        assert client.writes == 1
        for synced in (1, 0, 1, 0, 1):  # a burst of ACKs and NACKs
            controller.sync = {CHAT: RouteSync(synced, 1)}
            counts.notify()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.4)
        assert client.writes == 2  # one write for the whole burst, with its last counts
        annotations = client.leases["modelway-replica-a-1"]["metadata"]["annotations"]
        assert annotations[ANNOTATION] == '{"team-a/chat":[1,1,1]}'
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
