"""What the in-flight bounds cost the sidecar: the same sidecar with its default bounds (on) and
with them off (`--max-in-flight-per-backend=0 --max-in-flight-per-route=0`), under wrk, in the
same run (part of `make bench`, after the access log comparison). Neither bound bites here (16
connections at most): this is the price every request pays for being counted.

Two figures: wrk's (requests/s, p50 at 1 connection, the proxy's CPU time per request; the
median of `rounds` runs, the order alternating), noisy on a shared machine; and the bounds' own
calls timed in process (a route's and a backend's slot taken and given back, as one request
does), which the noise cannot hide.

    python -m bench.sidecar_backpressure [--duration 10] [--quick] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

from bench.harness import (
    ROOT,
    BenchBroken,
    Proc,
    WrkResult,
    free_port,
    lua_script,
    run_wrk,
    start,
    start_upstream_and_sink,
    wait_listening,
)

LOGS = ROOT / "bench" / "results" / "logs" / "backpressure"
RESULTS = ROOT / "bench" / "results"
SCENARIOS = (("plain@1", False, 1), ("stream@16", True, 16))
VARIANTS = {"off": ["--max-in-flight-per-backend=0", "--max-in-flight-per-route=0"], "on": []}


def bounds_ns_per_request(repeat: int = 5, number: int = 200_000) -> dict[str, float]:
    """Nanoseconds per request for the bounds' calls on the request path, on and off (best of `repeat`)."""
    from proxy.request.backpressure import Backpressure, BackpressureSettings

    def one_request(pressure: Backpressure) -> Any:
        route, backend = pressure.route, pressure.backend

        def request() -> None:
            route_slot = route.enter("bench")
            backend_slot = backend.enter("bench-upstream/bench-upstream-model")
            assert route_slot is not None and backend_slot is not None
            backend.leave(backend_slot)
            route.leave(route_slot)

        return request

    def nothing() -> None:  # the call itself, for scale
        pass

    on = one_request(Backpressure(BackpressureSettings()))
    off = one_request(Backpressure(BackpressureSettings(max_in_flight_per_backend=0, max_in_flight_per_route=0)))
    return {
        name: 1e9 * min(timeit.repeat(call, repeat=repeat, number=number)) / number
        for name, call in (("on", on), ("off", off), ("empty", nothing))
    }


def run_backpressure(
    *,
    duration: float,
    warmup: float,
    rounds: int,
    proxy_core: int | None,
    load_core: int | None,
    python: str = sys.executable,
) -> dict[str, Any]:
    from bench.sidecar import chat_body, sanity_check, snapshot_for

    procs: list[Proc] = []
    results: dict[str, dict[str, list[WrkResult]]] = {n: {s: [] for s, _, _ in SCENARIOS} for n in VARIANTS}
    try:
        with tempfile.TemporaryDirectory(prefix="modelway-bench-backpressure-") as tmp:
            tmpdir = Path(tmp)
            scripts = {s: lua_script(tmpdir / f"{s}.lua", chat_body(s).decode()) for s in (False, True)}
            base_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
            upstream_port, sink_port = start_upstream_and_sink(
                procs, python=python, core=load_core, logs=LOGS, env=base_env
            )
            snapshot = tmpdir / "snapshot.json"
            snapshot.write_text(json.dumps(snapshot_for(upstream_port)))
            env = {
                **base_env,
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                "OTEL_TRACES_SAMPLER": "always_on",
                "OTEL_SERVICE_NAME": "modelway-proxy-bench",
            }
            sidecars: dict[str, tuple[Proc, int]] = {}
            for name, flags in VARIANTS.items():
                port, admin = free_port(), free_port()
                argv = [python, "-m", "proxy", "--snapshot", str(snapshot), "--port", str(port)]
                argv += ["--admin-port", str(admin), "--access-log=off", *flags]
                proc = start(f"sidecar-bounds-{name}", argv, core=proxy_core, logs=LOGS, env=env)
                procs.append(proc)
                sidecars[name] = (proc, port)
            for name, (proc, port) in sidecars.items():
                wait_listening(proc, port)
                sanity_check(f"sidecar-bounds-{name}", f"http://127.0.0.1:{port}")
                for stream in (False, True):
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    run_wrk(url, scripts[stream], connections=16, seconds=warmup, core=load_core)
            names = list(VARIANTS)
            for round_ in range(rounds):
                for scenario, stream, connections in SCENARIOS:
                    for name in names if round_ % 2 == 0 else names[::-1]:  # alternate who goes first
                        proc, port = sidecars[name]
                        result = run_wrk(
                            f"http://127.0.0.1:{port}/v1/chat/completions",
                            scripts[stream],
                            connections=connections,
                            seconds=duration,
                            core=load_core,
                            proxy_pid=proc.pid,
                            proxy_core=proxy_core,
                            load_core=load_core,
                        )
                        if result.errors:
                            raise BenchBroken(
                                f"sidecar-bounds-{name} {scenario}: {result.non_2xx} non-2xx, "
                                f"socket errors {result.socket_errors}; log {proc.log}"
                            )
                        print(
                            f"  round {round_ + 1} bounds {name:<3} {scenario:<9} {result.rps:>8,.0f} req/s "
                            f"p50 {result.p50_ms:.3f} ms {result.proxy_cpu_us_per_request:>5.0f} us/req  "
                            f"(others on its core {result.proxy_core_other_pct:.0f}%)",
                            flush=True,
                        )
                        results[name][scenario].append(result)
                        time.sleep(0.3)
    finally:
        for proc in reversed(procs):
            proc.stop()
    return _report(results, in_process=bounds_ns_per_request(), duration=duration, rounds=rounds)


