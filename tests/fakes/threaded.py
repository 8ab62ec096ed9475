"""Run a fake (an aiohttp app, or any asyncio server) on its own event loop in a daemon thread, for
synchronous tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

from aiohttp import web


class LoopThread:
    """A server on its own event loop in a daemon thread: `_serve` starts it, sets `_ready` and
    waits for `_stop`; `with` starts the thread, waits until ready, and stops it on leaving."""

    what = "server"  # for the error when it does not start

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{self.what} did not start")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


class AppThread(LoopThread):
    """`with AppThread(lambda: create_app(state)) as fake: fake.base_url`"""

    what = "fake"

    def __init__(self, make_app: Callable[[], web.Application]) -> None:
        super().__init__()
        self.base_url = ""
        self._make_app = make_app

    async def _serve(self) -> None:
        from .server import serve

        self._stop = asyncio.Event()
        async with serve(self._make_app()) as serving:
            self.base_url = serving.base_url
            self._ready.set()
            await self._stop.wait()
