"""The counting rules, pure: what the in-process limiter runs and the Redis script mirrors line by line.

Rates (requests, tokens per minute) are token buckets of the whole minute's worth (capacity = the
limit), refilled evenly (limit/60 a second). A bucket's state is how much of it is in use and when
that was so; what a request takes is charged at once, before the call. A request bigger than the
whole bucket could never pass by the usual rule, so it passes only when the bucket is full (nothing
in use), and the bucket then stays in debt until the refill has paid it back.

Concurrency is a set of leases, each with an expiry (the request's total timeout plus a margin), so
the leases of a sidecar that crashed free themselves.

Budgets are whole micro-USD spent per UTC day or calendar month; the window is part of the counter's
name, so a new day starts at zero. The same rule as buckets holds for a request bigger than the
whole budget: it passes only when nothing of the window is spent (a budget of 0 admits nothing).

Settlement charges (actual - reserved) when the answer's usage is known: a refund returns capacity
at once, an underestimate puts the counter further in use (or in debt). A reservation never settled
(a crash) stays charged: the error is conservative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from proxy.limits.model import BUDGETS, CounterState, Decision, Measure, Reservation
from proxy.snapshot import RerouteBackend
from shared.budget_windows import budget_window  # the controller reads spend by the same names

MINUTE_MS = 60_000
# Float slack for a bucket's level: levels are computed from elapsed milliseconds, and the Redis
# script stores them with 14 significant digits.
EPSILON = 1e-6
CONCURRENCY_RETRY_MS = 1_000  # a lease's end is unknown: a second is a fair hint
BUDGET_KEEP_MS = 86_400_000  # a spent window is kept a day past its end (status reads it)


def ceil_ms(ms: float) -> int:
    """Milliseconds rounded up, as the script reports them (float noise below EPSILON aside)."""
    return math.ceil(ms - EPSILON)


def bucket_level(used: float, at_ms: float, now_ms: float, limit: int) -> float:
    """What is in use of a bucket now: `used` at `at_ms`, minus the refill since (never below 0)."""
    elapsed = max(now_ms - at_ms, 0.0)
    return max(used - elapsed * limit / MINUTE_MS, 0.0)


def bucket_check(level: float, cost: int, limit: int) -> tuple[bool, float]:
    """Whether `cost` fits, and if not, in how many ms it would."""
    if cost > limit:  # bigger than the whole bucket: only into a full one
        return level <= EPSILON, level * MINUTE_MS / limit
    if level + cost <= limit + EPSILON:
        return True, 0.0
    return False, (level + cost - limit) * MINUTE_MS / limit


def bucket_after(level: float, limit: int) -> tuple[int, float]:
    """Remaining (whole units) and ms until full, for a bucket with `level` in use."""
    return max(math.floor(limit - level + EPSILON), 0), level * MINUTE_MS / limit


def budget_check(spent: int, cost: int, limit: int) -> bool:
    return spent + cost <= limit or (0 < limit < cost and spent <= 0)  # a budget of 0 admits nothing


def windows_for(measures: Sequence[Measure], now_s: float) -> tuple[tuple[str, ...], tuple[float, ...]]:
    names: list[str] = []
    ends: list[float] = []
    for measure in measures:
        name, end = budget_window(measure, now_s) if measure in BUDGETS else ("", 0.0)
        names.append(name)
        ends.append(end)
    return tuple(names), tuple(ends)


def decide(
    states: Sequence[CounterState], reservation: Reservation | None, *, store_unreachable: bool = False
) -> Decision:
    """All pass, or the request is refused naming the counter that holds it back longest; refused
    only by budgets whose limits reroute, it goes to their cheaper backends instead."""
    refused = [s for s in states if not s.ok]
    if not refused:
        return Decision(True, tuple(states), reservation, store_unreachable=store_unreachable)
    worst = max(refused, key=lambda s: s.retry_after_seconds)
    reroute: tuple[RerouteBackend, ...] = ()
    if all(s.counter.measure in BUDGETS and s.counter.reroute_to and not s.unreachable for s in refused):
        seen: dict[RerouteBackend, None] = {}
        for s in refused:
            seen.update(dict.fromkeys(s.counter.reroute_to))
        reroute = tuple(seen)
    return Decision(False, tuple(states), None, worst, reroute, store_unreachable)
