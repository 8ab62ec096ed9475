"""What limits cost a request through the real sidecar, against the sidecar without limits, in one run.

Variants (each a `python -m proxy` on the proxy core, the fixed-cost fake upstream and a
redis-server on the load core, wrk at 1 connection):

- `no limits`: the snapshot sets no limit and no flag names a store (the baseline);
- `no limits, store named`: the same snapshot, with `--limits-redis-url` (a store, nothing to count:
  the target is no measurable cost, and the Redis client is not even imported);
- `one limit, in process`: one tokens-per-minute limit, counted in the sidecar's memory;
- `one limit, Redis`: the same limit counted in Redis on loopback (one check-and-reserve script before
  the call, one settlement after);
- with `--before REV`, also `before limits (REV)`: that revision of the sidecar (a tree from `git archive`),
  on the no-limits snapshot: the request path before limits were wired in.

The limit is far above the load, so nothing is refused. Each variant serves `plain@1` and `stream@1`
for `--rounds` rounds, the order rotating each round so drift in the machine's load falls on all alike;
the report gives the median p50 and p99 latency, the sidecar's CPU µs per request, each variant's
added p50 and CPU against `no limits`, and the noise (the spread of `no limits`' own p50 over rounds:
when it exceeds the target the latency verdict is UNCLEAR, and the CPU columns, or
bench.limits_instructions, say more). The floor for anything shared is measured alone in the same
run: a Redis PING, and the limiter's reserve and settle scripts through the sidecar's own Redis
client, from this process.
Target (the issue's): no measurable cost without limits; at most 0.1 ms added p50 at 1 connection
with one limit (in Redis, the check before the call is on the latency path; the settlement is not).

    python -m bench.limits_sidecar [--duration 5] [--rounds 3] [--quick] [--before REV]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench.ab import (
    Scenario,
    Variant,
    parser_for,
    run_main,
    run_rounds,
    start_sidecars,
    stopping,
    warm_up,
    without_otel,
    write_report,
    wrk_scripts,
)
from bench.harness import ROOT, BenchBroken, Proc, WrkResult, free_port, start, wait_listening
from tests.harness.tools import find_tool

LOGS = ROOT / "bench" / "results" / "logs" / "limits_sidecar"
SCENARIOS = (Scenario("plain@1", False, 1), Scenario("stream@1", True, 1))
TARGET_ADDED_P50_MS = 0.1
LIMIT = {"policy": "ModelPolicy bench/caps", "name": "tpm", "key": "ModelPolicy/bench/caps/tpm/policy",
         "tokensPerMinute": 10**12}  # fmt: skip
FLOOR_CALLS = 3000


@dataclass
class LimitsVariant(Variant):
    limits: bool = False  # the snapshot sets the one limit
    redis: bool = False  # --limits-redis-url


def _variant(name: str, tmpdir: Path, env: dict[str, str], *, limits: bool, redis_url: str | None,
             tree: Path = ROOT) -> LimitsVariant:  # fmt: skip
    """A sidecar from `tree` on the snapshot with or without the one limit, counted in Redis where a URL is given."""
    snapshot = tmpdir / f"snapshot-{'one-limit' if limits else 'none'}.json"
    flags = ["--access-log=off", *(["--limits-redis-url", redis_url] if redis_url else [])]
    process = "sidecar-" + "".join(c if c.isalnum() else "-" for c in name)
    return LimitsVariant(name, process, snapshot, flags=flags, env={**env, "PYTHONPATH": str(tree)}, cwd=tree,
                         limits=limits, redis=redis_url is not None)  # fmt: skip


def _snapshot(upstream_port: int, *, limits: bool) -> dict[str, Any]:
    from bench.sidecar_setup import snapshot_for

    snapshot = snapshot_for(upstream_port)
    if limits:
        snapshot["policy"] = {"limits": [LIMIT]}
    return snapshot


def _tree_of(rev: str, into: Path) -> Path:
    """The repository at `rev`, unpacked (no .git) into `into`."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


