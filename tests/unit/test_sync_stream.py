"""The sidecar's end of the controller stream, against a controller that closes it with a refusal code."""

from __future__ import annotations

import asyncio
import logging
import socket

from aiohttp import web

from proxy.runtime import RuntimeHolder
from proxy.snapshot import STREAM_PATH
from proxy.sync import ControllerSync, SyncSettings


async def test_a_refusal_close_is_logged_and_the_sidecar_reconnects(tmp_path, caplog):
    connections = 0
    reconnected = asyncio.Event()

    async def stream(request: web.Request) -> web.WebSocketResponse:
        nonlocal connections
        connections += 1
        if connections > 1:
            reconnected.set()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()  # the hello
        await ws.close(code=4400, message=b"messages are JSON objects with a type")
        return ws

    app = web.Application()
    app.router.add_get(STREAM_PATH, stream)
    runner = web.AppRunner(app)
    await runner.setup()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    await web.SockSite(runner, listener).start()
    token = tmp_path / "token"
    token.write_text("t")
    sync = ControllerSync(
        settings=SyncSettings(
            controller_url=f"http://127.0.0.1:{listener.getsockname()[1]}", token_file=token, backoff_base_seconds=0.01
        ),
        holder=RuntimeHolder(),
    )
    task = asyncio.create_task(sync.run())
    waiter = asyncio.create_task(reconnected.wait())
    try:
        with caplog.at_level(logging.WARNING, logger="modelway.sync"):
            done, _ = await asyncio.wait([task, waiter], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert task not in done, f"the stream task ended: {task.exception()!r}"
        assert waiter in done, "the sidecar did not connect again"
        assert "controller closed the stream: 4400" in caplog.text
    finally:
        for pending in (task, waiter):
            pending.cancel()
        await asyncio.gather(task, waiter, return_exceptions=True)
        await runner.cleanup()
