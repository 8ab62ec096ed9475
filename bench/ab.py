"""One shape for the sidecar A/B benches: several variants of the sidecar started side by side, each
warmed up, then every scenario run on every variant `rounds` times, the order rotating each round so
drift in the machine's load falls on all alike; per-variant medians and the noise for the tables,
the JSON report written under bench/results. Each bench says only what its variants differ in.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
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

RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Scenario:
    name: str
    stream: bool
    connections: int


@dataclass
class Variant:
    """One sidecar of the comparison: what it is started with, and what it measured."""

    name: str
    process: str  # its process (and log) name
    snapshot: Path
    flags: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # the whole environment
    cwd: Path = ROOT  # the checkout it runs from
    proc: Proc | None = None
    port: int = 0
    admin_port: int = 0
    results: dict[str, list[WrkResult]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    @property
    def running(self) -> Proc:
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc


RoundLine = Callable[[int, Variant, Scenario, WrkResult], str]


def without_otel(*, drop: tuple[str, ...] = ("OTEL_",)) -> dict[str, str]:
    """This process's environment without the variables that would steer the sidecars' telemetry."""
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def telemetry_on(base_env: dict[str, str], sink_port: int) -> dict[str, str]:
    """Telemetry as in production: every trace sampled and exported to the sink, metrics on."""
    return {
        **base_env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_SERVICE_NAME": "modelway-proxy-bench",
    }


def wrk_scripts(tmpdir: Path) -> dict[bool, Path]:
    """The wrk scripts posting a plain (False) and a streamed (True) chat request."""
    from bench.sidecar_setup import chat_body

    return {stream: lua_script(tmpdir / f"{stream}.lua", chat_body(stream).decode()) for stream in (False, True)}


@contextmanager
def stopping(procs: list[Proc]) -> Iterator[list[Proc]]:
    """Stops every process in `procs` on the way out, the last started first."""
    try:
        yield procs
    finally:
        for proc in reversed(procs):
            proc.stop()


def start_sidecars(
    variants: Sequence[Variant], procs: list[Proc], *, core: int | None, logs: Path, python: str = sys.executable
) -> None:
    """Each variant's `python -m proxy` on `core` (appended to `procs`, for the caller to stop)."""
    for variant in variants:
        variant.port, variant.admin_port = free_port(), free_port()
        argv = [python, "-m", "proxy", "--snapshot", str(variant.snapshot), "--port", str(variant.port),
                "--admin-port", str(variant.admin_port), *variant.flags]  # fmt: skip
        variant.proc = start(variant.process, argv, core=core, logs=logs, env=variant.env, cwd=variant.cwd)
        procs.append(variant.proc)


def warm_up(
    variants: Sequence[Variant], scripts: dict[bool, Path], *, seconds: float, connections: int, load_core: int | None
) -> None:
    """Each sidecar listening and sane (a plain and a streamed answer), then warmed with both."""
    from bench.sidecar_setup import sanity_check

    for variant in variants:
        wait_listening(variant.running, variant.port)
        sanity_check(variant.process, f"http://127.0.0.1:{variant.port}")
        for stream in (False, True):
            run_wrk(variant.url, scripts[stream], connections=connections, seconds=seconds, core=load_core)


def run_rounds(
    variants: Sequence[Variant],
    scenarios: tuple[Scenario, ...],
    scripts: dict[bool, Path],
    *,
    rounds: int,
    seconds: float,
    proxy_core: int | None,
    load_core: int | None,
    line: RoundLine,
) -> None:
    """Every scenario on every variant once per round, starting with a different variant each round;
    each run printed with `line`, its result kept in the variant's `results`."""
    for variant in variants:
        for scenario in scenarios:
            variant.results.setdefault(scenario.name, [])
    for round_ in range(rounds):
        for scenario in scenarios:
            shift = round_ % len(variants)
            for variant in [*variants[shift:], *variants[:shift]]:  # rotate who goes first
                proc = variant.running
                result = run_wrk(
                    variant.url,
                    scripts[scenario.stream],
                    connections=scenario.connections,
                    seconds=seconds,
                    core=load_core,
                    proxy_pid=proc.pid,
                    proxy_core=proxy_core,
                    load_core=load_core,
                )
                if result.errors:
                    raise BenchBroken(
                        f"{variant.process} {scenario.name}: {result.non_2xx} non-2xx, "
                        f"socket errors {result.socket_errors}; log {proc.log}"
                    )
                print(line(round_, variant, scenario, result), flush=True)
                variant.results[scenario.name].append(result)
                time.sleep(0.3)


def medians(variants: Sequence[Variant], scenario: str, figure: Callable[[WrkResult], float]) -> dict[str, float]:
    """Each variant's median of `figure` over its runs of `scenario`."""
    return {v.name: statistics.median(figure(r) for r in v.results[scenario]) for v in variants}


def noise_pct(variants: Sequence[Variant], scenario: str) -> float:
    """The most that other processes took of the proxy's core during any run of `scenario`."""
    return max(r.proxy_core_other_pct for v in variants for r in v.results[scenario])


