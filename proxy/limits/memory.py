"""The limiter in the process: for `modelway dev` and a lone sidecar without Redis.

The same rules as the Redis script (`algorithm`), on dicts. One event loop, no awaits inside a
check, so a check-and-reserve is atomic as the script is."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence

from proxy.limits import algorithm as alg
from proxy.limits.model import BUDGETS, Counter, CounterState, Decision, Demand, Reservation, Usage, charged
from shared.budget_windows import budget_window

SWEEP_EVERY = 1024  # checks between sweeps of expired state


class InProcessLimiter:
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock  # seconds since the epoch (budgets follow the UTC calendar)
        self._buckets: dict[str, tuple[float, float, float]] = {}  # key -> (in use, at ms, full again at ms)
        self._spent: dict[str, tuple[int, float]] = {}  # key/window -> (micro-USD, expiry ms)
        self._leases: dict[str, dict[str, float]] = {}  # key -> lease -> expiry ms
        self._checks = 0

    async def reserve(self, counters: Sequence[Counter], demand: Demand, *, lease_seconds: float) -> Decision:
        if not counters:
            return alg.decide((), None)
        now_s = self._clock()
        now = now_s * 1000
        self._checks += 1
        if self._checks % SWEEP_EVERY == 0:
            self._sweep(now)
        windows, ends = alg.windows_for([c.measure for c in counters], now_s)
        # Each counter as it stands if the request is charged, and if it is not (another refuses it).
        checks = [
            self._check(counter, demand.cost(counter.measure), window, end * 1000, now)
            for counter, window, end in zip(counters, windows, ends, strict=True)
        ]
        lease = uuid.uuid4().hex
        if not all(charged.ok for charged, _ in checks):
            return alg.decide([uncharged for _, uncharged in checks], None)
        states = [charged for charged, _ in checks]
        for counter, window, end in zip(counters, windows, ends, strict=True):
            self._charge(counter, demand.cost(counter.measure), window, end * 1000, now, lease, lease_seconds)
        return alg.decide(states, Reservation(lease, tuple(counters), windows, demand))

    async def settle(self, reservation: Reservation, usage: Usage) -> None:
        self.settle_now(reservation, usage)

    def settle_now(self, reservation: Reservation, usage: Usage) -> None:
        """`settle` without a coroutine: nothing here waits, so the admit stage calls it inline."""
        now = self._clock() * 1000
        demand = reservation.demand
        for counter, window in zip(reservation.counters, reservation.windows, strict=True):
            delta = charged(counter.measure, demand, usage) - demand.cost(counter.measure)
            if counter.measure == "concurrency":
                self._leases.get(counter.key, {}).pop(reservation.lease, None)
            elif counter.measure in BUDGETS:
                key = f"{counter.key}/{window}"
                if delta and key in self._spent:
                    spent, expiry = self._spent[key]
                    self._spent[key] = (max(spent + delta, 0), expiry)
            elif delta:
                used, at, _ = self._buckets.get(counter.key, (0.0, now, now))
                self._set_bucket(counter, max(alg.bucket_level(used, at, now, counter.limit) + delta, 0.0), now)

    async def close(self) -> None:
        return None

    def standing(self, counter: Counter) -> dict[str, float | int | str]:
        """Where `counter` stands now, for the admin port (read only)."""
        now_s = self._clock()
        now = now_s * 1000
        if counter.measure == "concurrency":
            leases = self._leases.get(counter.key, {})
            in_flight = sum(1 for expiry in leases.values() if expiry > now)
            return {"inFlight": in_flight, "remaining": max(counter.limit - in_flight, 0)}
        if counter.measure in BUDGETS:
            window, _ = budget_window(counter.measure, now_s)
            spent = self._spent.get(f"{counter.key}/{window}", (0, 0.0))[0]
            return {"window": window, "spentMicroUsd": spent, "remainingMicroUsd": max(counter.limit - spent, 0)}
        used, at, _ = self._buckets.get(counter.key, (0.0, now, now))
        level = alg.bucket_level(used, at, now, counter.limit)
        remaining, reset_ms = alg.bucket_after(level, counter.limit)
        return {"inUse": round(level, 3), "remaining": remaining, "resetSeconds": round(reset_ms / 1000, 3)}

    def _check(
        self, counter: Counter, cost: int, window: str, end: float, now: float
    ) -> tuple[CounterState, CounterState]:
        limit = counter.limit
        if counter.measure == "concurrency":
            leases = self._leases.get(counter.key, {})
            active = sum(1 for expiry in leases.values() if expiry > now)
            if active < limit:
                return (
                    CounterState(counter, True, limit - active - 1, 0.0),
                    CounterState(counter, True, limit - active, 0.0),
                )
            refused = CounterState(counter, False, 0, 0.0, alg.CONCURRENCY_RETRY_MS / 1000)
            return refused, refused
        if counter.measure in BUDGETS:
            spent = self._spent.get(f"{counter.key}/{window}", (0, 0.0))[0]
            reset = alg.ceil_ms(end - now) / 1000
            uncharged = CounterState(counter, True, max(limit - spent, 0), reset)
            if alg.budget_check(spent, cost, limit):
                return CounterState(counter, True, max(limit - spent - cost, 0), reset), uncharged
            refused = CounterState(counter, False, max(limit - spent, 0), reset, reset)
            return refused, refused
        used, at, _ = self._buckets.get(counter.key, (0.0, now, now))
        level = alg.bucket_level(used, at, now, limit)
        ok, retry_ms = alg.bucket_check(level, cost, limit)
        remaining, reset_ms = alg.bucket_after(level, limit)
        uncharged = CounterState(counter, ok, remaining, alg.ceil_ms(reset_ms) / 1000, alg.ceil_ms(retry_ms) / 1000)
        if not ok:
            return uncharged, uncharged
        remaining, reset_ms = alg.bucket_after(level + cost, limit)
        return CounterState(counter, True, remaining, alg.ceil_ms(reset_ms) / 1000), uncharged

    def _charge(
        self, counter: Counter, cost: int, window: str, end: float, now: float, lease: str, lease_seconds: float
    ) -> None:
        if counter.measure == "concurrency":
            self._leases.setdefault(counter.key, {})[lease] = now + lease_seconds * 1000
        elif counter.measure in BUDGETS:
            key = f"{counter.key}/{window}"
            spent = self._spent.get(key, (0, 0.0))[0]
            self._spent[key] = (spent + cost, end + alg.BUDGET_KEEP_MS)
        else:
            used, at, _ = self._buckets.get(counter.key, (0.0, now, now))
            self._set_bucket(counter, alg.bucket_level(used, at, now, counter.limit) + cost, now)

    def _set_bucket(self, counter: Counter, level: float, now: float) -> None:
        self._buckets[counter.key] = (level, now, now + level * alg.MINUTE_MS / counter.limit)

    def _sweep(self, now: float) -> None:
        """Forget what has expired: full buckets, ended windows, expired leases."""
        for key in [k for k, (_, _, full_at) in self._buckets.items() if full_at <= now]:
            del self._buckets[key]
        for key in [k for k, (_, expiry) in self._spent.items() if expiry <= now]:
            del self._spent[key]
        for key, leases in list(self._leases.items()):
            for lease in [lease for lease, expiry in leases.items() if expiry <= now]:
                del leases[lease]
            if not leases:
                del self._leases[key]
