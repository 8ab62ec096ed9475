"""The admin port: liveness, readiness (a snapshot is loaded) and the config, secrets masked."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from proxy.runtime import RuntimeHolder

ADMIN_HOLDER = web.AppKey("admin_holder", RuntimeHolder)
# Where the configuration comes from and how that source is doing, e.g.
# {"source": "controller", "controllerConnected": true}.
SOURCE_STATUS = web.AppKey("source_status", Callable[[], dict[str, Any]])


def _age(received_at: float) -> float:
    return round(time.time() - received_at, 3)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[ADMIN_HOLDER].current
    if runtime is None:
        return web.json_response(
            {"ready": False, "reason": "no snapshot yet", **request.app[SOURCE_STATUS]()}, status=503
        )
    return web.json_response(
        {
            "ready": True,
            "version": runtime.snapshot.version,
            "snapshotAgeSeconds": _age(runtime.received_at),
            **request.app[SOURCE_STATUS](),
        }
    )


async def config(request: web.Request) -> web.Response:
    runtime = request.app[ADMIN_HOLDER].current
    if runtime is None:
        return web.json_response({"snapshot": None, "reason": "no snapshot loaded yet"}, status=503)
    return web.json_response(
        {
            "snapshot": runtime.snapshot.masked(),
            "snapshotAgeSeconds": _age(runtime.received_at),
            **request.app[SOURCE_STATUS](),
        }
    )


def build_admin_app(
    *, holder: RuntimeHolder, source_status: Callable[[], dict[str, Any]] = lambda: {}
) -> web.Application:
    app = web.Application()
    app[ADMIN_HOLDER] = holder
    app[SOURCE_STATUS] = source_status
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/config", config)
    return app
