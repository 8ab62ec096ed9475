"""Helpers shared by test_kube_source.py and test_kube_client.py: a route manifest,
polling until a condition holds, the names in a store, and a running source."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from controller.api import Resource
from controller.sources.kube import KubeSource
from controller.store import ResourceStore


def route(name: str, namespace: str, model: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "modelway.io/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": model or name, "rules": [{"backends": [{"provider": "openai", "model": "gpt-4o"}]}]},
    }


async def eventually(predicate: Callable[[], bool], *, timeout: float = 15.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"{what} not reached within {timeout}s"
        await asyncio.sleep(0.05)


def names(store: ResourceStore, kind: str) -> set[str]:
    view = store.view()
    items: tuple[Resource, ...] = (*view.providers, *view.routes, *view.secrets)
    return {f"{r.metadata.namespace}/{r.metadata.name}" for r in items if r.kind == kind}


@contextlib.asynccontextmanager
async def running(source: KubeSource, store: ResourceStore) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run(store))
    try:
        await asyncio.wait_for(source.wait_synced(), 20)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
