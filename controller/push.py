"""The stream server sidecars connect to: authenticate, attach, relay ACKs and NACKs.

A snapshot goes to every sidecar of a workload as the same bytes: its WebSocket
frame (deflated once when the connection negotiated permessage-deflate) is built
once per snapshot and written to each connection as is, instead of aiohttp
encoding and compressing it again per connection (and keeping a compressor per
connection). A frame deflated on its own, without the previous messages as
context, is valid whatever context takeover the two ends agreed (RFC 7692 7.2.1).

Liveness: instead of aiohttp's heartbeat (a timer per connection, moved on
every message received: thousands of ACKs after every push), one sweep every
10 s over all streams (`Liveness`). A stream heard from (any message, the
sidecar's own pings included: it pings every 20 s) within HEARTBEAT_SECONDS is
left alone; one silent that long is pinged; one still silent half a heartbeat
after that ping is closed, as aiohttp's heartbeat would have done. A stream is
never closed without a ping first, however late a sweep comes on a busy loop.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import struct
import weakref
import zlib
from collections.abc import AsyncIterator, Awaitable
from typing import Protocol

from aiohttp import WSCloseCode, WSMsgType, web

from controller.auth import Authenticator, Identity
from controller.core import Compiled, Controller, Sidecar
from controller.experiment_reports import CountsReport, parse_counts
from controller.experiments.counts import BadCounts
from proxy.snapshot import COUNTS_MAX_BYTES, STREAM_PATH, explain_refusal, snapshot_schema

log = logging.getLogger("modelway.push")


class CountsSink(Protocol):
    """Where sidecars' experiment counts go (controller.experiment_runner.ExperimentRunner)."""

    def record(self, workload: str, report: CountsReport) -> None: ...


_SCHEMA = re.compile(r"[0-9a-f]{1,16}")  # a sidecar's snapshot schema, as `snapshot_schema` writes it

# WebSocket close codes in the private range: the sidecar logs them as refusals.
CLOSE_BAD_MESSAGE = 4400
HEARTBEAT_SECONDS = 20.0  # silent this long: pinged; silent half as long again after the ping: closed


class Liveness:
    """When each stream was last heard from, and the sweep that pings the silent and closes the dead."""

    def __init__(self, *, heartbeat: float = HEARTBEAT_SECONDS) -> None:
        self._heartbeat = heartbeat
        self.heard: dict[web.WebSocketResponse, float] = {}  # the stream loop writes it at every message
        self._pinged: dict[web.WebSocketResponse, float] = {}  # when the sweep pinged a silent stream
        self._closing: set[asyncio.Task[bool]] = set()  # referenced until done (the loop keeps weak ones)

    async def sweep_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._heartbeat / 2)
            await self.sweep(loop.time())

    async def sweep(self, now: float) -> None:
        for ws in [ws for ws in self._pinged if ws not in self.heard]:
            del self._pinged[ws]  # gone since its ping
        for ws, heard in list(self.heard.items()):
            silent = now - heard
            if ws.closed or silent < self._heartbeat:
                self._pinged.pop(ws, None)
                continue
            pinged = self._pinged.get(ws)
            if pinged is not None and pinged >= heard:  # pinged, and not heard from since
                if now - pinged >= self._heartbeat / 2:
                    log.info("closing a sidecar stream silent for %.0f s", silent)
                    self.heard.pop(ws, None)
                    del self._pinged[ws]
                    task = asyncio.get_running_loop().create_task(ws.close(code=WSCloseCode.GOING_AWAY))
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)
                continue
            self._pinged[ws] = now
            try:
                await ws.ping()
            except (ConnectionError, RuntimeError):
                self.heard.pop(ws, None)  # closing anyway: its stream loop ends
                del self._pinged[ws]


CONTROLLER = web.AppKey("controller", Controller)
COUNTS: web.AppKey[CountsSink | None] = web.AppKey("counts")
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
STREAMS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("streams", weakref.WeakSet)
# tells apart sidecars of one pod across reconnects
SERIAL: web.AppKey[itertools.count[int]] = web.AppKey("serial", itertools.count)
LIVENESS = web.AppKey("liveness", Liveness)


_FIN_TEXT = 0x81
_RSV1 = 0x40  # permessage-deflate: the payload is deflated


def text_frame(message: str, *, compress: int = 0) -> bytes:
    """One unmasked (server to client) WebSocket text frame; deflated with window bits `compress` if set."""
    payload = message.encode()
    first = _FIN_TEXT
    if compress:
        deflate = zlib.compressobj(zlib.Z_BEST_SPEED, zlib.DEFLATED, -max(9, compress))
        payload = deflate.compress(payload) + deflate.flush(zlib.Z_SYNC_FLUSH)
        if payload.endswith(b"\x00\x00\xff\xff"):
            payload = payload[:-4]  # RFC 7692 7.2.1: the sync flush's empty block is left off
        first |= _RSV1
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