def _report(
    results: dict[str, dict[str, list[WrkResult]]], *, in_process: dict[str, float], duration: float, rounds: int
) -> dict[str, Any]:
    rows = []
    print()
    print(f"In-flight bounds cost: median of {rounds} runs x {duration:g} s, telemetry on, access log off")
    print(
        f"{'scenario':<10}| {'off rps':>8} {'on rps':>8} | {'on/off':>6} | {'p50 ms off/on':>15} "
        f"| {'CPU us/req off/on':>17} | noise"
    )
    for scenario, _, _ in SCENARIOS:
        runs = {n: results[n][scenario] for n in results}
        rps = {n: statistics.median(r.rps for r in runs[n]) for n in runs}
        p50 = {n: statistics.median(r.p50_ms for r in runs[n]) for n in runs}
        cpu = {n: statistics.median(r.proxy_cpu_us_per_request for r in runs[n]) for n in runs}
        noise = max(r.proxy_core_other_pct for n in runs for r in runs[n])
        row = {
            "scenario": scenario,
            "rps": rps,
            "p50_ms": p50,
            "cpu_us_per_request": cpu,
            "ratio_on": rps["on"] / rps["off"],
            "p50_ms_added": p50["on"] - p50["off"],
            "cpu_us_added": cpu["on"] - cpu["off"],
            "max_noise_pct": noise,
        }
        rows.append(row)
        print(
            f"{scenario:<10}| {rps['off']:>8,.0f} {rps['on']:>8,.0f} | {row['ratio_on']:>6.3f} "
            f"| {p50['off']:>6.3f} /{p50['on']:>6.3f} | {cpu['off']:>7.0f} /{cpu['on']:>6.0f}  | {noise:>4.0f}%"
        )
    print(
        f"in process, a route's and a backend's slot taken and given back: {in_process['on']:.0f} ns per request "
        f"with the bounds on, {in_process['off']:.0f} ns off ({in_process['empty']:.0f} ns: an empty function call)"
    )
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_seconds": duration,
        "rounds": rounds,
        "scenarios": rows,
        "in_process_ns_per_request": in_process,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sidecar_backpressure.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    from bench.sidecar import choose_cores

    parser = argparse.ArgumentParser(prog="python -m bench.sidecar_backpressure", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=None, help="seconds per run (default 10, 3 with --quick)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    duration = args.duration or (3.0 if args.quick else 10.0)
    proxy_core, load_core, cores = choose_cores()
    print(cores)
    try:
        run_backpressure(
            duration=duration,
            warmup=1.0 if args.quick else 2.0,
            rounds=args.rounds,
            proxy_core=proxy_core,
            load_core=load_core,
        )
    except BenchBroken as exc:
        print(f"bench: BROKEN: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
