"""Serving one of the bench's helper apps (upstream, baseline, OTLP sink) until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web


async def serve_until_stopped(
    app: web.Application, *, host: str, port: int, banner: str, backlog: int = 128, handler_cancellation: bool = False
) -> None:
    """Serve `app`, print `banner` once listening (the parent waits for that line), stop on a signal."""
    runner = web.AppRunner(app, access_log=None, handler_cancellation=handler_cancellation)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=backlog).start()
    print(banner, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
