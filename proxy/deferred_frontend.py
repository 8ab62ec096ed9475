"""A front end imported by its API's first request, not by every sidecar.

Most apps call one API, so the sidecar imports the OpenAI front end (Chat Completions, embeddings,
models) at start, and the others (Anthropic Messages, its count_tokens, OpenAI Responses) when a
request first needs them (`proxy.server`): their code is memory every injected pod would pay.

The import runs in a worker thread, so the event loop keeps serving while the modules are read and
run; requests that arrive meanwhile wait for that same import. It is shielded: a first request
whose client leaves does not cancel it, and the next request finds it done. An import that fails
(a broken image, memory short) is logged with its traceback, and requests are answered 503 in their
API's shape with a `retry-after`; the first request after that pause tries again. Once loaded, a
request pays one attribute check (`loaded`).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
import time
from collections.abc import Callable
from types import ModuleType
from typing import Generic, TypeVar

from proxy.errors import ApiError

log = logging.getLogger("modelway.server")

T = TypeVar("T")

#: How long requests are answered 503 after a failed import before the next one tries again.
RETRY_SECONDS = 2.0


class DeferredFrontend(Generic[T]):
    """`build(module)` of `module`, imported by the first `load()`; `loaded` once it is."""

    __slots__ = ("_build", "_loading", "_module", "_retry_at", "_retry_seconds", "_what", "loaded")

    def __init__(
        self, *, what: str, module: str, build: Callable[[ModuleType], T], retry_seconds: float = RETRY_SECONDS
    ) -> None:
        self.loaded: T | None = None
        self._what = what  # for the log and the 503: "the Anthropic Messages front end"
        self._module = module
        self._build = build
        self._retry_seconds = retry_seconds
        self._loading: asyncio.Task[T | None] | None = None  # the import under way, shared by its waiters
        self._retry_at = 0.0  # (monotonic) after a failed import: no new one before then

    async def load(self) -> T:
        """What `build` made, importing its module first if no request has yet; ApiError 503 if it
        cannot be imported."""
        if self.loaded is not None:
            return self.loaded
        if self._loading is None:
            pause = self._retry_at - time.monotonic()
            if pause > 0:
                raise self._unavailable(pause)
            self._loading = asyncio.get_running_loop().create_task(self._import())
        # Shielded: cancelling this request (its client left) leaves the import to finish for the next.
        loaded = await asyncio.shield(self._loading)
        if loaded is None:
            raise self._unavailable(self._retry_seconds)
        return loaded

    async def _import(self) -> T | None:
        """The import and build, once for all waiters; None when it failed (logged here: the task never
        raises, so no waiter, or none left, has an exception to collect)."""
        started = time.perf_counter()
        try:
            module = await asyncio.to_thread(importlib.import_module, self._module)
            loaded = self._build(module)
        except Exception:
            self._retry_at = time.monotonic() + self._retry_seconds
            log.exception("could not load %s (%s); its requests are answered 503", self._what, self._module)
            return None
        finally:
            self._loading = None
        self.loaded = loaded
        log.info("loaded %s on its first request in %.0f ms", self._what, (time.perf_counter() - started) * 1000)
        return loaded

    def _unavailable(self, retry_after: float) -> ApiError:
        return ApiError(
            503,
            f"the sidecar could not load {self._what}; retry shortly (its log has the details)",
            "api_error",
            "frontend_unavailable",
            headers={"retry-after": str(max(1, math.ceil(retry_after)))},
        )
