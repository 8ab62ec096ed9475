"""The stream server sidecars connect to: authenticate, attach, relay ACKs and NACKs."""

from __future__ import annotations

import itertools
import json
import logging

import weakref

from aiohttp import WSCloseCode, WSMsgType, web

from controller.auth import Authenticator
from controller.core import Controller, Sidecar
from proxy.snapshot import STREAM_PATH

log = logging.getLogger("modelway.push")

CONTROLLER = web.AppKey("controller", Controller)
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
STREAMS = web.AppKey("streams", weakref.WeakSet)
SERIAL = web.AppKey("serial", itertools.count)  # tells apart sidecars of one pod across reconnects

# WebSocket close codes in the private range: the sidecar logs them as refusals.
CLOSE_BAD_MESSAGE = 4400


async def stream(request: web.Request) -> web.StreamResponse:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    identity = await request.app[AUTHENTICATOR].authenticate(token)
    if identity is None:
        # Same answer for no token and a bad one; the reason stays in our log.
        log.info("refused a sidecar stream from %s: %s", request.remote, "no token" if not token else "invalid token")
        raise web.HTTPUnauthorized(text="a valid ServiceAccount token for audience 'modelway' is required\n")
    controller = request.app[CONTROLLER]
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=1 << 20)
    await ws.prepare(request)
    request.app[STREAMS].add(ws)
    sidecar = Sidecar(name=f"{identity}#{next(request.app[SERIAL])}", workload=identity.workload, stream=ws)
    log.info("sidecar %s connected", sidecar.name)
    attached = False
    try:
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(message.data)
                kind, version = data["type"], str(data.get("version", ""))
            except (ValueError, KeyError, TypeError):
                await ws.close(code=CLOSE_BAD_MESSAGE, message=b"messages are JSON objects with a type")
                break
            if kind == "hello" and not attached:
                attached = True
                await controller.attach(sidecar, has_version=version)
            elif kind == "ack":
                controller.acknowledge(sidecar, version=version, error=None)
            elif kind == "nack":
                controller.acknowledge(sidecar, version=version, error=str(data.get("error", "")) or "unknown")
    finally:
        controller.detach(sidecar)
        log.info("sidecar %s disconnected", sidecar.name)
    return ws


async def _close_streams(app: web.Application) -> None:
    """On shutdown, tell sidecars to go (they reconnect elsewhere) instead of leaving them hanging."""
    for ws in set(app[STREAMS]):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"controller shutting down")


def build_push_app(*, controller: Controller, authenticator: Authenticator) -> web.Application:
    app = web.Application()
    app[CONTROLLER] = controller
    app[AUTHENTICATOR] = authenticator
    app[SERIAL] = itertools.count(1)
    app[STREAMS] = weakref.WeakSet()
    app.on_shutdown.append(_close_streams)
    app.router.add_get(STREAM_PATH, stream)
    return app
