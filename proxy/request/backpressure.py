"""Backpressure: how many requests the sidecar lets out at once, per route and per backend.

A slow provider must not pile requests (their bodies, sockets and buffers) up in the pod. A
`Bound` counts the requests in flight per key (a route's name, a backend's key); past its limit
a request waits in a short FIFO queue, at most `queue_wait` seconds, and past the queue it is
refused. The route bound holds for the whole request (`proxy.request.flow`, part of the admit
stage), the backend bound for each attempt (`proxy.request.attempt`), a stream's until its last
byte. A full backend sends the request on to the rule's next backend, as a failure would (kind
`overloaded`); a full route, or every backend full, refuses it: 503 with Retry-After, in the
app's API (`error.code` "overloaded", Anthropic's `overloaded_error`).

One event loop, so no lock: the counts are plain ints and a queue holds futures. Under the limit
a request allocates nothing here (`Bound.enter` is a dict lookup and an increment); a slot that
is released passes straight to the first waiter, so a newcomer never overtakes the queue. Every
path gives back what it took: a waiter cancelled in the queue leaves it, and one cancelled just
as a slot was handed to it passes the slot on.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Sequence

import msgspec

from proxy import upstream as up
from proxy.errors import ApiError
from proxy.request.relay import AttemptFailed
from proxy.telemetry.sidecar_metrics import NoMetrics

# The failure kind of a backend that was full (an attempt's and the outcome's `error.type`).
OVERLOADED = "overloaded"
ROUTE, BACKEND = "route", "backend"  # modelway.backpressure.scope

# Keys are route names and backend keys: few, but snapshots may rename them. Past this many,
# the idle ones are forgotten (never a key with holders: they still count on its slots).
MAX_KEYS = 4096


class BackpressureSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The sidecar's flags (`proxy.options`); 0 turns a bound off."""

    max_in_flight_per_backend: int = 256
    max_in_flight_per_route: int = 512
    max_queued: int = 128
    queue_wait_seconds: float = 2.0

    def __post_init__(self) -> None:
        if min(self.max_in_flight_per_backend, self.max_in_flight_per_route, self.max_queued) < 0:
            raise ValueError("in-flight bounds and the queue length cannot be negative")
        if not self.queue_wait_seconds >= 0 or math.isinf(self.queue_wait_seconds):
            raise ValueError("the queue wait must be a finite number of seconds, 0 or more")


class Slots:
    """One key's state: the requests holding a slot, and those waiting for one (oldest first)."""

    __slots__ = ("in_flight", "key", "waiters")

    def __init__(self, key: str) -> None:
        self.key = key
        self.in_flight = 0
        # Each waiter's future is resolved True when a slot passes to it, False when its wait ends.
        self.waiters: deque[asyncio.Future[bool]] = deque()


class Full(Exception):
    """No slot for this request: the queue was full (`waited` None), or the wait ran out."""

    def __init__(self, key: str, *, limit: int, queued: int, waited: float | None) -> None:
        super().__init__(key)
        self.key, self.limit, self.queued, self.waited = key, limit, queued, waited


class Bound:
    """At most `limit` holders per key; up to `max_queued` more wait, each at most `queue_wait` s."""

    def __init__(self, *, limit: int, max_queued: int, queue_wait: float) -> None:
        if limit < 1:
            raise ValueError("a bound's limit is at least 1 (no bound: `Unbounded`)")
        self.limit, self.max_queued, self.queue_wait = limit, max_queued, queue_wait
        self._by_key: dict[str, Slots] = {}

    def enter(self, key: str) -> Slots | None:
        """A slot now (give it back with `leave`), or None: then `wait` for one."""
        slots = self._by_key.get(key) or self._add(key)
        if slots.in_flight < self.limit and not slots.waiters:
            slots.in_flight += 1
            return slots
        return None

    async def wait(self, key: str, *, deadline: float | None = None) -> Slots:
        """A slot once one passes to this request, within `queue_wait` (and before `deadline`, a
        loop time); raises `Full` when the queue is full or the wait runs out."""
        slots = self._by_key.get(key) or self._add(key)
        if slots.in_flight < self.limit and not slots.waiters:  # (freed since `enter`)
            slots.in_flight += 1
            return slots
        if len(slots.waiters) >= self.max_queued:
            raise Full(key, limit=self.limit, queued=len(slots.waiters), waited=None)
        loop = asyncio.get_running_loop()
        started = loop.time()
        until = started + self.queue_wait if deadline is None else min(deadline, started + self.queue_wait)
        waiter: asyncio.Future[bool] = loop.create_future()
        slots.waiters.append(waiter)
        timer = loop.call_at(until, _expire, slots, waiter)
        try:
            granted = await waiter
        except BaseException:  # cancelled (the client left, the request's deadline)
            if waiter.cancelled():
                _discard(slots.waiters, waiter)  # still queued: leave the queue
            elif waiter.result():
                self.leave(slots)  # a slot passed to it as it was cancelled: pass it on
            raise
        finally:
            timer.cancel()
        if not granted:
            raise Full(key, limit=self.limit, queued=len(slots.waiters), waited=loop.time() - started)
        return slots

    def leave(self, slots: Slots) -> None:
        """Gives a slot back: to the first waiter still waiting, else to the count."""
        waiters = slots.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # the slot passes on: the count stays
                return
        slots.in_flight -= 1

    def in_flight(self) -> list[tuple[str, int]]:
        """(key, requests holding a slot) for every key seen (a gauge's callback)."""
        return [(key, slots.in_flight) for key, slots in self._by_key.items()]

    def queued(self, key: str) -> int:
        slots = self._by_key.get(key)
        return len(slots.waiters) if slots is not None else 0

    def _add(self, key: str) -> Slots:
        if len(self._by_key) >= MAX_KEYS:
            self._by_key = {k: s for k, s in self._by_key.items() if s.in_flight or s.waiters}
        slots = self._by_key[key] = Slots(key)
        return slots


