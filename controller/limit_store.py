"""The shared limit store (Redis): the controller's flags for it, and a client to read spend back.

The controller puts the store in every snapshot it sends (`Snapshot.limit_store`), so the sidecars of
every namespace count on the same Redis without a Secret of their own, and it reads the budget counters
back into the policies' status (`controller.spend_reader`).

The URL may carry a password: it is held as a Secret from the moment the flags are parsed, never
echoed in an error, a log line, an Event, a status, a metric or a dump (`Snapshot.masked()` hides it).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from proxy.snapshot import LimitStore, Secret
from shared.redis_client import redis_py_client

DEFAULT_TIMEOUT = 0.1
MAX_TIMEOUT = 5.0  # as the snapshot allows
SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    group = parser.add_argument_group("shared limit counters (Redis)")
    group.add_argument(
        "--limits-redis-url",
        default=env("MODELWAY_LIMITS_REDIS_URL") or None,
        metavar="URL",
        help="the Redis every sidecar counts limits and budgets on, sent to them in each snapshot: redis://, "
        "rediss://, unix://, or redis+sentinel://host:26379[,host:26379]/service[/db]. May carry a password: "
        "prefer $MODELWAY_LIMITS_REDIS_URL (a command line is visible to every user of the machine)",
    )
    group.add_argument(
        "--limits-redis-cluster",
        action="store_true",
        default=(env("MODELWAY_LIMITS_REDIS_CLUSTER") or "").strip().lower() == "true",
        help="speak Redis Cluster to the URL's node (default: $MODELWAY_LIMITS_REDIS_CLUSTER=true)",
    )
    group.add_argument(
        "--limits-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="how long a sidecar waits for the store before a limit follows its failureMode (default: %(default)s)",
    )


def settings_from(parser: argparse.ArgumentParser, args: argparse.Namespace) -> LimitStore | None:
    """The store the flags name, or None; `parser.error` (never quoting the URL) when they do not make sense.

    The raw URL is taken off `args`, so that printing the namespace cannot show it."""
    url: str | None = args.limits_redis_url
    args.limits_redis_url = None
    timeout: float = args.limits_timeout
    if not 0 < timeout <= MAX_TIMEOUT:
        parser.error(f"--limits-timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds")
    if url is None or not url.strip():
        if args.limits_redis_cluster:
            parser.error("--limits-redis-cluster needs --limits-redis-url (or $MODELWAY_LIMITS_REDIS_URL)")
        return None
    url = url.strip()
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        parser.error(
            f"--limits-redis-url: the URL must start with one of {', '.join(s + '://' for s in SCHEMES)} "
            "(the URL itself is not shown: it may carry a password)"
        )
    if args.limits_redis_cluster and scheme not in ("redis", "rediss"):
        parser.error("--limits-redis-cluster speaks to a redis:// or rediss:// node")
    return LimitStore(url=Secret(url), cluster=args.limits_redis_cluster, timeout_seconds=timeout)


def connect(store: LimitStore, *, timeout: float) -> Any:
    """A Redis client for the same URL forms the sidecar accepts, with `timeout` on every call.

    The controller reads a scan's worth of keys where a sidecar checks one request, so it takes its own,
    longer timeout rather than the sidecars' `timeout_seconds`; a failed call is not retried (the next
    read, 15 s on, is the retry)."""
    return redis_py_client(store.url.get_secret_value(), timeout=timeout, cluster=store.cluster, decode_responses=True)
