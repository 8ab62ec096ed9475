"""What one guardrail costs a request: the same real sidecar, two routes to the same fake provider,
one asking an allowing guardrail (`kind: modelway`, both phases) on loopback and one asking none,
measured in the same run, interleaved round by round.

A client on one keep-alive connection sends `--requests` chat requests per route and round (plain
and streamed), and the figures are the median and p90 wall time per request of each route, and
the difference: what the two guardrail calls (request phase, then response phase; for a stream,
the windows of its answer) add. Loopback, one connection, so the figure is the sidecar's and the
guardrail service's work, not a network's. The guardrail service is an aiohttp server in this
process (tests/integration/guardrail_service.py): its own time counts, as a real one's would.

    python -m bench.guardrails [--requests 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import time
from typing import Any

from tests.fakes.process import FakeProviderProcess
from tests.fakes.server import DEFAULT_KEYS
from tests.integration.guardrail_service import GuardrailService
from tests.integration.sidecar import SidecarProcess

ROUTES = ("plain", "guarded")
PROMPT = "Summarise the release notes in three short sentences for the support team."


def snapshot(provider_url: str, guardrail_url: str) -> dict[str, Any]:
    backend = {"provider": "bench.openai", "model": "m"}
    return {
        "providers": [
            {
                "name": "bench.openai",
                "type": "openai",
                "baseUrl": provider_url + "/v1",
                "apiKey": DEFAULT_KEYS["openai"],
            }
        ],
        "routes": [
            {"name": f"bench/{route}", "model": route, "rules": [{"name": "r", "backends": [backend]}]}
            for route in ROUTES
        ],
        "policy": {
            "workload": "bench/app",
            "guardrails": [
                {"name": "allow", "url": guardrail_url + "/allow", "routes": ["guarded"], "timeoutMs": 2000}
            ],
        },
    }


def timed(connection: http.client.HTTPConnection, route: str, *, stream: bool, n: int) -> list[float]:
    body = json.dumps({"model": route, "stream": stream, "messages": [{"role": "user", "content": PROMPT}]})
    headers = {"content-type": "application/json", "authorization": "Bearer placeholder"}
    seconds = []
    for _ in range(n):
        started = time.perf_counter()
        connection.request("POST", "/v1/chat/completions", body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        seconds.append(time.perf_counter() - started)
        if response.status != 200 or (stream and b"[DONE]" not in data):
            raise SystemExit(f"{route}: HTTP {response.status}: {data[:300]!r}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with (
        FakeProviderProcess("openai") as fake,
        GuardrailService() as service,
        SidecarProcess(snapshot(fake.base_url, service.url)) as sidecar,
    ):
        connection = http.client.HTTPConnection("127.0.0.1", sidecar.port, timeout=30)
        for stream in (False, True):  # warm up: pools, first snapshot lookups
            for route in ROUTES:
                timed(connection, route, stream=stream, n=20)
        results: dict[tuple[str, bool], list[float]] = {(r, s): [] for r in ROUTES for s in (False, True)}
        for round_number in range(args.rounds):
            order = ROUTES if round_number % 2 == 0 else ROUTES[::-1]  # neither always goes first
            for stream in (False, True):
                for route in order:
                    results[(route, stream)] += timed(connection, route, stream=stream, n=args.requests)
        connection.close()
    asked = len(service.received)
    print(f"guardrail cost per request (loopback, 1 connection, {args.rounds}x{args.requests} per route)")
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; guardrail asked {asked}x")
    for stream in (False, True):
        kind = "stream" if stream else "plain"
        medians = {}
        for route in ROUTES:
            seconds = sorted(results[(route, stream)])
            medians[route] = statistics.median(seconds)
            p90 = seconds[int(len(seconds) * 0.9)]
            print(f"  {kind:6} {route:8} median {medians[route] * 1e6:8.0f} us   p90 {p90 * 1e6:8.0f} us")
        added = (medians["guarded"] - medians["plain"]) * 1e6
        print(f"  {kind:6} one allow guardrail adds {added:.0f} us per request (median against median)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
