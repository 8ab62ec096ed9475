"""A new leader's first status pass, against the real kube-apiserver: it works from what the watch saw.

With ~1,400 objects whose status a former leader already wrote, the first pass
of a writer that has the watch's statuses sends no request at all; one without
them (how every leader started before) reads every object with a GET. The
passes are timed and printed (run with -s to see them), not asserted on:

    MODELWAY_E2E_STATUS_OBJECTS=1400 python -m pytest -s -p no:cacheprovider \\
        tests/e2e/test_status_first_pass.py
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.core import Controller
from controller.kube import KubeClient
from controller.kube.resources import CLUSTER_MODEL_POLICIES, MODEL_POLICIES, MODEL_PROVIDERS, MODEL_ROUTES, SECRETS
from controller.sources.kube import KubeSource
from controller.status import DesiredStatus, desired_statuses, render
from controller.status_writer import ObservedStatuses, StatusWriter
from controller.store import ResourceStore
from tests.e2e.status_support import conditions, eventually, provider, route, secret, stop

pytestmark = pytest.mark.e2e

OBJECTS = int(os.environ.get("MODELWAY_E2E_STATUS_OBJECTS", "1400"))
KINDS = {
    "ModelRoute": MODEL_ROUTES,
    "ModelProvider": MODEL_PROVIDERS,
    "ModelPolicy": MODEL_POLICIES,
    "ClusterModelPolicy": CLUSTER_MODEL_POLICIES,
}


class Counting:
    """The real client, counting calls by method name."""

    def __init__(self, client: KubeClient) -> None:
        self._client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await method(*args, **kwargs)

        return call


class Leading:
    """The elector as the writer sees it: these tests time write passes, not elections."""

    is_leader = True
    identity = "first-pass-test"

    def add_listener(self, callback: Callable[[bool], None]) -> None:
        pass


class Replica:
    """Watch, store and judgement of one controller replica scoped to one namespace."""

    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.store = ResourceStore()
        self.statuses = ObservedStatuses()
        self.controller = Controller(store=self.store, quiet_seconds=0.05)
        self.source = KubeSource(client, namespaces=[namespace], statuses=self.statuses)
        self.tasks: list[asyncio.Task[Any]] = []

    async def start(self, routes: int) -> None:
        self.tasks = [asyncio.create_task(self.source.run(self.store)), asyncio.create_task(self.controller.run())]
        await asyncio.wait_for(self.source.wait_synced(), 60)
        await eventually(lambda: len(self.controller.judgement.routes) == routes, timeout=60, what="all judged")

    async def close(self) -> None:
        for task in reversed(self.tasks):
            await stop(task)

    async def seed(self, client: KubeClient) -> None:
        """Every status as a leader writes it, by a faster road than the writer's (no Events, 32 at once)."""
        desired = desired_statuses(self.controller.judgement, self.controller.route_sync(), self.store.view())
        limit = asyncio.Semaphore(32)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        async def write(status: DesiredStatus) -> None:
            async with limit:
                rt = KINDS[status.kind]  # cluster policies other tests left are judged too
                await client.patch_status(rt, status.name, render(status, None, now), namespace=status.namespace)

        await asyncio.gather(*(write(status) for status in desired.values()))

    def writer(self, client: Any, *, watched: bool) -> StatusWriter:
        return StatusWriter(
            client,
            self.controller,
            elector=Leading(),  # type: ignore[arg-type]
            statuses=self.statuses if watched else None,
        )


async def create_all(client: KubeClient, namespace: str, providers: int, routes: int) -> None:
    limit = asyncio.Semaphore(32)

    async def create(rt: Any, body: dict[str, Any]) -> None:
        async with limit:
            await client.create(rt, body, namespace=namespace)

    await create(SECRETS, secret(namespace))
    await asyncio.gather(*(create(MODEL_PROVIDERS, provider(f"p{i}", namespace)) for i in range(providers)))
    await asyncio.gather(
        *(create(MODEL_ROUTES, route(f"r{i:04d}", namespace, f"p{i % providers}")) for i in range(routes))
    )


async def test_a_new_leaders_first_pass_sends_no_get(client: KubeClient, namespace: str) -> None:
    providers = max(1, OBJECTS // 14)
    routes = OBJECTS - providers
    started = time.monotonic()
    await create_all(client, namespace, providers, routes)
    created_s = time.monotonic() - started
    replica = Replica(client, namespace)
    try:
        await replica.start(routes)
        # A former leader wrote every status (setup: concurrent, and without its Events).
        started = time.monotonic()
        await replica.seed(client)
        seeded_s = time.monotonic() - started
        # The API server is shared with other tests: their cluster-wide policies are judged too.
        written = len(
            desired_statuses(replica.controller.judgement, replica.controller.route_sync(), replica.store.view())
        )
        assert written >= OBJECTS
        await eventually(
            lambda: (
                len(replica.statuses) >= written
                and all(
                    (seen := replica.statuses.get(key)) is not None and seen.status.get("conditions")
                    for key in replica.controller.judgement.routes
                )
            ),
            timeout=60,
            what="the watch shows every status",
        )

        # Without the watch's statuses (how a new leader started before): a GET per object.
        before = Counting(client)
        started = time.monotonic()
        assert await replica.writer(before, watched=False).write_pass() == 0
        before_s = time.monotonic() - started
        assert before.calls == {"get": written}

        # With them: nothing to read, nothing to write.
        after = Counting(client)
        started = time.monotonic()
        assert await replica.writer(after, watched=True).write_pass() == 0
        after_s = time.monotonic() - started
        assert after.calls == {}
    finally:
        await replica.close()
    print(
        f"\n{OBJECTS} objects ({routes} routes, {providers} providers): created in {created_s:.1f} s, "
        f"statuses first written in {seeded_s:.1f} s; a new leader's first pass: "
        f"{before_s:.2f} s with a GET per object, {after_s:.3f} s from the watch"
    )


async def test_a_status_moved_since_the_watch_saw_it_is_a_conflict_and_one_get(
    client: KubeClient, namespace: str
) -> None:
    await create_all(client, namespace, 1, 1)
    replica = Replica(client, namespace)
    try:
        await replica.start(1)
        key = ("ModelRoute", namespace, "r0000")
        seen = replica.statuses.get(key)
        assert seen is not None and seen.status == {}
        # Freeze the watch's copy (no status, the old resourceVersion), then let someone write the status.
        await stop(replica.tasks.pop(0))
        await replica.seed(client)
        assert replica.statuses.get(key) == seen  # the stopped watch did not see that write

        writer_client = Counting(client)
        assert await replica.writer(writer_client, watched=True).write_pass() == 0
        # Each apply (the route's, the provider's) carried the stale resourceVersion: the real API server
        # refused it (409), the writer read the object once, found its status right and wrote nothing more.
        assert writer_client.calls == {"patch": 2, "get": 2}
        obj = await client.get(MODEL_ROUTES, "r0000", namespace=namespace)
        assert conditions(obj)["Programmed"]["status"] == "True"
    finally:
        await replica.close()
