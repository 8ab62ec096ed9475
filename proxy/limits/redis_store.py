"""The limiter shared by every sidecar: counters in Redis, one atomic script per check.

Every key carries the same hash tag (`{modelway}` by default), so a script's keys always share one
Redis Cluster slot and a check over several limits stays one atomic step. The price: on a Cluster
all of Modelway's counters live on one primary. One primary runs well over 50,000 of these scripts
a second, more than the request rate of any fleet of LLM calls; spreading the counters over slots
would split the all-or-nothing check into several steps.

Every call is bounded by `timeout` (100 ms by default): on an error or a timeout each limit follows
its failure mode (open: allow, uncounted; closed: refuse), the decision says the store was
unreachable, and a warning is logged at most every `LOG_EVERY` seconds. A failed settlement leaves
the reservation charged (it expires with its window or bucket): conservative.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from proxy.limits import algorithm as alg
from proxy.limits.model import BUDGETS, Counter, CounterState, Decision, Demand, Measure, Reservation, Usage, charged
from proxy.limits.redis_script import RESERVE, SETTLE, sha1
from proxy.limits.resp import NoScript, ReplyError, RespClient
from shared.redis_client import redis_py_client

log = logging.getLogger("modelway.limits")
LOG_EVERY = 10.0
# ConnectionError (and the lean client's ProtocolError) is an OSError.
_FAILURES = (OSError, TimeoutError, ReplyError)
_RESERVE_SHA, _SETTLE_SHA = sha1(RESERVE), sha1(SETTLE)


def _kind(measure: Measure) -> str:
    return "c" if measure == "concurrency" else "b" if measure in BUDGETS else "r"


def connect(url: str, *, timeout: float, cluster: bool = False) -> Any:
    """A client for redis://, rediss://, unix:// (the lean `proxy.limits.resp`), or through redis-py for
    Sentinel: redis+sentinel://[:password@]host:port[,host:port...]/service[/db] (rediss+sentinel:// for
    TLS), and with `cluster` for Redis Cluster from a redis:// or rediss:// seed."""
    scheme = url.partition("://")[0]
    if not cluster and scheme in ("redis", "rediss", "unix"):
        return RespClient.from_url(url, timeout=timeout)
    return _RedisPy(redis_py_client(url, timeout=timeout, cluster=cluster))


class _RedisPy:
    """A redis-py client (Sentinel, Cluster) behind the lean client's methods and errors."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def evalsha(self, sha: str, numkeys: int, *args: str | int | float) -> Any:
        return await self._call(self._client.evalsha, sha, numkeys, *args)

    async def eval(self, script: str, numkeys: int, *args: str | int | float) -> Any:
        return await self._call(self._client.eval, script, numkeys, *args)

    async def ping(self) -> Any:
        return await self._call(self._client.ping)

    async def aclose(self) -> None:
        await self._client.aclose()

    @staticmethod
    async def _call(method: Any, *args: Any) -> Any:
        from redis.exceptions import NoScriptError, RedisError, ResponseError

        try:
            return await method(*args)
        except NoScriptError as exc:
            raise NoScript(str(exc)) from None
        except ResponseError as exc:
            raise ReplyError(str(exc)) from None
        except RedisError as exc:
            raise ConnectionError(f"Redis: {type(exc).__name__}") from None


class RedisLimiter:
    def __init__(
        self, client: Any, *, timeout: float = 0.1, prefix: str = "modelway", clock: Callable[[], float] | None = None
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._tag = "{" + prefix + "}"
        # None: Redis's clock for rates and leases (one clock for every sidecar), this host's for budget windows.
        self._clock = clock
        self._logged_at = -LOG_EVERY
        self.failed_settlements = 0  # settlements lost to an error or timeout (their reservations stay charged)

    def key(self, counter: Counter, window: str = "") -> str:
        return f"{self._tag}:{counter.key}" + (f"/{window}" if window else "")

    async def reserve(self, counters: Sequence[Counter], demand: Demand, *, lease_seconds: float) -> Decision:
        if not counters:
            return alg.decide((), None)
        now_s = self._clock() if self._clock is not None else time.time()
        windows, ends = alg.windows_for([c.measure for c in counters], now_s)
        lease = uuid.uuid4().hex
        args: list[str | int | float] = [self._now_arg(now_s), lease, round(lease_seconds * 1000)]
        for counter, end in zip(counters, ends, strict=True):
            args += [_kind(counter.measure), counter.limit, demand.cost(counter.measure), round(end * 1000)]
        keys = [self.key(c, w) for c, w in zip(counters, windows, strict=True)]
        try:
            reply = await self._run(RESERVE, _RESERVE_SHA, keys, args)
        except _FAILURES as exc:
            self._warn("check", exc)
            return self._unreachable(counters)
        states = [
            CounterState(
                c, bool(reply[1 + 4 * i]), int(reply[2 + 4 * i]), reply[3 + 4 * i] / 1000, reply[4 + 4 * i] / 1000
            )
            for i, c in enumerate(counters)
        ]
        reservation = Reservation(lease, tuple(counters), windows, demand) if reply[0] == 1 else None
        return alg.decide(states, reservation)

    async def settle(self, reservation: Reservation, usage: Usage) -> None:
        demand = reservation.demand
        now_s = self._clock() if self._clock is not None else None
        args: list[str | int | float] = [self._now_arg(now_s), reservation.lease]
        for counter in reservation.counters:
            delta = charged(counter.measure, demand, usage) - demand.cost(counter.measure)
            args += [_kind(counter.measure), counter.limit, delta]
        keys = [self.key(c, w) for c, w in zip(reservation.counters, reservation.windows, strict=True)]
        try:
            await self._run(SETTLE, _SETTLE_SHA, keys, args)
        except _FAILURES as exc:
            self.failed_settlements += 1
            self._warn("settlement", exc)

    async def close(self) -> None:
        await self._client.aclose()

    def _now_arg(self, now_s: float | None) -> str:
        return "" if self._clock is None or now_s is None else repr(now_s * 1000)

    async def _run(self, script: str, sha: str, keys: list[str], args: list[str | int | float]) -> Any:
        async with asyncio.timeout(self._timeout):
            try:
                return await self._client.evalsha(sha, len(keys), *keys, *args)
            except NoScript:  # a restarted or flushed Redis: EVAL loads it again
                return await self._client.eval(script, len(keys), *keys, *args)

    def _unreachable(self, counters: Sequence[Counter]) -> Decision:
        states = [
            CounterState(
                c, c.failure_mode == "open", 0, 0.0, 0.0 if c.failure_mode == "open" else 1.0, unreachable=True
            )
            for c in counters
        ]
        return alg.decide(states, None, store_unreachable=True)

    def _warn(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            log.warning(
                "limits: the counter store did not answer a %s (%s); limits follow their failureMode",
                what,
                type(exc).__name__,
            )
