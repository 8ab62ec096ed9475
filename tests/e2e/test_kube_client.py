"""KubeClient and KubeSource against a scripted aiohttp fake of the API: the
re-list/reconnect paths a real apiserver will not produce on demand (a 410,
refused connections), and a TokenReview answer that ignores audiences."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from controller.kube import KubeClient, KubeConfig
from controller.sources.kube import KubeSource
from controller.status_writer import ObservedStatuses
from controller.store import ResourceStore
from tests.e2e.kube_helpers import eventually, names, route, running

pytestmark = pytest.mark.e2e


# --- the source against a scripted fake API: 410 and connection trouble ----------------------

Script = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeApi:
    """Lists from `items`; each watch request runs the next script queued for its plural (else hangs)."""

    def __init__(self) -> None:
        self.items: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.version: dict[str, str] = defaultdict(lambda: "100")
        self.scripts: dict[str, list[Script]] = defaultdict(list)
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (plural, list|watch, query)
        self.page_size = 0  # lists answered in pages of this many, with `continue` tokens (0: one page)
        self.app = web.Application()
        for prefix in ("/api/v1", "/apis/{group}/{version}"):
            self.app.router.add_get(prefix + "/{plural}", self.handle)
            self.app.router.add_get(prefix + "/namespaces/{namespace}/{plural}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        plural, query = request.match_info["plural"], dict(request.query)
        namespace = request.match_info.get("namespace")
        watching = query.get("watch") == "1"
        self.requests.append((plural, "watch" if watching else "list", query))
        if not watching:
            items = [i for i in self.items[plural] if namespace in (None, i["metadata"]["namespace"])]
            meta = {"resourceVersion": self.version[plural]}
            if self.page_size:
                start = int(query.get("continue", "0"))
                items, rest = items[start : start + self.page_size], items[start + self.page_size :]
                meta |= {"continue": str(start + self.page_size)} if rest else {}
            return web.json_response({"kind": "List", "metadata": meta, "items": items})
        if self.scripts[plural]:
            return await self.scripts[plural].pop(0)(request)
        return await stream([], hang=True)(request)

    def watches(self, plural: str) -> list[dict[str, str]]:
        return [q for p, verb, q in self.requests if p == plural and verb == "watch"]

    def lists(self, plural: str) -> int:
        return sum(1 for p, verb, _ in self.requests if p == plural and verb == "list")


def fake_route(name: str, version: str, namespace: str = "default") -> dict[str, Any]:
    obj = route(name, namespace)
    obj["metadata"]["resourceVersion"] = version
    return obj


def stream(events: list[dict[str, Any]], *, hang: bool = False, chunk: int = 0) -> Script:
    """A 200 watch response writing `events` (in `chunk`-byte pieces if given), then ending or hanging."""

    async def script(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        data = b"".join(json.dumps(e).encode() + b"\n" for e in events)
        step = chunk or len(data) or 1
        for i in range(0, len(data), step):
            await resp.write(data[i : i + step])
            await asyncio.sleep(0)
        if hang:
            await asyncio.sleep(3600)
        return resp

    return script


def gone_status(request: web.Request) -> Awaitable[web.StreamResponse]:
    async def respond() -> web.StreamResponse:
        return web.json_response(
            {
                "kind": "Status",
                "status": "Failure",
                "reason": "Expired",
                "code": 410,
                "message": "too old resource version: 1 (200)",
            },
            status=410,
        )

    return respond()


def unavailable(request: web.Request) -> Awaitable[web.StreamResponse]:
    async def respond() -> web.StreamResponse:
        return web.json_response(
            {
                "kind": "Status",
                "status": "Failure",
                "reason": "ServiceUnavailable",
                "code": 503,
                "message": "etcd is down",
            },
            status=503,
        )

    return respond()


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeApi, KubeClient]]:
    api = FakeApi()
    server = TestServer(api.app)
    await server.start_server()
    async with KubeClient(KubeConfig(str(server.make_url("")).rstrip("/"))) as c:
        yield api, c
    await server.close()


def quick(client: KubeClient, **kwargs: Any) -> KubeSource:
    return KubeSource(client, backoff_base=0.01, backoff_cap=0.05, **kwargs)


async def test_a_list_in_pages_is_synced_whole(fake: tuple[FakeApi, KubeClient]) -> None:
    api, client = fake
    api.page_size = 2
    api.items["modelroutes"] = [fake_route(f"r{i}", str(90 + i)) for i in range(5)]
    for item in api.items["modelroutes"]:
        item["metadata"]["uid"] = "uid-" + item["metadata"]["name"]
        item["status"] = {"observedGeneration": 1}
    statuses = ObservedStatuses()
    store = ResourceStore()
    async with running(quick(client, statuses=statuses), store):
        await eventually(lambda: len(store.view().routes) == 5, what="every page in the store")
    assert names(store, "ModelRoute") == {f"default/r{i}" for i in range(5)}
    assert api.lists("modelroutes") == 3
    seen = statuses.get(("ModelRoute", "default", "r4"))
    assert seen is not None and (seen.uid, seen.resource_version, seen.status) == (
        "uid-r4",
        "94",
        {"observedGeneration": 1},
    )


@pytest.mark.parametrize("how", ["http-410", "error-event-410"])
async def test_a_gone_watch_relists(fake: tuple[FakeApi, KubeClient], how: str) -> None:
    api, client = fake
    api.items["modelroutes"] = [fake_route("a", "90"), fake_route("b", "95")]
    error = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}
    api.scripts["modelroutes"] = [gone_status if how == "http-410" else stream([error])]
    store = ResourceStore()
    source = quick(client)
    api.version["modelroutes"] = "100"
    async with running(source, store):
        # The re-list finds b deleted and c added while we were not watching.
        api.items["modelroutes"] = [fake_route("a", "90"), fake_route("c", "150")]
        api.version["modelroutes"] = "200"
        await eventually(lambda: names(store, "ModelRoute") == {"default/a", "default/c"}, what="re-listed store")
    assert api.lists("modelroutes") == 2
    assert [q.get("resourceVersion") for q in api.watches("modelroutes")][:2] == ["100", "200"]


async def test_watch_events_bookmarks_and_split_lines(fake: tuple[FakeApi, KubeClient]) -> None:
    api, client = fake
    big = fake_route("big", "101")
    big["metadata"]["annotations"] = {"padding": "x" * 300_000}  # larger than aiohttp's readline limit
    events = [
        {"type": "ADDED", "object": big},
        {"type": "ADDED", "object": fake_route("small", "102")},
        {
            "type": "MODIFIED",
            "object": {
                **fake_route("small", "103"),
                "spec": {"model": "small-v2", "rules": [{"backends": [{"provider": "p", "model": "m"}]}]},
            },
        },
        {"type": "DELETED", "object": fake_route("big", "104")},
        {"type": "BOOKMARK", "object": {"kind": "ModelRoute", "metadata": {"resourceVersion": "180"}}},
    ]
    api.scripts["modelroutes"] = [stream(events, chunk=7_000)]  # ends: the source watches again from 180
    store = ResourceStore()
    async with running(quick(client), store):
        await eventually(lambda: len(api.watches("modelroutes")) >= 2, what="second watch")
        assert [r.spec.model for r in store.view().routes] == ["small-v2"]
    first, second = api.watches("modelroutes")[:2]
    assert (first["resourceVersion"], second["resourceVersion"]) == ("100", "180")
    assert first["allowWatchBookmarks"] == "true" and first["watch"] == "1"
    assert api.lists("modelroutes") == 1  # a watch that ends is resumed, not re-listed


async def test_secrets_are_selected_by_label(fake: tuple[FakeApi, KubeClient]) -> None:
    api, client = fake
    async with running(quick(client), ResourceStore()):
        pass
    list_queries = [q for p, verb, q in api.requests if p == "secrets" and verb == "list"]
    assert list_queries[0]["labelSelector"] == "modelway.io/credentials=true"


async def test_an_invalid_object_is_logged_and_kept_as_invalid_until_fixed(
    fake: tuple[FakeApi, KubeClient], caplog: pytest.LogCaptureFixture
) -> None:
    api, client = fake
    bad = fake_route("bad", "90")
    bad["spec"]["rules"] = []
    api.items["modelroutes"] = [fake_route("good", "80"), bad]
    fixed = fake_route("bad", "110")
    api.scripts["modelroutes"] = [stream([{"type": "MODIFIED", "object": fixed}], hang=True)]
    store = ResourceStore()
    with caplog.at_level(logging.ERROR, logger="modelway.sources.kube"):
        async with running(quick(client), store):
            await eventually(
                lambda: names(store, "ModelRoute") == {"default/good", "default/bad"} and not store.view().invalid,
                what="fixed",
            )
    assert "ModelRoute default/bad is invalid: Invalid: spec.rules" in caplog.text


async def test_namespaced_relist_keeps_other_namespaces(fake: tuple[FakeApi, KubeClient]) -> None:
    api, client = fake
    api.items["modelroutes"] = [fake_route("a", "90", "ns-a"), fake_route("b", "91", "ns-b")]
    # Only ns-a's watch gets a 410 (scripts are per plural: the first watch to ask takes it).
    api.scripts["modelroutes"] = [gone_status]
    store = ResourceStore()
    async with running(quick(client, namespaces=["ns-a", "ns-b"]), store):
        await eventually(lambda: api.lists("modelroutes") >= 3, what="re-list")
        await asyncio.sleep(0.05)
        assert names(store, "ModelRoute") == {"ns-a/a", "ns-b/b"}


async def test_reconnects_with_backoff_and_logs_once_per_streak(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nothing listens on, for now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = FakeApi()
    api.scripts["modelroutes"] = [unavailable, unavailable, unavailable]
    store = ResourceStore()
    async with KubeClient(KubeConfig(f"http://127.0.0.1:{port}")) as client:
        source = quick(client)
        task = asyncio.create_task(source.run(store))
        with caplog.at_level(logging.INFO, logger="modelway.sources.kube"):
            try:
                await asyncio.sleep(0.5)  # many failed attempts
                refused = [r.getMessage() for r in caplog.records if "modelroutes" in r.getMessage()]
                assert len(refused) == 1, refused
                assert "connection to the Kubernetes API at http://127.0.0.1" in refused[0]

                api.items["modelroutes"] = [fake_route("a", "90")]
                server = TestServer(api.app, port=port)
                await server.start_server()
                await asyncio.wait_for(source.wait_synced(), 10)
                assert names(store, "ModelRoute") == {"default/a"}
                await eventually(lambda: len(api.watches("modelroutes")) >= 4, what="watch after three 503s")
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await server.close()
    messages = [r.getMessage() for r in caplog.records if "modelroutes" in r.getMessage()]
    assert sum("503 ServiceUnavailable: etcd is down" in m for m in messages) == 1
    assert any("working again" in m for m in messages)


async def test_a_review_from_an_audience_unaware_authenticator_is_refused() -> None:
    """The API docs ask clients to check status.audiences: an authenticator that ignores
    audiences would otherwise accept a token minted for someone else."""

    async def review(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert body["spec"]["audiences"] == ["modelway"]
        return web.json_response(
            {
                **body,
                "status": {"authenticated": True, "audiences": [], "user": {"username": "system:serviceaccount:a:b"}},
            }
        )

    app = web.Application()
    app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", review)
    server = TestServer(app)
    await server.start_server()
    try:
        async with KubeClient(KubeConfig(str(server.make_url("")).rstrip("/"))) as c:
            result = await c.token_review("some-token")
    finally:
        await server.close()
    assert not result.authenticated
    assert "audiences" in result.error
