"""Where the counters live, and the limiter for it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import msgspec

if TYPE_CHECKING:
    from proxy.limits.model import Counter, Decision, Demand, Reservation, Usage

DEFAULT_TIMEOUT = 0.1


class LimitSettings(msgspec.Struct, frozen=True):
    # redis://, rediss://, unix://, or redis+sentinel://host:26379[,host:26379]/service[/db];
    # None: the in-process limiter (exact for one sidecar only).
    redis_url: str | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT
    cluster: bool = False  # speak Redis Cluster to the URL's node
    key_prefix: str = "modelway"  # the hash tag every key carries


class Limiter(Protocol):
    async def reserve(self, counters: Sequence[Counter], demand: Demand, *, lease_seconds: float) -> Decision: ...
    async def settle(self, reservation: Reservation, usage: Usage) -> None: ...
    async def close(self) -> None: ...


def build_limiter(settings: LimitSettings, *, clock: Callable[[], float] | None = None) -> Limiter:
    """The limiter the settings ask for; call it only once the snapshot has limits, so that a sidecar
    without them never imports the Redis client."""
    if settings.redis_url is None:
        from proxy.limits.memory import InProcessLimiter

        return InProcessLimiter() if clock is None else InProcessLimiter(clock=clock)
    from proxy.limits.redis_store import RedisLimiter, connect

    client = connect(settings.redis_url, timeout=settings.timeout_seconds, cluster=settings.cluster)
    return RedisLimiter(client, timeout=settings.timeout_seconds, prefix=settings.key_prefix, clock=clock)
