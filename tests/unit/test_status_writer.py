"""The status writer with fakes for the API client and the elector: what it writes, when, and from
which copy of a status."""

from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller.api import ModelRoute, parse_resource
from controller.compile import Judgement, RouteVerdict
from controller.compile_provider import ACCEPTED, RESOLVED
from controller.core import RouteSync
from controller.kube.errors import KubeApiError
from controller.status import render, route_status
from controller.status_writer import ConditionLogger, ObservedStatuses, StatusWriter
from controller.store import ResourceStore
from tests.unit.status_support import KEY, MISSING, T0, T1, by_type, good, route

# --- the writer, with fakes for the client and the elector -------------------------------


@dataclass
class FakeClient:
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> object
    patches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    fail_patch: int = 0
    gets: int = 0
    conflicts: int = 0

    async def get(self, rt: Any, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        self.gets += 1
        if name not in self.objects:
            raise KubeApiError(404, "NotFound", "gone")
        return copy.deepcopy(self.objects[name])

    async def patch_status(self, rt: Any, name: str, status: dict[str, Any], **kw: Any) -> dict[str, Any]:
        if self.fail_patch:
            self.fail_patch -= 1
            raise KubeApiError(409, "Conflict", "try again")
        if name not in self.objects:
            raise KubeApiError(404, "NotFound", "gone")
        self.patches.append((name, status))
        obj = self.objects[name]
        obj["status"] = status
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(int(meta.get("resourceVersion") or 0) + 1)
        return copy.deepcopy(obj)

    async def patch(self, rt: Any, name: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """Server-side apply of the status subresource, honouring metadata.resourceVersion as a precondition."""
        assert kw.get("patch_type") == "apply" and kw.get("subresource") == "status"
        wanted = body["metadata"].get("resourceVersion")
        current = (self.objects.get(name) or {}).get("metadata", {}).get("resourceVersion")
        if name in self.objects and wanted is not None and wanted != current:
            self.conflicts += 1
            raise KubeApiError(409, "Conflict", "the object has been modified")
        return await self.patch_status(rt, name, body["status"])

    async def create_event(self, **kw: Any) -> dict[str, Any]:
        self.events.append(kw)
        return {}


@dataclass
class FakeElector:
    is_leader: bool = True
    identity: str = "controller-0_abcd"
    listeners: list[Any] = field(default_factory=list)

    def add_listener(self, callback: Any) -> None:
        self.listeners.append(callback)


@dataclass
class FakeController:
    judgement: Judgement
    sync: dict[Any, RouteSync]
    store: ResourceStore

    def route_sync(self) -> dict[Any, RouteSync]:
        return self.sync

    def subscribe(self, **callbacks: Any) -> None:
        pass


def controller_with(*routes: ModelRoute, verdicts: dict[Any, RouteVerdict], sync: dict[Any, RouteSync]) -> Any:
    store = ResourceStore()
    for r in routes:
        store.apply(r)
    return FakeController(Judgement(providers={}, routes=verdicts), sync, store)


async def test_writer_writes_changes_only_and_keeps_server_times() -> None:
    server_status = {
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Accepted",
                "message": "",
                "observedGeneration": 3,
                "lastTransitionTime": T0,
            }
        ]
    }
    client = FakeClient(objects={"chat": {"metadata": {"uid": "uid-chat"}, "status": server_status}})
    controller = controller_with(route(4), verdicts={KEY: good(4)}, sync={KEY: RouteSync(1, 1)})
    writer = StatusWriter(client, controller, elector=FakeElector())  # type: ignore[arg-type]

    assert await writer.write_pass() == 0
    [(name, status)] = client.patches
    assert name == "chat" and by_type(status)["Accepted"]["lastTransitionTime"] == T0
    # ResolvedRefs is new and fine: no news; Programmed (the route reached its sidecars) is.
    assert [(e["type"], e["reason"]) for e in client.events] == [("Normal", "Programmed")]
    assert client.events[0]["regarding"]["uid"] == "uid-chat"

    assert await writer.write_pass() == 0  # nothing changed: no write, no Event
    assert len(client.patches) == 1 and len(client.events) == 1

    controller.sync = {KEY: RouteSync(1, 2)}  # a second sidecar connects, not yet synced
    await writer.write_pass()
    assert by_type(client.patches[-1][1])["Programmed"]["reason"] == "Pending"
    assert len(client.events) == 1  # a rollout under way is progress, not a Warning


async def test_writer_is_silent_unless_leading() -> None:
    client = FakeClient(objects={"chat": {"metadata": {"uid": "uid-chat"}}})
    controller = controller_with(route(1), verdicts={KEY: good(1)}, sync={})
    elector = FakeElector(is_leader=False)
    writer = StatusWriter(client, controller, elector=elector)  # type: ignore[arg-type]
    await writer.write_pass()
    assert client.patches == [] and client.events == []
    elector.is_leader = True
    await writer.write_pass()
    assert len(client.patches) == 1