class Unbounded:
    """A bound turned off: the same calls, nothing counted."""

    limit = 0
    max_queued = 0
    queue_wait = 0.0

    def enter(self, key: str) -> Slots:
        return _OPEN

    async def wait(self, key: str, *, deadline: float | None = None) -> Slots:
        return _OPEN

    def leave(self, slots: Slots) -> None:
        pass

    def in_flight(self) -> list[tuple[str, int]]:
        return []

    def queued(self, key: str) -> int:
        return 0


_OPEN = Slots("")


def _expire(slots: Slots, waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        _discard(slots.waiters, waiter)
        waiter.set_result(False)


def _discard(waiters: deque[asyncio.Future[bool]], waiter: asyncio.Future[bool]) -> None:
    with contextlib.suppress(ValueError):  # already taken off by `leave`
        waiters.remove(waiter)  # (at most max_queued long)


def bound(limit: int, *, max_queued: int, queue_wait: float) -> Bound | Unbounded:
    return Bound(limit=limit, max_queued=max_queued, queue_wait=queue_wait) if limit > 0 else Unbounded()


class Backpressure:
    """The sidecar's two bounds and their refusals; built once per sidecar (`proxy.server.build_app`).

    Callers take the fast path themselves (`bounds.route.enter(name) or await bounds.wait_route(name)`),
    so a request under the bound makes no coroutine here."""

    def __init__(self, settings: BackpressureSettings, *, metrics: NoMetrics | None = None) -> None:
        queued, wait = settings.max_queued, settings.queue_wait_seconds
        self.route = bound(settings.max_in_flight_per_route, max_queued=queued, queue_wait=wait)
        self.backend = bound(settings.max_in_flight_per_backend, max_queued=queued, queue_wait=wait)
        self._metrics = metrics or NoMetrics()
        self._retry_after = max(1, math.ceil(settings.queue_wait_seconds))

    async def wait_route(self, route: str) -> Slots:
        """A slot on `route`, or ApiError 503 (`overloaded`): a full route has no other way out."""
        try:
            return await self.route.wait(route)
        except Full as full:
            self._metrics.backpressure_refusal(route=route, scope=ROUTE)
            raise self._refusal(f"route {route!r} {_why(full)}") from None

    async def wait_backend(self, key: str, *, deadline: float) -> Slots:
        """A slot on backend `key`, or AttemptFailed (`overloaded`): the attempt stage moves on to
        the next backend, as after any failure that is not the request's fault."""
        try:
            return await self.backend.wait(key, deadline=deadline)
        except Full as full:
            raise AttemptFailed(up.Failure(OVERLOADED, key, f"backend {key} {_why(full)}")) from None

    def backends_full(self, *, route: str, model: str, failures: Sequence[up.Failure]) -> ApiError | None:
        """The refusal when every backend tried was full (None when something else failed too)."""
        if not failures or any(f.kind != OVERLOADED for f in failures):
            return None
        self._metrics.backpressure_refusal(route=route, scope=BACKEND)
        reasons = "; ".join(f.message for f in failures)
        return self._refusal(f"every backend for model {model!r} (route {route!r}) is overloaded: {reasons}")

    def _refusal(self, message: str) -> ApiError:
        return ApiError(
            503,
            f"{message}; retry in {self._retry_after}s",
            "server_error",
            OVERLOADED,
            headers={"retry-after": str(self._retry_after)},
        )


def _why(full: Full) -> str:
    busy = f"is at its bound of {full.limit} requests in flight"
    if full.waited is None:
        return f"{busy}, with {full.queued} more waiting (the most that may)"
    return f"{busy}; this request waited {full.waited:.1f}s in the queue without getting a slot"
