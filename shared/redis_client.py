"""A redis-py asyncio client for the limit store's URL forms: the one place that reads them.

The sidecar counts through it for Sentinel and Cluster (`proxy.limits.redis_store`; plain redis://,
rediss:// and unix:// go through its lean client), and the controller reads spend back through it
(`controller.limit_store`). URLs: redis://, rediss://, unix://, redis+sentinel://[:password@]host:port
[,host:port...]/service[/db] (rediss+sentinel:// for TLS), and with `cluster` a redis:// or rediss://
Cluster seed. Every call is bounded by `timeout` and never retried: the caller decides what a failure
means. redis-py is imported on the first call, so a process that never uses it does not load it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def redis_py_client(url: str, *, timeout: float, cluster: bool = False, decode_responses: bool = False) -> Any:
    """A redis.asyncio client (Redis, Sentinel master or RedisCluster) for `url`."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "decode_responses": decode_responses,
    }
    scheme = url.partition("://")[0].lower()
    if scheme in SENTINEL_SCHEMES:
        from redis.asyncio.sentinel import Sentinel

        parts = urlsplit(url)
        hosts = parts.netloc.rpartition("@")[2]
        sentinels = [(h.rpartition(":")[0] or h, int(h.rpartition(":")[2] or 26379)) for h in hosts.split(",")]
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError("a Sentinel URL names the service: redis+sentinel://host:26379/mymaster")
        password = unquote(parts.password) if parts.password else None
        sentinel = Sentinel(
            sentinels,
            sentinel_kwargs={"socket_timeout": timeout, "password": password},
            password=password,
            ssl=scheme == "rediss+sentinel",
            **options,
        )
        return sentinel.master_for(path[0], db=int(path[1]) if len(path) > 1 else 0)
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=decode_responses
        )
    return aioredis.from_url(url, **options)