async def test_writer_survives_deleted_objects_and_conflicts() -> None:
    client = FakeClient(objects={}, fail_patch=1)
    controller = controller_with(route(1), verdicts={KEY: good(1)}, sync={})
    writer = StatusWriter(client, controller, elector=FakeElector())  # type: ignore[arg-type]
    assert await writer.write_pass() == 0  # 404: deleted meanwhile, nothing to do
    client.objects["chat"] = {"metadata": {"uid": "uid-chat"}}
    assert await writer.write_pass() == 1  # 409: counted, retried later
    assert await writer.write_pass() == 0
    assert len(client.patches) == 1


async def test_writer_rereads_after_regaining_leadership() -> None:
    client = FakeClient(objects={"chat": {"metadata": {"uid": "uid-chat"}}})
    controller = controller_with(route(1), verdicts={KEY: good(1)}, sync={})
    elector = FakeElector()
    writer = StatusWriter(client, controller, elector=elector)  # type: ignore[arg-type]
    await writer.write_pass()
    client.objects["chat"]["status"] = {}  # someone else (an old leader, a human) changed it meanwhile
    for callback in elector.listeners:
        callback(True)
    await writer.write_pass()
    assert len(client.patches) == 2


# --- the first pass works from what the watch saw ------------------------------------------


def named_route(name: str, *, generation: int = 1) -> ModelRoute:
    obj = {
        "kind": "ModelRoute",
        "metadata": {"name": name, "namespace": "default", "generation": generation, "uid": f"uid-{name}"},
        "spec": {"model": name, "rules": [{"backends": [{"provider": "openai", "model": "gpt-4o"}]}]},
    }
    return parse_resource(obj)  # type: ignore[return-value]


def as_served(r: ModelRoute, *, status: dict[str, Any] | None, version: int = 7) -> dict[str, Any]:
    """The object as the API server sends it, in a list or a watch event."""
    meta = {
        "name": r.metadata.name,
        "namespace": "default",
        "uid": r.metadata.uid,
        "generation": r.metadata.generation,
        "resourceVersion": str(version),
    }
    return {"kind": "ModelRoute", "metadata": meta, "spec": {}} | ({"status": status} if status else {})


def many_routes(count: int) -> tuple[list[ModelRoute], Any]:
    routes = [named_route(f"r{i:04d}") for i in range(count)]
    verdicts = {("ModelRoute", "default", r.metadata.name): RouteVerdict(ACCEPTED, RESOLVED, 1, r) for r in routes}
    return routes, controller_with(*routes, verdicts=verdicts, sync={})


def current_status(r: ModelRoute) -> dict[str, Any]:
    key = ("ModelRoute", "default", r.metadata.name)
    return render(
        route_status(key, RouteVerdict(ACCEPTED, RESOLVED, 1, r), RouteSync(0, 0), uid=r.metadata.uid), None, T0
    )


async def test_a_new_leaders_first_pass_reads_nothing_when_the_watch_saw_every_status() -> None:
    routes, controller = many_routes(300)
    client = FakeClient(objects={r.metadata.name: as_served(r, status=current_status(r)) for r in routes})
    statuses = ObservedStatuses()
    statuses.replace("ModelRoute", None, list(client.objects.values()))
    writer = StatusWriter(client, controller, elector=FakeElector(), statuses=statuses)  # type: ignore[arg-type]
    assert await writer.write_pass() == 0
    assert (client.gets, client.patches, client.events) == (0, [], [])  # all up to date: not one request


async def test_first_pass_writes_from_the_watched_status_with_its_version_as_precondition() -> None:
    routes, controller = many_routes(50)
    old = {
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Accepted",
                "message": "",
                "observedGeneration": 1,
                "lastTransitionTime": T0,
            }
        ]
    }
    controller.sync = {("ModelRoute", "default", r.metadata.name): RouteSync(1, 1) for r in routes}
    client = FakeClient(objects={r.metadata.name: as_served(r, status=old) for r in routes})
    statuses = ObservedStatuses()
    statuses.replace("ModelRoute", None, list(client.objects.values()))
    writer = StatusWriter(client, controller, elector=FakeElector(), statuses=statuses)  # type: ignore[arg-type]
    assert await writer.write_pass() == 0
    assert client.gets == 0 and client.conflicts == 0 and len(client.patches) == 50
    _name, written = client.patches[0]
    assert by_type(written)["Accepted"]["lastTransitionTime"] == T0  # kept from the watched status
    # Accepted held and ResolvedRefs is new and fine: no Event for either; Programmed (on a sidecar) is news.
    assert [(e["type"], e["reason"]) for e in client.events[:1]] == [("Normal", "Programmed")]
    assert len(client.events) == 50


