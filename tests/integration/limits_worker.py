"""One sidecar's worth of limiter traffic: `--tasks` concurrent loops that reserve, "call", and settle.

Run as a real OS process by tests/integration/test_limits_bound.py, several at once against one
Redis. Prints one JSON line: what it was admitted (reserved and actually used), refused, and the
longest a check took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time

from proxy.limits.model import Counter, Demand, Usage
from proxy.limits.redis_store import RedisLimiter, connect


async def run(args: argparse.Namespace) -> dict[str, float]:
    counter = Counter(
        key=args.key, measure=args.measure, limit=args.limit, owner="ModelPolicy team-a/caps", name="shared",
        failure_mode="closed",
    )  # fmt: skip
    frozen = args.now_ms / 1000 if args.now_ms else None
    limiter = RedisLimiter(
        connect(args.url, timeout=2.0), timeout=2.0, clock=(lambda: frozen) if frozen is not None else None
    )
    totals = {"admitted": 0, "refused": 0, "unanswered": 0, "reserved": 0, "used": 0, "used_usd": 0, "slowest": 0.0}
    rng = random.Random(args.seed)
    deadline = time.time() + args.duration

    async def loop() -> None:
        while time.time() < deadline:
            demand = Demand(args.input, args.output, args.price, args.price)
            began = time.monotonic()
            decision = await limiter.reserve([counter], demand, lease_seconds=30)
            totals["slowest"] = max(totals["slowest"], time.monotonic() - began)
            if decision.reservation is None:
                totals["refused"] += 1
                # a check that timed out here may still have been charged there: conservative, not exact
                totals["unanswered"] += decision.store_unreachable
                await asyncio.sleep(rng.uniform(0.001, 0.005))
                continue
            await asyncio.sleep(rng.uniform(0.0, 0.003))  # the provider call
            output = args.output if args.settle == "exact" else rng.randint(0, args.output)
            await limiter.settle(decision.reservation, Usage(args.input, output))
            totals["admitted"] += 1
            totals["reserved"] += demand.tokens
            totals["used"] += args.input + output
            totals["used_usd"] += demand.micro_usd(args.input, output)

    totals["began"] = time.time()
    await asyncio.gather(*(loop() for _ in range(args.tasks)))
    totals["ended"] = time.time()
    totals["unanswered"] += limiter.failed_settlements
    await limiter.close()
    return totals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--measure", default="tokens")
    parser.add_argument("--limit", type=int, required=True)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--input", type=int, default=60)
    parser.add_argument("--output", type=int, default=40)
    parser.add_argument("--price", type=float, default=0.0)  # micro-USD a token, input and output
    parser.add_argument("--settle", choices=("plain", "exact"), default="plain")
    parser.add_argument("--now-ms", type=float, default=0.0)  # a frozen clock; 0: Redis's own
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("ready", flush=True)  # imported: the test starts every process together
    sys.stdin.readline()
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