async def _floor(url: str) -> dict[str, tuple[list[float], float]]:
    """A Redis PING, and the limiter's reserve and settle for one limit, from this process (the sidecar's client on
    uvloop, as the sidecar): the latency of each call, and this process's CPU µs per call (per pair)."""
    from bench.limits import _time
    from proxy.limits.model import Counter, Demand, Usage
    from proxy.limits.redis_store import RedisLimiter, connect

    client = connect(url, timeout=1.0)
    limiter = RedisLimiter(client, timeout=1.0)
    counter = Counter("bench-floor/tokens", "tokens", 10**12, "ModelPolicy bench/caps", "floor", "open")
    demand, usage = Demand(500, 500), Usage(400, 300)
    try:
        cpu = time.process_time()
        ping = await _time(FLOOR_CALLS, client.ping)
        ping_cpu = (time.process_time() - cpu) * 1e6 / (FLOOR_CALLS + min(FLOOR_CALLS // 10, 200))
        reserves, settles = [], []
        cpu = time.process_time()
        for _ in range(FLOOR_CALLS):
            began = time.perf_counter()
            decision = await limiter.reserve([counter], demand, lease_seconds=60)
            reserved = time.perf_counter()
            assert decision.reservation is not None
            await limiter.settle(decision.reservation, usage)
            reserves.append(reserved - began)
            settles.append(time.perf_counter() - reserved)
        pair_cpu = (time.process_time() - cpu) * 1e6 / FLOOR_CALLS
        return {
            "redis PING": (ping, ping_cpu),
            "redis reserve, one limit": (reserves, pair_cpu),
            "redis settle, one limit": (settles, pair_cpu),
        }
    finally:
        await limiter.close()


def _ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(int(len(ordered) * q) - 1, 0)] * 1e3


def _line(round_: int, variant: Variant, scenario: Scenario, result: WrkResult) -> str:
    return (
        f"  round {round_ + 1} {variant.name:<28} {scenario.name:<9} p50 {result.p50_ms:.3f} ms  "
        f"p99 {result.p99_ms:.3f} ms  {result.proxy_cpu_us_per_request:>5.0f} us/req  "
        f"(others on its core {result.proxy_core_other_pct:.0f}%)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.sidecar_setup import choose_cores, cpu_model

    proxy_core, load_core, cores = choose_cores()
    load_before = os.getloadavg()
    print(f"# limits through the sidecar: {args.rounds} rounds x {args.duration:g} s per scenario, 1 connection")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in load_before)}")
    print(cores)
    procs: list[Proc] = []
    with stopping(procs), tempfile.TemporaryDirectory(prefix="modelway-bench-limits-") as tmp:
        tmpdir = Path(tmp)
        env = without_otel(drop=("OTEL_", "MODELWAY_"))
        upstream_port, redis_url = _start_services(procs, tmpdir, core=load_core, env=env)
        for limits in (False, True):
            _write_snapshot(tmpdir, upstream_port, limits=limits)
        variants = [
            _variant("no limits", tmpdir, env, limits=False, redis_url=None),
            _variant("no limits, store named", tmpdir, env, limits=False, redis_url=redis_url),
            _variant("one limit, in process", tmpdir, env, limits=True, redis_url=None),
            _variant("one limit, Redis", tmpdir, env, limits=True, redis_url=redis_url),
        ]
        if args.before:
            before = _tree_of(args.before, tmpdir / "before")
            variants.append(_variant(f"before limits ({args.before})", tmpdir, env, limits=False, redis_url=None,
                                     tree=before))  # fmt: skip
        start_sidecars(variants, procs, core=proxy_core, logs=LOGS)
        scripts = wrk_scripts(tmpdir)
        warm_up(variants, scripts, seconds=args.warmup, connections=1, load_core=load_core)
        if not _scripts_run(redis_url):
            raise BenchBroken("the sidecar with one limit in Redis ran no script there: the figures would lie")
        floor = [uvloop.run(_floor(redis_url))]
        scripts_before = _scripts_run(redis_url)
        run_rounds(variants, SCENARIOS, scripts, rounds=args.rounds, seconds=args.duration, proxy_core=proxy_core,
                   load_core=load_core, line=_line)  # fmt: skip
        checked = _scripts_run(redis_url) - scripts_before
        served = sum(r.requests for scenario in SCENARIOS for r in variants[3].results[scenario.name])
        if checked < 2 * served - 2:  # a check before each call, a settlement after (the last may be late)
            raise BenchBroken(f"Redis ran {checked} scripts for {served} requests with one limit: not all checked")
        floor.append(uvloop.run(_floor(redis_url)))
    return _report(variants, floor, load_before=load_before, args=args)


def _write_snapshot(tmpdir: Path, upstream_port: int, *, limits: bool) -> None:
    path = tmpdir / f"snapshot-{'one-limit' if limits else 'none'}.json"
    path.write_text(json.dumps(_snapshot(upstream_port, limits=limits)))


def _start_services(procs: list[Proc], tmpdir: Path, *, core: int | None, env: dict[str, str]) -> tuple[int, str]:
    """The fake upstream and a redis-server on the load core; their port and URL."""
    upstream_port, redis_port = free_port(), free_port()
    upstream = start(
        "upstream",
        [sys.executable, "-m", "bench.upstream", "--port", str(upstream_port)],
        core=core,
        logs=LOGS,
        env=env,
    )
    procs.append(upstream)
    redis_argv = [str(find_tool("redis-server")), "--port", str(redis_port), "--bind", "127.0.0.1",
                  "--save", "", "--appendonly", "no", "--dir", str(tmpdir)]  # fmt: skip
    redis = start("redis", redis_argv, core=core, logs=LOGS, env=env)
    procs.append(redis)
    wait_listening(upstream, upstream_port)
    wait_listening(redis, redis_port)
    return upstream_port, f"redis://127.0.0.1:{redis_port}/0"