async def test_a_fresh_leader_writes_routes_no_sidecar_runs_without_an_event_each() -> None:
    routes, controller = many_routes(40)
    controller.sync = {("ModelRoute", "default", "r0000"): RouteSync(2, 2)}  # the others' namespace has no sidecar
    client = FakeClient(objects={r.metadata.name: as_served(r, status={}) for r in routes})
    statuses = ObservedStatuses()
    statuses.replace("ModelRoute", None, list(client.objects.values()))
    writer = StatusWriter(client, controller, elector=FakeElector(), statuses=statuses)  # type: ignore[arg-type]
    assert await writer.write_pass() == 0
    assert len(client.patches) == 40  # every route shows its conditions
    lonely = by_type(dict(client.patches)["r0001"])["Programmed"]
    assert (lonely["status"], lonely["message"]) == (
        "True",
        "0/0 sidecars run generation 1 (no sidecar this route applies to is connected)",
    )
    # One Event: the route that reached sidecars; 39 "0/0" Events would have said nothing.
    assert [(e["regarding"]["name"], e["reason"]) for e in client.events] == [("r0000", "Programmed")]


async def test_a_status_that_moved_since_the_watch_saw_it_costs_one_get() -> None:
    routes, controller = many_routes(3)
    client = FakeClient(objects={r.metadata.name: as_served(r, status=current_status(r)) for r in routes})
    client.objects["r0001"]["status"] = {}
    statuses = ObservedStatuses()
    statuses.replace("ModelRoute", None, copy.deepcopy(list(client.objects.values())))
    # Someone wrote r0001's status after the watch showed it (an old leader's last write, say).
    stale = client.objects["r0001"]
    stale["status"] = {
        "conditions": [
            {
                "type": "Accepted",
                "status": "False",
                "reason": "Old",
                "message": "",
                "observedGeneration": 1,
                "lastTransitionTime": T1,
            }
        ]
    }
    stale["metadata"]["resourceVersion"] = "8"
    writer = StatusWriter(client, controller, elector=FakeElector(), statuses=statuses)  # type: ignore[arg-type]
    assert await writer.write_pass() == 0
    assert (client.conflicts, client.gets) == (1, 1)
    [(name, written)] = client.patches
    assert name == "r0001" and by_type(written)["Accepted"]["status"] == "True"
    # The Event follows what was really on the object (Accepted False -> True), not the stale copy.
    assert ("Normal", "Accepted") in [(e["type"], e["reason"]) for e in client.events]


async def test_an_object_recreated_under_the_same_name_is_read_not_trusted_from_the_watch() -> None:
    routes, controller = many_routes(1)
    client = FakeClient(objects={"r0000": as_served(routes[0], status=current_status(routes[0]))})
    statuses = ObservedStatuses()
    statuses.event(
        "ModelRoute",
        "ADDED",
        as_served(routes[0], status=None)
        | {"metadata": {"name": "r0000", "namespace": "default", "uid": "uid-older", "resourceVersion": "3"}},
    )
    writer = StatusWriter(client, controller, elector=FakeElector(), statuses=statuses)  # type: ignore[arg-type]
    assert await writer.write_pass() == 0
    assert client.gets == 1 and client.patches == []


async def test_after_regaining_leadership_the_watch_copy_is_used_again() -> None:
    routes, controller = many_routes(20)
    client = FakeClient(objects={r.metadata.name: as_served(r, status=current_status(r)) for r in routes})
    statuses = ObservedStatuses()
    statuses.replace("ModelRoute", None, list(client.objects.values()))
    elector = FakeElector()
    writer = StatusWriter(client, controller, elector=elector, statuses=statuses)  # type: ignore[arg-type]
    await writer.write_pass()
    for callback in elector.listeners:
        callback(False)
        callback(True)
    await writer.write_pass()
    assert client.gets == 0 and client.patches == []


