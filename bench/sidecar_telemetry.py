"""What telemetry costs the sidecar: the same sidecar with telemetry off, on, and on with the
collector down, under wrk (part of `make bench`, after the baseline comparison).

- off:  OTEL_SDK_DISABLED=true (no spans, no metrics recorded)
- on:   every span sampled and exported, metrics recorded, served on /metrics and exported by
        OTLP every second (60x the default rate, to make the export's cost visible), to a sink
- down: as `on`, but the OTLP endpoint is a closed port: exports fail, queues fill, drops counted

Target: `on` and `down` keep >= 85 % of `off`'s requests/s. Each scenario runs
`rounds` times per sidecar, the order rotating, and the median is reported; the proxy's
CPU time per request is shown too (the event loop's and the export threads'), with the ratios it
implies, as it is less sensitive to other load on the machine; on a busy machine only
bench.sidecar_instructions (CPU instructions under valgrind) gives figures that hold still.

    python -m bench.sidecar_telemetry [--duration 10] [--quick] [--rounds 3] [--diagnose] [--before DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from bench.ab import (
    Scenario,
    Variant,
    ab_main,
    measure,
    medians,
    noise_pct,
    start_fakes,
    stopping,
    without_otel,
    write_report,
    wrk_scripts,
)
from bench.harness import ROOT, Proc, WrkResult, free_port

LOGS = ROOT / "bench" / "results" / "logs" / "telemetry"
SCENARIOS = (Scenario("plain@16", False, 16), Scenario("stream@16", True, 16))
MIN_RATIO = 0.85


def _admin_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def _sample_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def _line(round_: int, variant: Variant, scenario: Scenario, result: WrkResult) -> str:
    return (
        f"  round {round_ + 1} {variant.name:<5} {scenario.name:<9} {result.rps:>8,.0f} req/s "
        f"{result.proxy_cpu_us_per_request:>5.0f} us/req (loop "
        f"{result.proxy_loop_us_per_request:.0f}, export threads "
        f"{result.proxy_cpu_us_per_request - result.proxy_loop_us_per_request:.0f})"
        f"  (others on its core {result.proxy_core_other_pct:.0f}%)"
    )


def run_telemetry(
    *,
    duration: float,
    warmup: float,
    rounds: int,
    proxy_core: int | None,
    load_core: int | None,
    diagnose: bool = False,
    before: Path | None = None,
    python: str = sys.executable,
) -> dict[str, Any]:
    from bench.sidecar_setup import sink_stats

    procs: list[Proc] = []
    with stopping(procs), tempfile.TemporaryDirectory(prefix="modelway-bench-telemetry-") as tmp:
        tmpdir = Path(tmp)
        scripts = wrk_scripts(tmpdir)
        base_env = without_otel()
        snapshot, sink_port = start_fakes(procs, tmpdir, python=python, core=load_core, logs=LOGS, env=base_env)
        dead_port = free_port()
        on = {
            "OTEL_TRACES_SAMPLER": "always_on",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "OTEL_SERVICE_NAME": "modelway-proxy-bench",
        }
        envs = {
            "off": {"OTEL_SDK_DISABLED": "true"},
            "on": {**on, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"},
            "down": {
                **on,
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{dead_port}",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "2000",
            },
        }
        if diagnose:  # which part costs what: traces without metric export, metrics without traces
            envs["traces"] = {**envs["on"], "OTEL_METRICS_EXPORTER": "none"}
            envs["metrics"] = {**envs["on"], "OTEL_TRACES_EXPORTER": "none"}
        homes = dict.fromkeys(envs, ROOT)
        if before is not None:  # the same sidecars run from another checkout, in the same rounds
            for name in ("off", "on", "down"):
                envs[f"before-{name}"] = {**envs[name], "PYTHONPATH": str(before)}
                homes[f"before-{name}"] = before
        variants = [
            Variant(name, f"sidecar-{name}", snapshot, env={**base_env, **env}, cwd=homes[name])
            for name, env in envs.items()
        ]
        measure(variants, procs, SCENARIOS, scripts, logs=LOGS, warmup=warmup, warmup_connections=16, rounds=rounds,
                seconds=duration, proxy_core=proxy_core, load_core=load_core, line=_line, python=python)  # fmt: skip
        checks = {variant.name: _admin_metrics(variant.admin_port) for variant in variants}
        exported = sink_stats(sink_port)
    return _report(variants, checks, exported, duration=duration, rounds=rounds)


def _rows(variants: list[Variant], prefix: str = "") -> list[dict[str, Any]]:
    """One row per scenario for the sidecars named prefix + off / on / down (and diagnostics)."""
    chosen = [v for v in variants if v.name.startswith(prefix) and (prefix or not v.name.startswith("before-"))]

    def unprefixed(figures: dict[str, float]) -> dict[str, float]:
        return {name[len(prefix) :]: value for name, value in figures.items()}

    rows = []
    for scenario in SCENARIOS:
        med = unprefixed(medians(chosen, scenario.name, lambda r: r.rps))
        cpu = unprefixed(medians(chosen, scenario.name, lambda r: r.proxy_cpu_us_per_request))
        loop = unprefixed(medians(chosen, scenario.name, lambda r: r.proxy_loop_us_per_request))
        rows.append(
            {
                "scenario": scenario.name,
                "rps": med,
                "cpu_us_per_request": cpu,
                "loop_us_per_request": loop,
                # What the ratio would be on a quiet core, where requests/s is the inverse of CPU per request
                "cpu_ratio_on": cpu["off"] / cpu["on"] if cpu["on"] else 0.0,
                "cpu_ratio_down": cpu["off"] / cpu["down"] if cpu["down"] else 0.0,
                "max_noise_pct": noise_pct(chosen, scenario.name),
                "ratio_on": med["on"] / med["off"],
                "ratio_down": med["down"] / med["off"],
                "spread": {v.name: [round(r.rps) for r in v.results[scenario.name]] for v in chosen},
            }
        )
    return rows


def _print_rows(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'scenario':<10}| {'off rps':>8} {'on rps':>8} {'down rps':>8} | {'on/off':>6} {'down/off':>8} "
        f"| {'CPU us/req off/on/down':>22} | {'CPU on/off down/off':>19} | {'loop us/req off/on/down':>23} "
        f"| noise | verdict"
    )
    for row in rows:
        rps, cpu = row["rps"], row["cpu_us_per_request"]
        extra = [n for n in rps if n not in ("off", "on", "down")]
        if extra:
            print(
                "  diagnostic: "
                + ", ".join(
                    f"{n} {rps[n]:,.0f} req/s ({rps[n] / rps['off']:.3f} of off), {cpu[n]:.0f} us/req" for n in extra
                )
            )
        ok = row["ratio_on"] >= MIN_RATIO and row["ratio_down"] >= MIN_RATIO
        loop = row["loop_us_per_request"]
        print(
            f"{row['scenario']:<10}| {rps['off']:>8,.0f} {rps['on']:>8,.0f} {rps['down']:>8,.0f} "
            f"| {row['ratio_on']:>6.3f} {row['ratio_down']:>8.3f} "
            f"| {cpu['off']:>6.0f} /{cpu['on']:>5.0f} /{cpu['down']:>5.0f}    "
            f"| {row['cpu_ratio_on']:>9.3f} {row['cpu_ratio_down']:>9.3f} "
            f"| {loop['off']:>7.0f} /{loop['on']:>5.0f} /{loop['down']:>5.0f}    | {row['max_noise_pct']:>4.0f}% "
            f"| {'PASS' if ok else 'MISS'}"
        )


def _report(
    variants: list[Variant], metrics: dict[str, str], exported: dict[str, Any], *, duration: float, rounds: int
) -> dict[str, Any]:
    rows = _rows(variants)
    print()
    print(
        f"Telemetry cost: median of {rounds} runs x {duration:g} s; target: on and down keep >= "
        f"{MIN_RATIO:.0%} of off's req/s"
    )
    _print_rows(rows)
    before = _rows(variants, "before-") if any(v.name == "before-off" for v in variants) else None
    if before is not None:
        print("the same, for the code given with --before (measured in the same rounds):")
        _print_rows(before)
    print(
        "CPU on/off: off's CPU per request over on's, the requests/s ratio a quiet core would show (less "
        "sensitive to other load than req/s); loop: the event loop thread's share, the rest is the export threads"
    )
    dropped = {n: _sample_sum(t, "modelway_telemetry_dropped_total") for n, t in metrics.items()}
    requests = {n: _sample_sum(t, "modelway_requests_total") for n, t in metrics.items()}
    print(f"requests counted in /metrics: {requests}; telemetry dropped (spans + metric exports): {dropped}")
    print(f"OTLP sink received: {exported}")
    report = {
        "duration_seconds": duration,
        "rounds": rounds,
        "min_ratio": MIN_RATIO,
        "scenarios": rows,
        "before": before,
        "dropped": dropped,
        "requests": requests,
        "sink": exported,
    }
    return write_report("sidecar_telemetry", report)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="also run traces-only and metrics-only sidecars (no target; where the cost is)",
    )
    parser.add_argument(
        "--before",
        type=Path,
        metavar="DIR",
        help="also run off/on/down sidecars from this checkout (e.g. `git archive main | tar -x -C DIR`), "
        "in the same rounds: before and after measured alike",
    )


def main(argv: list[str] | None = None) -> int:
    return ab_main(
        "python -m bench.sidecar_telemetry",
        __doc__ or "",
        run_telemetry,
        argv,
        add_arguments=_add_arguments,
        run_options=lambda args: {"diagnose": args.diagnose, "before": args.before},
    )


if __name__ == "__main__":
    sys.exit(main())
