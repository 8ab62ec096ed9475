"""`make bench`: the sidecar against a bare aiohttp pass-through, under wrk.

One machine, one go: a fixed-cost fake OpenAI upstream (bench/upstream.py),
an OTLP/HTTP sink (bench/otlp_sink.py), the baseline, a bare aiohttp
pass-through (bench/baseline.py), and the sidecar (`python -m proxy`, routing and tracing
on, every span exported to the sink). Both proxies are pinned to one core and
loaded in turn, scenario by scenario, alternating which goes first, so a drift
in the machine's background load hits both alike; wrk, the upstream and the
sink share another core. Each proxy serves plain and streaming chat
completions at 1 and 16 connections; the report gives
requests/s, p50/p99 latency, peak RSS, the sidecar/baseline ratios and
whether the targets are met:

  - at 16 connections the sidecar keeps >= 0.6 of the baseline's requests/s,
  - at 1 connection its p50 is within 0.3 ms of the baseline's,
  - its peak RSS under load is <= 1.1 x the baseline's (telemetry on); idle RSS (after
    start-up and one plain and one streamed request) is shown beside it.

A miss is reported, not fatal: the exit status is non-zero only when
something broke (a process did not start, a sanity check failed, wrk saw
errors or non-2xx answers). Results also go to bench/results/sidecar.json.

Then the cost of telemetry itself (bench/sidecar_telemetry.py): the sidecar with telemetry off,
on, and on with the collector down; target: >= 0.85 of off's requests/s. And the cost of the
access log (bench/sidecar_access_log.py): the sidecar with it on and off; and of the in-flight
bounds (bench/sidecar_backpressure.py): the sidecar with its default bounds and with them off.

What the sidecar's extra memory is made of, by package: `python -m bench.sidecar_footprint`.

This module starts and loads the processes; the report (table, targets, sidecar.json) is
bench/sidecar_report.py, and what the sidecar benchmarks share (the bench route, chat bodies,
sanity checks, core choice) is bench/sidecar_setup.py.

    python -m bench.sidecar [--duration 10] [--quick] [--also-untraced] [--skip-telemetry] [--skip-access-log]
        [--skip-backpressure]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    BenchBroken,
    Proc,
    WrkResult,
    free_port,
    log_hints,
    lua_script,
    proc_status_kb,
    run_wrk,
    start,
    start_upstream_and_sink,
    wait_listening,
)
from bench.sidecar_report import RESULTS, ProxyRun, compare, print_report, write_json
from bench.sidecar_setup import (
    API_KEY,
    SCENARIOS,
    chat_body,
    choose_cores,
    cpu_model,
    post,
    precompile,
    sanity_check,
    sink_stats,
    snapshot_for,
)

LOGS = RESULTS / "logs" / "sidecar"


@dataclass
class UnderTest:
    """One proxy process being measured, and what was seen so far."""

    name: str
    proc: Proc
    port: int
    results: dict[str, WrkResult] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    idle_rss_kb: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base + "/v1/chat/completions"

    def check_alive(self, during: str) -> None:
        if self.proc.popen.poll() is not None:
            raise BenchBroken(f"{self.name} died during {during}; log {self.proc.log}:\n{self.proc.tail()}")

    def record(self, scenario: str, result: WrkResult) -> None:
        if result.errors:
            self.problems.append(
                f"{self.name} {scenario}: {result.non_2xx} non-2xx answers, socket errors {result.socket_errors}"
            )
            print(f"  ^ ERRORS: {self.problems[-1]} (see {self.proc.log})", flush=True)
            for hint in log_hints(self.proc):
                print(f"    {self.name} log: {hint}", flush=True)
        self.check_alive(scenario)

    def finish(self) -> ProxyRun:
        return ProxyRun(
            name=self.name,
            scenarios=self.results,
            peak_rss_kb=proc_status_kb(self.proc.pid, "VmHWM"),
            rss_after_kb=proc_status_kb(self.proc.pid, "VmRSS"),
            idle_rss_kb=self.idle_rss_kb,
            problems=self.problems,
        )


def warm_up(target: UnderTest, scripts: dict[bool, Path], *, seconds: float, load_core: int | None) -> None:
    sanity_check(target.name, target.base)
    time.sleep(0.5)
    target.idle_rss_kb = proc_status_kb(target.proc.pid, "VmRSS")  # started, one request of each kind served
    for stream in (False, True):
        result = run_wrk(target.url, scripts[stream], connections=16, seconds=seconds, core=load_core)
        target.record(f"warm-up ({'stream' if stream else 'plain'})", result)


def measure(
    targets: list[UnderTest],
    scripts: dict[bool, Path],
    *,
    duration: float,
    proxy_core: int | None,
    load_core: int | None,
) -> None:
    """Each scenario on each proxy in turn, alternating which goes first, so drift in the machine's
    background load falls on both alike."""
    for index, (scenario, stream, connections) in enumerate(SCENARIOS):
        for target in targets if index % 2 == 0 else list(reversed(targets)):
            print(f"  {target.name:<8} {scenario:<9} ...", end="", flush=True)
            result = run_wrk(
                target.url,
                scripts[stream],
                connections=connections,
                seconds=duration,
                core=load_core,
                proxy_pid=target.proc.pid,
                proxy_core=proxy_core,
                load_core=load_core,
            )
            print(
                f" {result.rps:>9,.0f} req/s  p50 {result.p50_ms:.3f} ms  p99 {result.p99_ms:.3f} ms"
                f"  (proxy CPU {result.proxy_cpu_pct:.0f}% = {result.proxy_cpu_us_per_request:.0f} us/req,"
                f" others on its core {result.proxy_core_other_pct:.0f}%,"
                f" load core {result.load_core_busy_pct:.0f}% busy)",
                flush=True,
            )
            target.results[scenario] = result
            target.record(scenario, result)
            time.sleep(0.5)
    # After the load: the sanity checks again, so a proxy that degraded under load is caught.
    for target in targets:
        sanity_check(target.name, target.base)


# --- main ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed; install it with:  apt-get install -y wrk", file=sys.stderr)
        return 2
    duration = 3.0 if args.quick and args.duration is None else (args.duration or 10.0)
    warmup = 1.0 if args.quick else 2.0
    proxy_core, load_core, cores = choose_cores()
    extra_env = dict(item.split("=", 1) for item in args.sidecar_env)
    python = sys.executable
    RESULTS.mkdir(parents=True, exist_ok=True)
    proxies = 3 if args.also_untraced else 2
    print(f"Modelway sidecar benchmark: {duration:g} s per scenario, {len(SCENARIOS)} scenarios x {proxies} proxies")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(cores)

    procs: list[Proc] = []
    try:
        precompile()  # as in the image: no process pays for compiling its modules from source
        with tempfile.TemporaryDirectory(prefix="modelway-bench-") as tmp:
            tmpdir = Path(tmp)
            scripts = {
                stream: lua_script(tmpdir / f"{'stream' if stream else 'plain'}.lua", chat_body(stream).decode())
                for stream in (False, True)
            }
            base_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}

            upstream_port, sink_port = start_upstream_and_sink(
                procs, python=python, core=load_core, logs=LOGS, env=base_env
            )
            status, _, _ = post(f"http://127.0.0.1:{upstream_port}/v1/chat/completions", chat_body(stream=True))
            if status != 200:
                raise BenchBroken(f"the fake upstream answered {status}")

            # Both proxies run side by side on the proxy core; only the one under load does any work.
            port = free_port()
            baseline = start(
                "baseline",
                [
                    python,
                    "-m",
                    "bench.baseline",
                    "--port",
                    str(port),
                    "--upstream",
                    f"http://127.0.0.1:{upstream_port}/v1",
                    "--api-key",
                    API_KEY,
                ],
                core=proxy_core,
                logs=LOGS,
                env=base_env,
            )
            procs.append(baseline)
            targets = [UnderTest("baseline", baseline, port)]

            # The sidecar: routing on, tracing on (every span sampled, exported over OTLP/HTTP to the sink).
            snapshot = tmpdir / "snapshot.json"
            snapshot.write_text(json.dumps(snapshot_for(upstream_port), indent=2))
            port, admin_port = free_port(), free_port()
            sidecar_env = {
                **base_env,
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_TRACES_SAMPLER": "always_on",
                "OTEL_SERVICE_NAME": "modelway-proxy-bench",
                **extra_env,
            }
            if extra_env:
                print(f"sidecar environment overrides: {extra_env}")
            # As in a pod: rules from the controller (here its last snapshot, kept in the state file,
            # the controller itself away), not a --snapshot file, whose YAML loader pods never load.
            state = tmpdir / "state.json"
            state.write_text(json.dumps({"receivedAt": time.time(), "snapshot": snapshot_for(upstream_port)}))
            (tmpdir / "token").write_text("bench")
            sidecar = start(
                "sidecar",
                [
                    python,
                    "-m",
                    "proxy",
                    "--controller",
                    f"https://127.0.0.1:{free_port()}",
                    "--token-file",
                    str(tmpdir / "token"),
                    "--state-file",
                    str(state),
                    "--reconnect-max-seconds",
                    "60",
                    "--port",
                    str(port),
                    "--admin-port",
                    str(admin_port),
                ],
                core=proxy_core,
                logs=LOGS,
                env=sidecar_env,
            )
            procs.append(sidecar)
            targets.append(UnderTest("sidecar", sidecar, port))
            if args.also_untraced:
                untraced_port, untraced_admin = free_port(), free_port()
                untraced = start(
                    "untraced",
                    [
                        python,
                        "-m",
                        "proxy",
                        "--snapshot",
                        str(snapshot),
                        "--port",
                        str(untraced_port),
                        "--admin-port",
                        str(untraced_admin),
                    ],
                    core=proxy_core,
                    logs=LOGS,
                    env={**base_env, "OTEL_SDK_DISABLED": "true"},
                )
                procs.append(untraced)
                targets.append(UnderTest("untraced", untraced, untraced_port))

            for target in targets:
                wait_listening(target.proc, target.port)
            sink_before = sink_stats(sink_port)
            for target in targets:
                warm_up(target, scripts, seconds=warmup, load_core=load_core)
            measure(targets, scripts, duration=duration, proxy_core=proxy_core, load_core=load_core)
            runs = {target.name: target.finish() for target in targets}
            sidecar.stop()  # the tracer provider flushes its last spans on shutdown
            time.sleep(0.2)
            sink_after = sink_stats(sink_port)
            exported = {k: sink_after[k] - sink_before.get(k, 0) for k in sink_after}
            if not exported.get("requests") and not extra_env:
                raise BenchBroken("the OTLP sink received no spans from the sidecar: tracing was not on")
    except BenchBroken as exc:
        print(f"\nbench: BROKEN: {exc}", file=sys.stderr)
        return 1
    finally:
        for proc in reversed(procs):
            proc.stop()

    comparisons = {name: compare(runs["baseline"], run) for name, run in runs.items() if name != "baseline"}
    problems = [problem for run in runs.values() for problem in run.problems]
    print_report(runs, comparisons, duration=duration, cores=cores, sink=exported)
    write_json(
        runs,
        comparisons,
        duration=duration,
        warmup=warmup,
        proxy_core=proxy_core,
        load_core=load_core,
        cores=cores,
        exported=exported,
        extra_env=extra_env,
        problems=problems,
    )
    from bench.sidecar_access_log import run_access_log
    from bench.sidecar_backpressure import run_backpressure
    from bench.sidecar_telemetry import run_telemetry

    cost_comparisons: list[tuple[bool, Callable[..., dict[str, Any]], str, str]] = [
        (
            args.skip_telemetry,
            run_telemetry,
            "telemetry",
            "\nWhat telemetry costs: the sidecar with telemetry off, on (100 % sampling, metrics, OTLP to the sink) "
            "and on with the collector down",
        ),
        (
            args.skip_access_log,
            run_access_log,
            "access log",
            "\nWhat the access log costs: the sidecar with --access-log=on (the default) and off",
        ),
        (
            args.skip_backpressure,
            run_backpressure,
            "backpressure",
            "\nWhat the in-flight bounds cost: the sidecar with its default bounds (on) and with them off",
        ),
    ]
    for skip, measure_cost, what, intro in cost_comparisons:
        if skip:
            continue
        print(intro)
        try:
            measure_cost(
                duration=duration,
                warmup=warmup,
                rounds=args.telemetry_rounds,
                proxy_core=proxy_core,
                load_core=load_core,
            )
        except BenchBroken as exc:
            print(f"\nbench: BROKEN ({what}): {exc}", file=sys.stderr)
            return 1
    if problems:
        print(f"bench: errors under load (logs in {LOGS}); the figures above are not trustworthy", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sidecar", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds per scenario (default: 10, or 3 with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="3 s per scenario and a shorter warm-up")
    parser.add_argument(
        "--also-untraced",
        action="store_true",
        help="also measure the sidecar with tracing off (diagnostic: what tracing costs)",
    )
    parser.add_argument(
        "--sidecar-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the sidecar, for experiments "
        "(e.g. OTEL_SDK_DISABLED=true to see the cost of tracing); repeatable",
    )
    parser.add_argument(
        "--skip-telemetry",
        action="store_true",
        help="skip the telemetry cost comparison (off / on / collector down; bench.sidecar_telemetry)",
    )
    parser.add_argument(
        "--skip-access-log",
        action="store_true",
        help="skip the access log cost comparison (on / off; bench.sidecar_access_log)",
    )
    parser.add_argument(
        "--skip-backpressure",
        action="store_true",
        help="skip the in-flight bounds cost comparison (on / off; bench.sidecar_backpressure)",
    )
    parser.add_argument(
        "--telemetry-rounds",
        type=int,
        default=3,
        metavar="N",
        help="runs per scenario and sidecar in the telemetry and access log comparisons (median reported)",
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
