"""What the access log costs the sidecar: the same sidecar with `--access-log=on` (the default: a
JSON line per request, written to the log file the harness keeps, as a pod's stdout would be)
and `--access-log=off`, under wrk (part of `make bench`, after the telemetry comparison).

Both run with telemetry as in production (traces sampled and exported to a sink, metrics on).
Each scenario runs `rounds` times per sidecar, the order alternating, and the median is
reported, with the proxy's CPU time per request (less sensitive to other load on the machine).

    python -m bench.sidecar_access_log [--duration 10] [--quick] [--rounds 3]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.ab import (
    Scenario,
    Variant,
    ab_main,
    measure,
    on_off_table,
    start_fakes,
    stopping,
    telemetry_on,
    without_otel,
    write_report,
    wrk_scripts,
)
from bench.harness import ROOT, BenchBroken, Proc, WrkResult

LOGS = ROOT / "bench" / "results" / "logs" / "access_log"
SCENARIOS = (Scenario("plain@16", False, 16), Scenario("stream@16", True, 16))
VARIANTS = {"off": ["--access-log=off"], "on": ["--access-log=on"]}


def _line(round_: int, variant: Variant, scenario: Scenario, result: WrkResult) -> str:
    return (
        f"  round {round_ + 1} access log {variant.name:<3} {scenario.name:<9} {result.rps:>8,.0f} req/s "
        f"{result.proxy_cpu_us_per_request:>5.0f} us/req  (others on its core "
        f"{result.proxy_core_other_pct:.0f}%)"
    )


def run_access_log(
    *,
    duration: float,
    warmup: float,
    rounds: int,
    proxy_core: int | None,
    load_core: int | None,
    python: str = sys.executable,
) -> dict[str, Any]:
    procs: list[Proc] = []
    with stopping(procs), tempfile.TemporaryDirectory(prefix="modelway-bench-access-") as tmp:
        tmpdir = Path(tmp)
        scripts = wrk_scripts(tmpdir)
        base_env = without_otel()
        snapshot, sink_port = start_fakes(procs, tmpdir, python=python, core=load_core, logs=LOGS, env=base_env)
        env = telemetry_on(base_env, sink_port)
        variants = [
            Variant(name, f"sidecar-access-{name}", snapshot, flags=flags, env=env) for name, flags in VARIANTS.items()
        ]
        measure(variants, procs, SCENARIOS, scripts, logs=LOGS, warmup=warmup, warmup_connections=16, rounds=rounds,
                seconds=duration, proxy_core=proxy_core, load_core=load_core, line=_line, python=python)  # fmt: skip
        off, on = variants
        lines = _access_lines(on.running.log), _access_lines(off.running.log)
    if not lines[0] or lines[1]:
        raise BenchBroken(f"access lines written: {lines[0]} with the log on, {lines[1]} with it off")
    return _report(variants, lines_on=lines[0], duration=duration, rounds=rounds)


def _access_lines(log: Path) -> int:
    with log.open("rb") as text:
        return sum(1 for line in text if line.startswith(b'{"time":'))


def _report(variants: list[Variant], *, lines_on: int, duration: float, rounds: int) -> dict[str, Any]:
    print()
    print(f"Access log cost: median of {rounds} runs x {duration:g} s, telemetry on in both")
    rows = on_off_table(variants, SCENARIOS, p50=False)
    print(f"access lines written by the 'on' sidecar: {lines_on:,}")
    report = {"duration_seconds": duration, "rounds": rounds, "scenarios": rows, "lines_on": lines_on}
    return write_report("sidecar_access_log", report)


def main(argv: list[str] | None = None) -> int:
    return ab_main("python -m bench.sidecar_access_log", __doc__ or "", run_access_log, argv)


if __name__ == "__main__":
    sys.exit(main())