def _scripts_run(redis_url: str) -> int:
    """How many limiter scripts (EVALSHA, EVAL) Redis has run so far."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        stats = client.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))
    finally:
        client.close()


def _report(
    variants: list[LimitsVariant],
    floor: list[dict[str, tuple[list[float], float]]],
    *,
    load_before: tuple[float, ...],
    args: argparse.Namespace,
) -> dict[str, Any]:
    baseline = variants[0]
    rows = []
    print()
    print(f"Limits through the sidecar, 1 connection: median of {args.rounds} rounds x {args.duration:g} s")
    print(f"{'variant':<30}{'scenario':<10}| {'p50 ms':>7} {'p99 ms':>7} | {'+p50 ms':>8} | {'CPU us/req':>10} "
          f"{'+CPU us':>8} | target")  # fmt: skip
    for scenario in (s.name for s in SCENARIOS):
        base_p50 = statistics.median(r.p50_ms for r in baseline.results[scenario])
        base_cpu = statistics.median(r.proxy_cpu_us_per_request for r in baseline.results[scenario])
        noise = max(r.p50_ms for r in baseline.results[scenario]) - min(r.p50_ms for r in baseline.results[scenario])
        for variant in variants:
            runs = variant.results[scenario]
            p50 = statistics.median(r.p50_ms for r in runs)
            p99 = statistics.median(r.p99_ms for r in runs)
            cpu = statistics.median(r.proxy_cpu_us_per_request for r in runs)
            added = p50 - base_p50
            verdict = _verdict(variant, baseline, added=added, noise=noise if args.rounds > 1 else math.inf)
            row = {"variant": variant.name, "scenario": scenario, "p50_ms": p50, "p99_ms": p99,
                   "added_p50_ms": added, "cpu_us_per_request": cpu, "added_cpu_us": cpu - base_cpu,
                   "noise_p50_ms": noise, "verdict": verdict}  # fmt: skip
            rows.append(row)
            print(f"{variant.name:<30}{scenario:<10}| {p50:>7.3f} {p99:>7.3f} | {added:>+8.3f} | {cpu:>10.0f} "
                  f"{cpu - base_cpu:>+8.0f} | {verdict}")  # fmt: skip
    print()
    print("The floor, measured alone in the same run (the sidecar's Redis client in the bench process, loopback):")
    floors = {}
    for name in floor[0]:
        samples = [x for run in floor for x in run[name][0]]
        cpu = statistics.median(run[name][1] for run in floor)
        floors[name] = {"p50_ms": _ms(samples, 0.5), "p99_ms": _ms(samples, 0.99), "cpu_us_per_call": cpu}
        what = "a call" if name == "redis PING" else "reserve+settle"
        print(f"  {name:<34} p50 {floors[name]['p50_ms']:.3f} ms  p99 {floors[name]['p99_ms']:.3f} ms  "
              f"client CPU {cpu:.0f} us {what}")  # fmt: skip
    check = floors["redis reserve, one limit"]["p50_ms"]
    print(f"  one limit in Redis: the target ({TARGET_ADDED_P50_MS} ms added p50) is "
          f"{'out of reach' if check > TARGET_ADDED_P50_MS else 'within reach'} on this machine: the check alone "
          f"(before the call; the settlement runs after the answer) takes {check:.3f} ms at p50")  # fmt: skip
    load_after = os.getloadavg()
    print(f"load average before {' '.join(f'{x:.2f}' for x in load_before)}, "
          f"after {' '.join(f'{x:.2f}' for x in load_after)}")  # fmt: skip
    report = {"rounds": args.rounds, "duration_seconds": args.duration, "rows": rows, "floor": floors,
              "load_before": load_before, "load_after": load_after}  # fmt: skip
    return write_report("limits_sidecar", report)


def _verdict(variant: LimitsVariant, baseline: LimitsVariant, *, added: float, noise: float) -> str:
    """Against the target; UNCLEAR when the baseline's own p50 moved more than the target between rounds
    (then the CPU columns, or bench.limits_instructions, say more than the latency ones)."""
    if variant is baseline:
        return f"(noise: p50 spread {noise:.3f} ms over rounds)" if noise < math.inf else "(one round: noise unknown)"
    if variant.limits:
        if noise > TARGET_ADDED_P50_MS:
            return f"UNCLEAR (noise > {TARGET_ADDED_P50_MS} ms)"
        return ("PASS" if added <= TARGET_ADDED_P50_MS else "MISS") + f" (target: <= {TARGET_ADDED_P50_MS} ms)"
    if variant.cwd != ROOT:
        return "(reference)"
    return ("PASS" if added <= max(noise, 0.01) else "MISS") + " (target: within noise)"


def main(argv: list[str] | None = None) -> int:
    parser = parser_for("python -m bench.limits_sidecar", __doc__ or "", duration=5.0, quick_duration=2.0)
    parser.add_argument("--before", metavar="REV", help="also the sidecar at this git revision, without limits")
    args = parser.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.warmup = 1.0 if args.quick else 2.0
    return run_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
