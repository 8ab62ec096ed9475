"""Which limiter the sidecar counts with, kept across snapshots.

The snapshot's limit store (sent by the controller) wins; else the sidecar's own `--limits-redis-url`;
else the in-process limiter. The limiter is built only when a snapshot with limits first needs one
(a sidecar without limits never imports the Redis client), kept while the store stays the same (a
new snapshot does not reset the counters), and rebuilt when the store changes; the old one is closed
once the requests that reserved on it have settled. The store URL is never logged: it may hold a
password.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import msgspec

from proxy.limits.algorithm import decide
from proxy.limits.model import Counter, CounterState, Decision, Demand, Reservation, Usage
from proxy.limits.settings import Limiter, LimitSettings, build_limiter
from proxy.snapshot import LimitStore

log = logging.getLogger("modelway.limits")

Source = Literal["snapshot", "flags", "in-process"]


class LimiterHandle(msgspec.Struct, eq=False):
    """One limiter and the requests still holding reservations on it."""

    limiter: Limiter
    source: Source  # where its settings came from
    store: Literal["redis", "redis-cluster", "in-process"]
    close_soon: Callable[[Limiter], None]
    users: int = 0
    retired: bool = False

    def acquire(self) -> None:
        self.users += 1

    def release(self) -> None:
        self.users -= 1
        if self.retired and self.users == 0:
            self.close_soon(self.limiter)


class UnusableStore:
    """The limiter when the store's settings cannot even make a client (a malformed URL): every check is
    decided by the limits' failure modes, as when the store is down."""

    async def reserve(self, counters: Sequence[Counter], demand: Demand, *, lease_seconds: float) -> Decision:
        states = [
            CounterState(
                c, c.failure_mode == "open", 0, 0.0, 0.0 if c.failure_mode == "open" else 1.0, unreachable=True
            )
            for c in counters
        ]
        return decide(states, None, store_unreachable=bool(counters))

    async def settle(self, reservation: Reservation, usage: Usage) -> None:
        return None

    async def close(self) -> None:
        return None


class LimiterSlot:
    """Built once per sidecar from its flags (`proxy.options`)."""

    def __init__(self, flags: LimitSettings, *, build: Callable[[LimitSettings], Limiter] = build_limiter) -> None:
        self._flags = flags
        self._build = build
        self._handle: LimiterHandle | None = None
        self._settings: LimitSettings | None = None
        self._seen: Any = _UNSEEN  # the snapshot's store object last looked at: one `is` per request
        self._closing: set[asyncio.Task[None]] = set()  # limiters of earlier stores, closing

    @property
    def current(self) -> LimiterHandle | None:
        return self._handle

    def settings_for(self, store: LimitStore | None) -> tuple[LimitSettings, Source]:
        if store is not None:
            settings = LimitSettings(
                redis_url=store.url.get_secret_value(),
                timeout_seconds=store.timeout_seconds,
                cluster=store.cluster,
                key_prefix=store.key_prefix,
            )
            return settings, "snapshot"
        return self._flags, "flags" if self._flags.redis_url is not None else "in-process"

    def get(self, store: LimitStore | None) -> LimiterHandle:
        """The limiter for a snapshot whose limit store is `store`, built or rebuilt as needed."""
        handle = self._handle
        if store is self._seen and handle is not None:
            return handle
        settings, source = self.settings_for(store)
        if handle is None or settings != self._settings:
            kind: Literal["redis", "redis-cluster", "in-process"] = (
                "in-process" if settings.redis_url is None else "redis-cluster" if settings.cluster else "redis"
            )
            new = LimiterHandle(self._make(settings, source), source, kind, self._close_soon)
            log.info("limits: counting with %s (%s)", kind, "the snapshot's store" if source == "snapshot" else source)
            if handle is not None:
                self._retire(handle)
            self._handle, self._settings = new, settings
            handle = new
        else:
            handle.source = source
        self._seen = store
        return handle

    async def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            await handle.limiter.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _make(self, settings: LimitSettings, source: Source) -> Limiter:
        try:
            return self._build(settings)
        except Exception as exc:  # the message may quote the URL: only its kind is logged
            log.error(
                "limits: the counter store from %s cannot be used (%s); every limit follows its failureMode",
                "the snapshot" if source == "snapshot" else "--limits-redis-url",
                type(exc).__name__,
            )
            return UnusableStore()

    def _retire(self, handle: LimiterHandle) -> None:
        handle.retired = True
        if handle.users == 0:
            self._close_soon(handle.limiter)

    def _close_soon(self, limiter: Limiter) -> None:
        task = asyncio.get_running_loop().create_task(limiter.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


_UNSEEN = object()
