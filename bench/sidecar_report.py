"""`python -m bench.sidecar`'s report: the sidecar/baseline comparison, PASS/MISS against the
targets, the printed table and bench/results/sidecar.json."""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.harness import ROOT, WrkResult
from bench.sidecar_setup import SCENARIOS, cpu_model

RESULTS = ROOT / "bench" / "results"

# The targets from the issue.
MIN_RPS_RATIO_AT_16 = 0.6
MAX_P50_DELTA_MS_AT_1 = 0.3
MAX_RSS_RATIO = 1.1


@dataclass
class ProxyRun:
    name: str
    scenarios: dict[str, WrkResult]
    peak_rss_kb: int
    rss_after_kb: int
    idle_rss_kb: int = 0
    problems: list[str] = field(default_factory=list)  # errors seen under load: the run is broken


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def compare(baseline: ProxyRun, sidecar: ProxyRun) -> dict[str, Any]:
    rows = []
    for scenario, _, connections in SCENARIOS:
        b, s = baseline.scenarios[scenario], sidecar.scenarios[scenario]
        row: dict[str, Any] = {
            "scenario": scenario,
            "connections": connections,
            "rps_ratio": s.rps / b.rps if b.rps else 0.0,
            "p50_delta_ms": s.p50_ms - b.p50_ms,
            "p99_delta_ms": s.p99_ms - b.p99_ms,
            "cpu_per_request_ratio": (
                s.proxy_cpu_us_per_request / b.proxy_cpu_us_per_request if b.proxy_cpu_us_per_request else 0.0
            ),
        }
        if connections >= 16:
            row["target"] = f"rps ratio >= {MIN_RPS_RATIO_AT_16}"
            row["met"] = row["rps_ratio"] >= MIN_RPS_RATIO_AT_16
        elif connections == 1:
            row["target"] = f"p50 delta <= {MAX_P50_DELTA_MS_AT_1} ms"
            row["met"] = row["p50_delta_ms"] <= MAX_P50_DELTA_MS_AT_1
        rows.append(row)
    rss_ratio = sidecar.peak_rss_kb / baseline.peak_rss_kb
    return {
        "scenarios": rows,
        "rss_ratio": rss_ratio,
        "rss_target": f"peak RSS ratio <= {MAX_RSS_RATIO}",
        "rss_met": rss_ratio <= MAX_RSS_RATIO,
    }


def print_table(baseline: ProxyRun, other: ProxyRun, comparison: dict[str, Any], *, targets: bool) -> None:
    rule = "-" * 123
    label = f"{other.name} rps"
    print(rule)
    print(
        f"{'scenario':<10}| {'baseline rps':>12} {'p50':>7} {'p99':>7} | {label:>12} {'p50':>7} {'p99':>7} "
        f"| {'rps ratio':>9} {'p50 delta':>9} | {'CPU us/req b/s':>14} |{' target' if targets else ''}"
    )
    print(rule)
    for row in comparison["scenarios"]:
        b, s = baseline.scenarios[row["scenario"]], other.scenarios[row["scenario"]]
        target = f" {row['target']}: {verdict(row['met'])}" if targets and "target" in row else ""
        print(
            f"{row['scenario']:<10}| {b.rps:>12,.0f} {b.p50_ms:>7.3f} {b.p99_ms:>7.3f} "
            f"| {s.rps:>12,.0f} {s.p50_ms:>7.3f} {s.p99_ms:>7.3f} "
            f"| {row['rps_ratio']:>9.2f} {row['p50_delta_ms']:>+9.3f} "
            f"| {b.proxy_cpu_us_per_request:>6.0f}/{s.proxy_cpu_us_per_request:<7.0f} |{target}"
        )
    print(rule)
    idle_ratio = other.idle_rss_kb / baseline.idle_rss_kb if baseline.idle_rss_kb else 0.0
    print(
        f"idle RSS: baseline {baseline.idle_rss_kb / 1024:.1f} MiB, {other.name} {other.idle_rss_kb / 1024:.1f} MiB,"
        f" ratio {idle_ratio:.2f}"
    )
    rss = (
        f"RSS under load (peak, VmHWM): baseline {baseline.peak_rss_kb / 1024:.1f} MiB, {other.name} "
        f"{other.peak_rss_kb / 1024:.1f} MiB, ratio {comparison['rss_ratio']:.2f}"
    )
    print(rss + (f"  [{comparison['rss_target']}: {verdict(comparison['rss_met'])}]" if targets else ""))


def print_report(
    runs: dict[str, ProxyRun],
    comparisons: dict[str, dict[str, Any]],
    *,
    duration: float,
    cores: str,
    sink: dict[str, Any],
) -> None:
    baseline, sidecar, comparison = runs["baseline"], runs["sidecar"], comparisons["sidecar"]
    print()
    print(
        f"Modelway sidecar vs bare aiohttp pass-through  (wrk -t1, {duration:g} s per scenario; latency in ms;"
        " CPU = the proxy's CPU time per request)"
    )
    print(cores)
    print_table(baseline, sidecar, comparison, targets=True)
    print(
        f"OTLP sink: {sink.get('requests', 0)} export requests, {sink.get('bytes', 0) / 1024:.0f} KiB of spans "
        "received from the sidecar"
    )
    if "untraced" in runs:
        print()
        print("diagnostic, no target: the same sidecar with tracing off (OTEL_SDK_DISABLED=true)")
        print_table(baseline, runs["untraced"], comparisons["untraced"], targets=False)
    noise = max(r.proxy_core_other_pct for run in runs.values() for r in run.scenarios.values())
    if noise > 5:
        print(
            f"NOTE: other processes took up to {noise:.0f}% of the proxy's core during a run: the machine was "
            "not idle, so the figures are noisy; run again on a quiet machine"
        )
    missed = [r["scenario"] for r in comparison["scenarios"] if r.get("met") is False]
    if not comparison["rss_met"]:
        missed.append("rss")
    print("targets: " + ("all met" if not missed else "MISSED: " + ", ".join(missed)))
    for run in runs.values():
        for problem in run.problems:
            print(f"BROKEN: {problem}")
    print(f"results: {RESULTS / 'sidecar.json'}")


def write_json(
    runs: dict[str, ProxyRun],
    comparisons: dict[str, dict[str, Any]],
    *,
    duration: float,
    warmup: float,
    proxy_core: int | None,
    load_core: int | None,
    cores: str,
    exported: dict[str, Any],
    extra_env: dict[str, str],
    problems: list[str],
) -> None:
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
        },
        "duration_seconds": duration,
        "warmup_seconds": warmup,
        "cores": {"proxy": proxy_core, "load": load_core, "note": cores},
        "targets": {
            "min_rps_ratio_at_16": MIN_RPS_RATIO_AT_16,
            "max_p50_delta_ms_at_1": MAX_P50_DELTA_MS_AT_1,
            "max_rss_ratio": MAX_RSS_RATIO,
        },
        "runs": {
            name: {
                "idle_rss_kb": r.idle_rss_kb,
                "peak_rss_kb": r.peak_rss_kb,
                "rss_after_kb": r.rss_after_kb,
                "scenarios": {k: asdict(v) for k, v in r.scenarios.items()},
            }
            for name, r in runs.items()
        },
        "comparison": comparisons["sidecar"],
        "comparison_untraced": comparisons.get("untraced"),
        "otlp_sink": exported,
        "sidecar_env": extra_env,
        "problems": problems,
    }
    (RESULTS / "sidecar.json").write_text(json.dumps(report, indent=2) + "\n")