def test_observed_statuses_follow_lists_and_events() -> None:
    statuses = ObservedStatuses()
    a, b = named_route("a"), named_route("b")
    statuses.replace("ModelRoute", None, [as_served(a, status={"observedGeneration": 1})])
    other_ns = as_served(b, status=None)
    other_ns["metadata"]["namespace"] = "other"
    statuses.event("ModelRoute", "ADDED", other_ns)
    assert len(statuses) == 2
    seen = statuses.get(("ModelRoute", "default", "a"))
    assert seen is not None and (seen.uid, seen.resource_version, seen.status) == (
        "uid-a",
        "7",
        {"observedGeneration": 1},
    )
    statuses.replace("ModelRoute", "default", [])  # a re-list of one namespace leaves the others
    assert statuses.get(("ModelRoute", "default", "a")) is None
    assert statuses.get(("ModelRoute", "other", "b")) is not None
    statuses.event("ModelRoute", "BOOKMARK", {"metadata": {"resourceVersion": "99"}})
    statuses.event("ModelRoute", "DELETED", other_ns)
    assert len(statuses) == 0
    statuses.event("ClusterModelPolicy", "ADDED", {"metadata": {"name": "all", "uid": "u", "resourceVersion": "1"}})
    assert statuses.get(("ClusterModelPolicy", "", "all")) is not None
    # Only kinds whose status we write: a Secret's data never lands here.
    statuses.event(
        "Secret", "ADDED", {"metadata": {"name": "key", "namespace": "default"}, "data": {"apiKey": "c2stc2VjcmV0"}}
    )
    statuses.replace("Secret", None, [{"metadata": {"name": "key2"}, "data": {"apiKey": "c2stc2VjcmV0"}}])
    assert len(statuses) == 1


def test_kept_statuses_cost_about_their_own_size() -> None:
    """Thousands of statuses are kept (one per object, as watched and as written): each a few hundred
    bytes of JSON, not the serialiser's whole working buffer (4 KB each, 50 MB at 7,000 objects)."""
    import tracemalloc

    status = {
        "observedGeneration": 1,
        "conditions": [
            {"type": t, "status": "True", "reason": t, "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}
            for t in ("Accepted", "ResolvedRefs")
        ],
    }
    items = []
    for i in range(1000):
        obj = as_served(named_route(f"r{i}"), status=status)
        obj["metadata"]["uid"] = f"uid-{i:04d}"  # strings of their own, made before tracing
        items.append(obj)
    statuses = ObservedStatuses()
    tracemalloc.start()
    try:
        statuses.replace("ModelRoute", None, items)
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(statuses) == 1000
    assert kept / 1000 < 1000, f"{kept / 1000:.0f} bytes per kept status"


# --- files mode -----------------------------------------------------------------------------


def test_condition_logger_logs_changes_once(caplog: pytest.LogCaptureFixture) -> None:
    controller = controller_with(
        route(1, provider="ghost"), verdicts={KEY: RouteVerdict(ACCEPTED, MISSING, 1, None)}, sync={}
    )
    logger = ConditionLogger(controller)
    with caplog.at_level(logging.INFO, logger="modelway.status"):
        logger.flush()
        logger.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert f"ModelRoute default/chat: ResolvedRefs=False BackendNotFound: {MISSING.message}" in lines
    assert len(lines) == 3  # Accepted, ResolvedRefs, Programmed: once each
    assert [r.levelname for r in caplog.records] == ["INFO", "WARNING", "WARNING"]


@dataclass
class SlowFirstClient(FakeClient):
    """The first object's write takes a while (a busy API server, a slow etcd write); the others are quick."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    slow: str = "r0000"

    async def patch(self, rt: Any, name: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        if name == self.slow:
            await self.release.wait()
        return await super().patch(rt, name, body, **kw)


async def test_one_slow_write_does_not_hold_up_the_rest_of_a_pass() -> None:
    routes, controller = many_routes(200)
    client = SlowFirstClient(objects={r.metadata.name: as_served(r, status={}) for r in routes})
    statuses = ObservedStatuses()
    statuses.replace("ModelRoute", None, list(client.objects.values()))
    writer = StatusWriter(client, controller, elector=FakeElector(), statuses=statuses)  # type: ignore[arg-type]
    passing = asyncio.create_task(writer.write_pass())
    for _ in range(100):
        await asyncio.sleep(0)
    # Everything but the slow object is written while it waits, not only the others of its batch.
    assert len(client.patches) == 199
    client.release.set()
    assert await passing == 0
    assert len(client.patches) == 200


async def test_a_pass_stops_writing_soon_after_the_lease_is_lost() -> None:
    routes, controller = many_routes(200)
    elector = FakeElector()

    @dataclass
    class LosingClient(FakeClient):
        async def patch(self, rt: Any, name: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
            if len(self.patches) >= 20:
                elector.is_leader = False  # another replica leads from here on
            await asyncio.sleep(0)
            return await super().patch(rt, name, body, **kw)

    client = LosingClient(objects={r.metadata.name: as_served(r, status={}) for r in routes})
    statuses = ObservedStatuses()
    statuses.replace("ModelRoute", None, list(client.objects.values()))
    writer = StatusWriter(client, controller, elector=elector, statuses=statuses)  # type: ignore[arg-type]
    assert await writer.write_pass() == 0
    assert len(client.patches) <= 20 + 16  # at most the writes already in flight
