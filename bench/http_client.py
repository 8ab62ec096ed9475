"""The provider client alone: proxy.http_client.HttpClient against aiohttp's ClientSession.

Both clients, in one process pinned to one core, make the same calls to the
fixed-cost fake upstream (bench/upstream.py, on another core): 16 concurrent
callers, plain and streamed chat completions, each body read to its end. The
figure is the client process's CPU time per call (the minimum over rounds, the
least disturbed), with the ClientSession set up as the sidecar used to set it up
(pooled, no connection limit). This is what `proxy/http_client.py`'s docstring
quotes.

    python -m bench.http_client [--calls 4000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from bench.harness import ROOT, free_port, start, wait_listening
from bench.sidecar_setup import UPSTREAM_MODEL, choose_cores
from proxy.http_client import HttpClient

HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
CONCURRENCY = 16


def _body(stream: bool) -> bytes:
    return b'{"model":"%s","messages":[{"role":"user","content":"hi"}],"stream":%s}' % (
        UPSTREAM_MODEL.encode(),
        b"true" if stream else b"false",
    )


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _per_call_us(call: Callable[[], Awaitable[Any]], *, calls: int, rounds: int) -> float:
    async def caller(n: int) -> None:
        for _ in range(n):
            await call()

    await asyncio.gather(*[caller(20) for _ in range(CONCURRENCY)])  # warm the pools
    best = float("inf")
    for _ in range(rounds):
        before = _cpu_seconds()
        await asyncio.gather(*[caller(calls // CONCURRENCY) for _ in range(CONCURRENCY)])
        best = min(best, (_cpu_seconds() - before) / (calls // CONCURRENCY * CONCURRENCY) * 1e6)
    return best


async def measure(url: str, *, calls: int, rounds: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=True)
    lean = HttpClient()
    timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=10)
    try:
        for kind in ("plain", "stream"):
            body = _body(kind == "stream")

            async def with_aiohttp(body: bytes = body) -> None:
                async with session.post(url, data=body, headers=HEADERS, timeout=timeout) as resp:
                    async for _ in resp.content.iter_any():
                        pass

            async def with_lean(body: bytes = body) -> None:
                async with await lean.post(url, body=body, headers=HEADERS, connect_timeout=10) as resp:
                    async for _ in resp.iter_any():
                        pass

            results[kind] = {
                "aiohttp": await _per_call_us(with_aiohttp, calls=calls, rounds=rounds),
                "lean": await _per_call_us(with_lean, calls=calls, rounds=rounds),
            }
    finally:
        await session.close()
        await lean.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.http_client", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000, help="calls per round (default 4000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per client and kind (default 5)")
    args = parser.parse_args(argv)
    client_core, load_core, _ = choose_cores()
    port = free_port()
    upstream = start(
        "upstream",
        [sys.executable, "-m", "bench.upstream", "--port", str(port)],
        core=load_core,
        logs=ROOT / "bench" / "results" / "logs" / "http_client",
    )
    try:
        wait_listening(upstream, port)
        if client_core is not None:
            os.sched_setaffinity(0, {client_core})
        try:
            import uvloop

            run = uvloop.run
        except ImportError:
            run = asyncio.run
        results = run(measure(f"http://127.0.0.1:{port}/v1/chat/completions", calls=args.calls, rounds=args.rounds))
    finally:
        upstream.stop()
    where = (
        f"client on core {client_core}, fake upstream on core {load_core}"
        if client_core is not None
        else "cores not pinned: indicative only"
    )
    print(
        f"provider client CPU per call, {CONCURRENCY} concurrent callers, min of {args.rounds} rounds of "
        f"{args.calls} calls; {where}"
    )
    for kind, figures in results.items():
        print(
            f"  {kind:6}  aiohttp ClientSession {figures['aiohttp']:6.1f} us   HttpClient {figures['lean']:6.1f} us"
            f"   ratio {figures['lean'] / figures['aiohttp']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