class WebSocketStream:
    """The controller's side of one sidecar's WebSocket: shares each snapshot's encoded frame."""

    __slots__ = ("_ws",)

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws

    def send_snapshot(self, compiled: Compiled) -> Awaitable[None] | None:
        """Writes the snapshot's frame now; returns something to await only when the connection is backed up."""
        writer = self._ws._writer  # aiohttp's frame writer: public API would encode and deflate per connection
        if writer is None or writer._closing or writer.transport.is_closing():
            raise ConnectionResetError("the stream is closing")
        compress = int(self._ws.compress)
        frame = compiled.encoded.get(compress)
        if frame is None:
            frame = compiled.encoded[compress] = text_frame(compiled.message, compress=compress)
        writer.transport.write(frame)
        if writer.protocol._paused:  # what aiohttp's own send does: wait until the socket drains
            return writer.protocol._drain_helper()
        return None


async def _identity(request: web.Request) -> Identity:
    """Who connects, or 401. Apart from `stream` so the token is not kept for the connection's life."""
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else ""
    identity = await request.app[AUTHENTICATOR].authenticate(token)
    if identity is None:
        # Same answer for no token and a bad one; the reason stays in our log.
        log.info("refused a sidecar stream from %s: %s", request.remote, "no token" if not token else "invalid token")
        raise web.HTTPUnauthorized(text="a valid ServiceAccount token for audience 'modelway' is required\n")
    return identity


async def stream(request: web.Request) -> web.StreamResponse:
    identity = await _identity(request)
    controller = request.app[CONTROLLER]
    # No aiohttp heartbeat (see Liveness) and pings answered here, so every frame shows the stream alive.
    ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20)
    await ws.prepare(request)
    request.app[STREAMS].add(ws)
    heard = request.app[LIVENESS].heard
    loop = asyncio.get_running_loop()
    heard[ws] = loop.time()  # one that never says a word is pinged, then closed, like any other
    serial = request.app[SERIAL]  # apart: inside next(...) mypy would read the key as AppKey[SupportsNext]
    sidecar = Sidecar(name=f"{identity}#{next(serial)}", workload=identity.workload, stream=WebSocketStream(ws))
    log.info("sidecar %s connected", sidecar.name)
    attached = False
    schema = ""  # the snapshot schema the sidecar's hello reports (none from sidecars before they did)
    try:
        async for message in ws:
            heard[ws] = loop.time()
            if message.type != WSMsgType.TEXT:
                if message.type == WSMsgType.PING:
                    await ws.pong(message.data)
                continue
            try:
                data = json.loads(message.data)
                kind, version = data["type"], str(data.get("version", ""))
            except (ValueError, KeyError, TypeError):
                await ws.close(code=CLOSE_BAD_MESSAGE, message=b"messages are JSON objects with a type")
                break
            if kind == "hello" and not attached:
                attached = True
                reported = data.get("schema")
                schema = reported if isinstance(reported, str) and _SCHEMA.fullmatch(reported) else ""
                await controller.attach(sidecar, has_version=version)
            elif kind == "ack":
                controller.acknowledge(sidecar, version=version, error=None)
            elif kind == "nack":
                error = explain_refusal(
                    str(data.get("error", "")) or "unknown", sidecar_schema=schema, controller_schema=snapshot_schema()
                )
                controller.acknowledge(sidecar, version=version, error=error)
            elif kind == "counts":
                _counts(request.app[COUNTS], identity, sidecar, data, size=len(message.data))
    finally:
        heard.pop(ws, None)
        controller.detach(sidecar)
        log.info("sidecar %s disconnected", sidecar.name)
    return ws


def _counts(sink: CountsSink | None, identity: Identity, sidecar: Sidecar, data: object, *, size: int) -> None:
    """A sidecar's experiment counts: untrusted, so checked whole before any of it is taken."""
    if sink is None:
        return
    try:
        if size > COUNTS_MAX_BYTES:
            raise BadCounts(f"a counts message of {size} bytes is over the {COUNTS_MAX_BYTES} allowed")
        if not isinstance(data, dict):
            raise BadCounts("not a JSON object")
        report = parse_counts(data, namespace=identity.workload.namespace)
    except BadCounts as exc:
        log.warning("ignored counts from sidecar %s: %s", sidecar.name, exc)
        return
    sink.record(str(identity), report)


async def _sweeping(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(app[LIVENESS].sweep_forever(), name="stream-liveness")
    yield
    task.cancel()


async def _close_streams(app: web.Application) -> None:
    """On shutdown, tell sidecars to go (they reconnect elsewhere) instead of leaving them hanging."""
    streams = app[STREAMS]  # apart: inside set(...) mypy would read the key as AppKey[Iterable]
    for ws in set(streams):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"controller shutting down")


def build_push_app(
    *,
    controller: Controller,
    authenticator: Authenticator,
    counts: CountsSink | None = None,
    heartbeat: float = HEARTBEAT_SECONDS,
) -> web.Application:
    # Sidecars report theirs in their hello: a refusal by one with another schema names both.
    log.info("this controller's snapshot schema is %s", snapshot_schema())
    app = web.Application()
    app[CONTROLLER] = controller
    app[COUNTS] = counts
    app[AUTHENTICATOR] = authenticator
    app[SERIAL] = itertools.count(1)
    app[STREAMS] = weakref.WeakSet()
    app[LIVENESS] = Liveness(heartbeat=heartbeat)
    app.cleanup_ctx.append(_sweeping)
    app.on_shutdown.append(_close_streams)
    app.router.add_get(STREAM_PATH, stream)
    return app
