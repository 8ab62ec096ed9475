"""An in-process controller serving the push stream to real sidecar processes: the team's objects
(a Secret with both fake providers' keys, the two ModelProviders, a ModelRoute `chat`), the controller
started on loopback and stopped, and a wait for a condition."""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from controller.api import parse_resource
from controller.auth import Identity, StaticAuthenticator
from controller.core import Controller
from controller.push import CountsSink, build_push_app
from controller.store import ResourceStore
from tests.fakes.server import DEFAULT_KEYS

TOKEN = "dev-token-for-tests"


def team_objects(openai_url: str, anthropic_url: str, route_spec: dict[str, Any]) -> list[Any]:
    """The providers `openai` and `claude` of namespace team-a (keys in Secret `keys`) and the route `chat`."""
    key = lambda v: base64.b64encode(v.encode()).decode()  # noqa: E731
    return [
        parse_resource(o)
        for o in [
            {
                "kind": "Secret",
                "metadata": {"name": "keys", "namespace": "team-a"},
                "data": {"openai": key(DEFAULT_KEYS["openai"]), "anthropic": key(DEFAULT_KEYS["anthropic"])},
            },
            {
                "kind": "ModelProvider",
                "metadata": {"name": "openai", "namespace": "team-a"},
                "spec": {
                    "type": "openai",
                    "baseURL": openai_url + "/v1",
                    "credentialsRef": {"name": "keys", "key": "openai"},
                },
            },
            {
                "kind": "ModelProvider",
                "metadata": {"name": "claude", "namespace": "team-a"},
                "spec": {
                    "type": "anthropic",
                    "baseURL": anthropic_url,
                    "credentialsRef": {"name": "keys", "key": "anthropic"},
                },
            },
            {
                "kind": "ModelRoute",
                "metadata": {"name": "chat", "namespace": "team-a", "generation": 1},
                "spec": route_spec,
            },
        ]
    ]


class RunningController:
    def __init__(
        self, store: ResourceStore, controller: Controller, runner: web.AppRunner, *, tls: bool = False
    ) -> None:
        self.store, self.controller, self.runner = store, controller, runner
        self.port: int = runner.addresses[0][1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.task: asyncio.Task[None] | None = None
        self.counts: CountsSink | None = None  # where the sidecars' experiment counts go, if anywhere


async def start_controller(
    objects: list[Any],
    *,
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    counts: Callable[[Controller], CountsSink] | None = None,
) -> RunningController:
    """The controller on `objects`, its push stream on loopback (`port`, 0 for any), running; the sidecars'
    experiment counts go to what `counts` makes for it, if given."""
    store = ResourceStore()
    controller = Controller(store=store, quiet_seconds=0.05)
    for obj in objects:
        store.apply(obj)
    await controller.recompute()
    sink = counts(controller) if counts is not None else None
    auth = StaticAuthenticator(token=TOKEN, identity=Identity(namespace="team-a", service_account="app"))
    runner = web.AppRunner(build_push_app(controller=controller, authenticator=auth, counts=sink))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
    running = RunningController(store, controller, runner, tls=ssl_context is not None)
    running.counts = sink
    running.task = asyncio.create_task(controller.run())
    return running


async def stop_controller(running: RunningController) -> None:
    assert running.task is not None
    running.task.cancel()
    await running.runner.cleanup()


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")