def write_report(name: str, report: dict[str, Any]) -> dict[str, Any]:
    """`report`, stamped with the time, written to bench/results/<name>.json."""
    report = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **report}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def parser_for(prog: str, doc: str, *, duration: float = 10.0, quick_duration: float = 3.0) -> argparse.ArgumentParser:
    """The command line every A/B bench shares: --duration, --quick, --rounds."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"seconds per run (default {duration:g}, {quick_duration:g} with --quick)",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    return parser


def run_main(bench: Callable[[], object]) -> int:
    """Runs `bench`; 1 (with the reason on stderr) when it broke, 0 otherwise."""
    try:
        bench()
    except BenchBroken as exc:
        print(f"bench: BROKEN: {exc}", file=sys.stderr)
        return 1
    return 0


def start_fakes(
    procs: list[Proc], tmpdir: Path, *, python: str, core: int | None, logs: Path, env: dict[str, str]
) -> tuple[Path, int]:
    """The fake provider and the OTLP sink on `core` (appended to `procs`); the snapshot routing to that
    provider, written in `tmpdir`, and the sink's port."""
    from bench.sidecar_setup import snapshot_for

    upstream_port, sink_port = start_upstream_and_sink(procs, python=python, core=core, logs=logs, env=env)
    snapshot = tmpdir / "snapshot.json"
    snapshot.write_text(json.dumps(snapshot_for(upstream_port)))
    return snapshot, sink_port


def measure(
    variants: Sequence[Variant],
    procs: list[Proc],
    scenarios: tuple[Scenario, ...],
    scripts: dict[bool, Path],
    *,
    logs: Path,
    warmup: float,
    warmup_connections: int,
    rounds: int,
    seconds: float,
    proxy_core: int | None,
    load_core: int | None,
    line: RoundLine,
    python: str = sys.executable,
) -> None:
    """The variants started (`start_sidecars`), warmed (`warm_up`) and measured (`run_rounds`)."""
    start_sidecars(variants, procs, core=proxy_core, logs=logs, python=python)
    warm_up(variants, scripts, seconds=warmup, connections=warmup_connections, load_core=load_core)
    run_rounds(variants, scenarios, scripts, rounds=rounds, seconds=seconds, proxy_core=proxy_core,
               load_core=load_core, line=line)  # fmt: skip


def on_off_table(variants: Sequence[Variant], scenarios: tuple[Scenario, ...], *, p50: bool) -> list[dict[str, Any]]:
    """For two variants named `off` and `on`: a row per scenario (median req/s, CPU µs per request and, with
    `p50`, p50 latency, each for both; on's ratio and what it adds; the noise), printed as a table."""
    print(
        f"{'scenario':<10}| {'off rps':>8} {'on rps':>8} | {'on/off':>6} | "
        + (f"{'p50 ms off/on':>15} | " if p50 else "")
        + f"{'CPU us/req off/on':>17} | noise"
    )
    rows = []
    for scenario in scenarios:
        rps = medians(variants, scenario.name, lambda r: r.rps)
        latency = medians(variants, scenario.name, lambda r: r.p50_ms)
        cpu = medians(variants, scenario.name, lambda r: r.proxy_cpu_us_per_request)
        noise = noise_pct(variants, scenario.name)
        row: dict[str, Any] = {"scenario": scenario.name, "rps": rps}
        if p50:
            row["p50_ms"] = latency
        row |= {"cpu_us_per_request": cpu, "ratio_on": rps["on"] / rps["off"]}
        if p50:
            row["p50_ms_added"] = latency["on"] - latency["off"]
        row |= {"cpu_us_added": cpu["on"] - cpu["off"], "max_noise_pct": noise}
        rows.append(row)
        print(
            f"{scenario.name:<10}| {rps['off']:>8,.0f} {rps['on']:>8,.0f} | {row['ratio_on']:>6.3f} "
            + (f"| {latency['off']:>6.3f} /{latency['on']:>6.3f} " if p50 else "")
            + f"| {cpu['off']:>7.0f} /{cpu['on']:>6.0f}  | {noise:>4.0f}%"
        )
    return rows


def ab_main(
    prog: str,
    doc: str,
    run: Callable[..., object],
    argv: list[str] | None,
    *,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    run_options: Callable[[argparse.Namespace], dict[str, Any]] | None = None,
) -> int:
    """The command line of an A/B bench on the shared options (and those `add_arguments` adds): `run` called with
    the duration, warm-up, rounds and cores (and what `run_options` makes of the arguments); 1 if it broke."""
    from bench.sidecar_setup import choose_cores

    parser = parser_for(prog, doc)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    duration = args.duration or (3.0 if args.quick else 10.0)
    proxy_core, load_core, cores = choose_cores()
    print(cores)
    options = run_options(args) if run_options is not None else {}
    return run_main(
        lambda: run(
            duration=duration,
            warmup=1.0 if args.quick else 2.0,
            rounds=args.rounds,
            proxy_core=proxy_core,
            load_core=load_core,
            **options,
        )
    )
