"""Run a fake's aiohttp app on its own event loop in a daemon thread, for synchronous tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import TracebackType

from aiohttp import web


class AppThread:
    """`with AppThread(lambda: create_app(state)) as fake: fake.base_url`"""

    def __init__(self, make_app: Callable[[], web.Application]) -> None:
        self.base_url = ""
        self._make_app = make_app
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        from .server import serve

        self._stop = asyncio.Event()
        async with serve(self._make_app()) as serving:
            self.base_url = serving.base_url
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> AppThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake did not start")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()
