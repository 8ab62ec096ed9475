"""What a limit check costs the request path, against baselines measured in the same run.

Rows, each the median and 99th percentile of N sequential calls (one connection, loopback):

- `lookup, no limits`: the binding table of a snapshot without limits (what every request pays
  when nothing is configured): one dict miss;
- `lookup, one limit`: the same table with one limit;
- `in-process reserve+settle`: the lone-sidecar limiter, one tokens-per-minute limit;
- `redis PING`: one bare round trip to a local redis-server (the floor for anything shared);
- `redis reserve`, `redis settle`: the two Lua scripts, one limit (tokens per minute) and with
  three limits (tokens, concurrency, a daily budget) in one atomic call;
- each Redis row again through redis-py (what Sentinel and Cluster URLs use), against the sidecar's
  lean client (`proxy.limits.resp`), with the CPU per call of this process.

The target for the sidecar is at most 0.1 ms added at p50 with one limit (the issue's), which
Redis's round trip alone decides: compare `redis reserve` with `redis PING`.

    python -m bench.limits [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable

from bench.sidecar_setup import cpu_model
from proxy.limits.binding import LimitTable
from proxy.limits.memory import InProcessLimiter
from proxy.limits.model import Counter, Demand, Usage
from proxy.limits.redis_store import RedisLimiter, _RedisPy, connect
from proxy.snapshot import parse_snapshot
from shared.redis_client import redis_py_client
from tests.harness.tools import find_tool


def _snapshot(limits: list[dict[str, object]]) -> LimitTable:
    return LimitTable.build(
        parse_snapshot(
            {
                "providers": [{"name": "a.openai", "type": "openai", "baseUrl": "https://api.openai.com/v1"}],
                "routes": [
                    {
                        "name": "a/chat",
                        "model": "chat",
                        "rules": [{"backends": [{"provider": "a.openai", "model": "gpt-4o"}]}],
                    }
                ],
                "policy": {"limits": limits},
            }
        )
    )


def _counter(measure: str, limit: int, n: int) -> Counter:
    return Counter(f"bench/{n}/{measure}", measure, limit, "ModelPolicy a/p", "bench", "open")  # type: ignore[arg-type]


def _row(name: str, samples: list[float]) -> str:
    samples.sort()
    p50 = statistics.median(samples) * 1e6
    p99 = samples[int(len(samples) * 0.99) - 1] * 1e6
    return f"{name:<38} {p50:>9.1f} {p99:>9.1f}"


async def _time(calls: int, step: Callable[[], Awaitable[object]]) -> list[float]:
    for _ in range(min(calls // 10, 200)):
        await step()
    out = []
    for _ in range(calls):
        began = time.perf_counter()
        await step()
        out.append(time.perf_counter() - began)
    return out


def _sync_time(calls: int, step: Callable[[], object]) -> list[float]:
    out = []
    for _ in range(calls):
        began = time.perf_counter()
        step()
        out.append(time.perf_counter() - began)
    return out


async def main(calls: int) -> None:
    print(f"# limits bench: {calls} calls a row, 1 connection; {cpu_model()}; load {os.getloadavg()[0]:.2f}")
    print(f"{'':<38} {'p50 us':>9} {'p99 us':>9}")
    empty = _snapshot([])
    one = _snapshot([{"policy": "ModelPolicy a/p", "name": "t", "key": "k", "tokensPerMinute": 10**12}])
    print(_row("lookup, no limits", _sync_time(calls, lambda: empty.counters("a/chat", "a.openai", "gpt-4o"))))
    print(_row("lookup, one limit", _sync_time(calls, lambda: one.counters("a/chat", "a.openai", "gpt-4o"))))
    demand, usage = Demand(500, 500), Usage(400, 300)
    memory = InProcessLimiter()
    tokens = [_counter("tokens", 10**12, 0)]

    async def in_process() -> None:
        decision = await memory.reserve(tokens, demand, lease_seconds=60)
        assert decision.reservation is not None
        await memory.settle(decision.reservation, usage)

    print(_row("in-process reserve+settle, one limit", await _time(calls, in_process)))

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    server = subprocess.Popen(
        [find_tool("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        # The sidecar's lean client, and redis-py (what Sentinel and Cluster URLs use) for comparison.
        for kind, client in (
            ("", connect(url, timeout=1.0)),
            (" (redis-py)", _RedisPy(redis_py_client(url, timeout=1.0))),
        ):
            for _ in range(100):
                try:
                    await client.ping()
                    break
                except Exception:
                    await asyncio.sleep(0.05)
            limiter = RedisLimiter(client, timeout=1.0)
            cpu = time.process_time()
            print(_row(f"redis PING{kind}", await _time(calls, client.ping)))
            print(f"{'':<38} CPU {(time.process_time() - cpu) / calls * 1e6:.0f} us a call (this process)")
            three = [*tokens, _counter("concurrency", 10**6, 1), _counter("usd_day", 10**15, 2)]
            for name, counters in (("one limit", tokens), ("three limits", three)):
                reservations = []

                async def reserve(
                    counters: list[Counter] = counters,
                    reservations: list[object] = reservations,
                    limiter: RedisLimiter = limiter,
                ) -> None:
                    reservations.append((await limiter.reserve(counters, demand, lease_seconds=60)).reservation)

                cpu = time.process_time()
                print(_row(f"redis reserve, {name}{kind}", await _time(calls, reserve)))
                print(f"{'':<38} CPU {(time.process_time() - cpu) / calls * 1e6:.0f} us a call (this process)")
                pending = iter(reservations)

                async def settle(pending: object = pending, limiter: RedisLimiter = limiter) -> None:
                    await limiter.settle(next(pending), usage)  # type: ignore[call-overload, arg-type]

                settles = min(calls, len(reservations) - calls // 10 - 1)
                print(_row(f"redis settle, {name}{kind}", await _time(settles, settle)))
            await limiter.close()
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000)
    asyncio.run(main(parser.parse_args().calls))
