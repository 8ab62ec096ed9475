"""What the access log costs the sidecar: the same sidecar with `--access-log=on` (the default: a
JSON line per request, written to the log file the harness keeps, as a pod's stdout would be)
and `--access-log=off`, under wrk (part of `make bench`, after the telemetry comparison).

Both run with telemetry as in production (traces sampled and exported to a sink, metrics on).
Each scenario runs `rounds` times per sidecar, the order alternating, and the median is
reported, with the proxy's CPU time per request (less sensitive to other load on the machine).

    python -m bench.sidecar_access_log [--duration 10] [--quick] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
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

LOGS = ROOT / "bench" / "results" / "logs" / "access_log"
RESULTS = ROOT / "bench" / "results"
SCENARIOS = (("plain@16", False, 16), ("stream@16", True, 16))
VARIANTS = {"off": ["--access-log=off"], "on": ["--access-log=on"]}


def run_access_log(
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
    try:
        with tempfile.TemporaryDirectory(prefix="modelway-bench-access-") as tmp:
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
                proc = start(
                    f"sidecar-access-{name}",
                    [*argv, "--admin-port", str(admin), *flags],
                    core=proxy_core,
                    logs=LOGS,
                    env=env,
                )
                procs.append(proc)
                sidecars[name] = (proc, port)
            for name, (proc, port) in sidecars.items():
                wait_listening(proc, port)
                sanity_check(f"sidecar-access-{name}", f"http://127.0.0.1:{port}")
                for stream in (False, True):
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    run_wrk(url, scripts[stream], connections=16, seconds=warmup, core=load_core)
            results: dict[str, dict[str, list[WrkResult]]] = {n: {s: [] for s, _, _ in SCENARIOS} for n in VARIANTS}
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
                                f"sidecar-access-{name} {scenario}: {result.non_2xx} non-2xx, "
                                f"socket errors {result.socket_errors}; log {proc.log}"
                            )
                        print(
                            f"  round {round_ + 1} access log {name:<3} {scenario:<9} {result.rps:>8,.0f} req/s "
                            f"{result.proxy_cpu_us_per_request:>5.0f} us/req  (others on its core "
                            f"{result.proxy_core_other_pct:.0f}%)",
                            flush=True,
                        )
                        results[name][scenario].append(result)
                        time.sleep(0.3)
            lines = _access_lines(sidecars["on"][0].log), _access_lines(sidecars["off"][0].log)
    finally:
        for proc in reversed(procs):
            proc.stop()
    if not lines[0] or lines[1]:
        raise BenchBroken(f"access lines written: {lines[0]} with the log on, {lines[1]} with it off")
    return _report(results, lines_on=lines[0], duration=duration, rounds=rounds)


def _access_lines(log: Path) -> int:
    with log.open("rb") as text:
        return sum(1 for line in text if line.startswith(b'{"time":'))


def _report(
    results: dict[str, dict[str, list[WrkResult]]], *, lines_on: int, duration: float, rounds: int
) -> dict[str, Any]:
    rows = []
    print()
    print(f"Access log cost: median of {rounds} runs x {duration:g} s, telemetry on in both")
    print(f"{'scenario':<10}| {'off rps':>8} {'on rps':>8} | {'on/off':>6} | {'CPU us/req off/on':>17} | noise")
    for scenario, _, _ in SCENARIOS:
        rps = {n: statistics.median(r.rps for r in results[n][scenario]) for n in results}
        cpu = {n: statistics.median(r.proxy_cpu_us_per_request for r in results[n][scenario]) for n in results}
        noise = max(r.proxy_core_other_pct for n in results for r in results[n][scenario])
        row = {
            "scenario": scenario,
            "rps": rps,
            "cpu_us_per_request": cpu,
            "ratio_on": rps["on"] / rps["off"],
            "cpu_us_added": cpu["on"] - cpu["off"],
            "max_noise_pct": noise,
        }
        rows.append(row)
        print(
            f"{scenario:<10}| {rps['off']:>8,.0f} {rps['on']:>8,.0f} | {row['ratio_on']:>6.3f} "
            f"| {cpu['off']:>7.0f} /{cpu['on']:>6.0f}  | {noise:>4.0f}%"
        )
    print(f"access lines written by the 'on' sidecar: {lines_on:,}")
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "duration_seconds": duration,
        "rounds": rounds,
        "scenarios": rows,
        "lines_on": lines_on,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sidecar_access_log.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    from bench.sidecar import choose_cores

    parser = argparse.ArgumentParser(prog="python -m bench.sidecar_access_log", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=None, help="seconds per run (default 10, 3 with --quick)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    duration = args.duration or (3.0 if args.quick else 10.0)
    proxy_core, load_core, cores = choose_cores()
    print(cores)
    try:
        run_access_log(
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
