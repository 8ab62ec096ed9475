"""The controller benchmark's report: the table, PASS/MISS against the targets, profiles."""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.controller_processes import percentile
from bench.controller_setup import NAMESPACE, ROUTES_PER_NAMESPACE, providers, say

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "bench" / "results" / "logs"

# At 1,000 sidecars (100 workloads, 1,000 routes) and at 5,000 (500 workloads, 5,000 routes).
TARGET_LAST_ACK_P99_S = 1.0
TARGET_RSS_BYTES = {1000: 200_000_000, 5000: 300_000_000}
TARGET_CPU_PER_CHANGE_S = 0.4  # at 5,000 sidecars; a tenth of the sidecars should cost a tenth
TARGET_QUIET_S = 10.0  # from the last sidecar's first snapshot to a quiet controller and the end of its status pass
MEASURED_ROUTE = "route-0"


def targets(
    *, last_ack_p99_s: float, rss_peak: int, cpu_per_change_s: float, quiet_s: float, sidecars: int
) -> dict[str, dict[str, Any]]:
    """Each target with its value and whether it passed; the RSS target of the nearest scale at or above."""
    rss_target = next((t for n, t in sorted(TARGET_RSS_BYTES.items()) if sidecars <= n), max(TARGET_RSS_BYTES.values()))
    return {
        "last_ack_p99_s": {
            "target": TARGET_LAST_ACK_P99_S,
            "value": last_ack_p99_s,
            "pass": last_ack_p99_s < TARGET_LAST_ACK_P99_S,
        },
        "rss_bytes": {"target": rss_target, "value": rss_peak, "pass": rss_peak < rss_target},
        "cpu_per_change_s": {
            "target": TARGET_CPU_PER_CHANGE_S,
            "value": cpu_per_change_s,
            "pass": cpu_per_change_s < TARGET_CPU_PER_CHANGE_S,
        },
        "quiet_after_connect_s": {"target": TARGET_QUIET_S, "value": quiet_s, "pass": quiet_s < TARGET_QUIET_S},
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def mb(value: int) -> str:
    return f"{value / 1e6:6.1f} MB"


def tree_state() -> dict[str, Any]:
    """Which code was measured: the commit, and files of the controller's import closure edited since."""

    def git(*argv: str) -> str:
        try:
            return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = git("status", "--porcelain", "--", "controller", "proxy/snapshot").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted": [line[3:] for line in changed]}


def summarise(
    args: argparse.Namespace,
    *,
    changes: list[dict[str, Any]],
    route_status: dict[str, Any],
    rss_idle: dict[str, int],
    rss_connected: dict[str, int],
    rss_after: dict[str, int],
    setup_seconds: float,
    controller_start: float,
    connect_seconds: float,
    connect_retries: int,
    settle_seconds: float,
    cpu_connect: tuple[float, float],
    status_pass: dict[str, Any],
    cpu_changes: float,
    cpu_clients: float,
    banner: str,
    snapshot: dict[str, Any],
    machine: dict[str, float],
) -> dict[str, Any]:
    measured = [c for c in changes if not c["warmup"]]
    every_ack = [a for c in measured for a in c["acks_s"]]
    last_acks = [c["last_ack_s"] for c in measured]
    kubectl = [c["kubectl_s"] for c in measured]
    rss_peak = max(rss_after["VmHWM"], rss_connected["VmHWM"])
    result: dict[str, Any] = {
        "benchmark": "controller: kubectl apply of a ModelRoute -> last sidecar ACK",
        "config": {
            "sidecars": args.sidecars,
            "routes": args.routes,
            "changes": args.changes,
            "warmup": args.warmup,
            "workloads": args.workloads,
            "concurrency": args.concurrency,
            "profiled": args.profile,
            "follower": args.follower,
            "namespaces": max(1, math.ceil(args.routes / ROUTES_PER_NAMESPACE)),
            "providers_per_namespace": len(providers("x")),
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "tree": tree_state(),
        "load_average": list(os.getloadavg()),
        "controller_banner": banner,
        "measured_route_status": route_status,
        "setup_seconds": round(setup_seconds, 1),
        "controller_start_seconds": round(controller_start, 2),
        "connect_seconds": connect_seconds,
        "connect_retries": connect_retries,
        "quiet_after_connect_seconds": round(settle_seconds, 1),
        "cpu_seconds_connect_to_quiet": {
            "controller": round(cpu_connect[0], 1),
            "control_plane": round(cpu_connect[1], 1),
        },
        "status_pass": status_pass,
        "latency_s": {
            "all_acks": {
                "n": len(every_ack),
                "p50": percentile(every_ack, 50),
                "p99": percentile(every_ack, 99),
                "max": max(every_ack, default=math.nan),
            },
            "last_ack_per_change": {
                "n": len(last_acks),
                "p50": percentile(last_acks, 50),
                "p99": percentile(last_acks, 99),
                "max": max(last_acks, default=math.nan),
            },
            "kubectl": {
                "p50": percentile(kubectl, 50),
                "p99": percentile(kubectl, 99),
                "max": max(kubectl, default=math.nan),
            },
        },
        "snapshot_message_bytes": snapshot.get("snapshot_bytes"),
        "websocket_compression": snapshot.get("compression"),
        "controller_cpu_seconds_during_changes": round(cpu_changes, 2),
        "clients_cpu_seconds_during_changes": round(cpu_clients, 2),
        "machine_during_changes": {
            "wall_seconds": round(machine["wall"], 1),
            "busy_cpu_seconds": round(machine["busy"], 1),
            "this_benchmark_cpu_seconds": round(machine["ours"], 1),
            "other_processes_cpu_seconds": round(max(0.0, machine["busy"] - machine["ours"]), 1),
        },
        "rss_bytes": {
            "before_sidecars": rss_idle,
            "with_sidecars": rss_connected,
            "after_changes": rss_after,
            "peak": rss_peak,
            "per_sidecar": round((rss_connected["VmRSS"] - rss_idle["VmRSS"]) / max(1, args.sidecars)),
        },
        "controller_cpu_ms_per_change": round(cpu_changes / max(1, len(changes)) * 1000, 1),
        "targets": targets(
            last_ack_p99_s=percentile(last_acks, 99),
            rss_peak=rss_peak,
            cpu_per_change_s=cpu_changes / max(1, len(changes)),
            # Not quiet while its own writes wait on the API server: the later of the two.
            quiet_s=max(settle_seconds, status_pass.get("ended_after_connect_s", 0.0)),
            sidecars=args.sidecars,
        ),
        "changes": [
            {k: (round(v, 6) if isinstance(v, float) else v) for k, v in c.items() if k != "acks_s"} for c in changes
        ],
    }
    return result


def report(result: dict[str, Any]) -> None:
    cfg, lat, rss, targets = result["config"], result["latency_s"], result["rss_bytes"], result["targets"]
    line = "-" * 78
    say("")
    say(line)
    say(
        f"controller push: {cfg['sidecars']} sidecar streams, {cfg['routes']} routes "
        f"in {cfg['namespaces']} namespaces, {cfg['workloads']} workloads"
        + (", controller NOT leading (no status writes)" if cfg["follower"] else ", controller leading (writes status)")
    )
    tree = result["tree"]
    say(
        f"{cfg['changes']} measured changes (+{cfg['warmup']} warm-up), {result['machine']['cpus']} CPUs, "
        f"code at {tree['commit'] or '?'}{' + uncommitted controller edits' if tree['uncommitted'] else ''}"
        + ("   ** controller profiled: slower than real **" if cfg["profiled"] else "")
    )
    say(line)
    say(f"{'change':>6}  {'kubectl':>9}  {'first ack':>9}  {'p50':>9}  {'p99':>9}  {'last ack':>9}  {'extra':>5}")
    for c in result["changes"]:
        if c["warmup"]:
            continue
        say(
            f"{c['index'] - cfg['warmup'] + 1:>6}  {c['kubectl_s'] * 1000:7.1f}ms  {c['first_ack_s'] * 1000:7.1f}ms  "
            f"{c['p50_s'] * 1000:7.1f}ms  {c['p99_s'] * 1000:7.1f}ms  {c['last_ack_s'] * 1000:7.1f}ms  "
            f"{c['extra_snapshots']:>5}"
        )
    say(line)
    a, last, k = lat["all_acks"], lat["last_ack_per_change"], lat["kubectl"]
    say(
        f"per-client ack latency (t0 = kubectl start), {a['n']:>5} acks:  p50 {ms(a['p50'])}  p99 {ms(a['p99'])}  "
        f"max {ms(a['max'])}"
    )
    say(
        f"time to the LAST ack of a change, {last['n']:>5} changes:         "
        f"p50 {ms(last['p50'])}  p99 {ms(last['p99'])}  max {ms(last['max'])}"
    )
    say(
        f"  of which kubectl apply itself (start to exit):        p50 {ms(k['p50'])}  p99 {ms(k['p99'])}  "
        f"max {ms(k['max'])}"
    )
    say("  (includes the controller's 100 ms debounce by design; nothing subtracted)")
    for label, key in (
        ("before any sidecar", "before_sidecars"),
        (f"with {cfg['sidecars']} sidecars", "with_sidecars"),
        ("after the changes", "after_changes"),
    ):
        say(f"controller RSS {label + ':':<24} VmRSS {mb(rss[key]['VmRSS'])}   VmHWM {mb(rss[key]['VmHWM'])}")
    if "per_sidecar" in rss:
        say(f"controller RSS per connected sidecar: {rss['per_sidecar'] / 1e3:.1f} KB")
    n = cfg["changes"] + cfg["warmup"]
    say(
        f"CPU per change: controller {result['controller_cpu_seconds_during_changes'] / n * 1000:.0f} ms, "
        f"clients process {result['clients_cpu_seconds_during_changes'] / n * 1000:.0f} ms; snapshot message "
        f"{'-'.join(str(b) for b in sorted(set(result['snapshot_message_bytes'])))} bytes, "
        f"permessage-deflate {'on' if any(result['websocket_compression']) else 'off'}"
    )
    m = result["machine_during_changes"]
    cpus = result["machine"]["cpus"] or 1
    say(
        f"machine during the changes: {100 * m['busy_cpu_seconds'] / (m['wall_seconds'] * cpus):.0f}% of {cpus} CPUs "
        f"busy; this benchmark's processes {100 * m['this_benchmark_cpu_seconds'] / (m['wall_seconds'] * cpus):.0f}%, "
        f"other processes {100 * m['other_processes_cpu_seconds'] / (m['wall_seconds'] * cpus):.0f}%"
        + (
            "  ** others competed for CPU: figures are pessimistic **"
            if m["other_processes_cpu_seconds"] > 0.1 * m["wall_seconds"]
            else ""
        )
    )
    if result["measured_route_status"].get("programmed"):
        rs = result["measured_route_status"]
        say(
            f"{NAMESPACE}/{MEASURED_ROUTE} status after the run: generation {rs['generation']}, "
            f"Programmed={rs['programmed']}"
        )
    say(
        f"setup {result['setup_seconds']:.0f} s, controller start {result['controller_start_seconds']:.1f} s, "
        f"clients connected in {result['connect_seconds']:.1f} s, "
        f"controller quiet {result['quiet_after_connect_seconds']:.0f} s later"
    )
    if "cpu_seconds_connect_to_quiet" in result:
        cpu = result["cpu_seconds_connect_to_quiet"]
        say(
            f"CPU from the first connection to quiet: controller {cpu['controller']:.1f} s, "
            f"etcd + kube-apiserver {cpu['control_plane']:.1f} s"
        )
    if "status_pass" in result:
        sp = result["status_pass"]
        say(
            f"status pass (the API server's counts, controller start to pass end): {sp['status_writes']} "
            f"status writes and {sp['events']} Events ({sp['by_last_connection']['status_writes']} and "
            f"{sp['by_last_connection']['events']} by the last sidecar's connection); the last of them "
            f"{sp['ended_after_connect_s']:.0f} s after the clients connected (2 s resolution; the controller "
            f"was quiet at {result['quiet_after_connect_seconds']:.0f} s)"
        )
        cpu = sp["cpu_seconds_connect_to_end"]
        say(
            f"CPU from the first connection to the pass's end: controller {cpu['controller']:.1f} s, "
            f"etcd + kube-apiserver {cpu['control_plane']:.1f} s"
        )
    say(line)
    for verdict in target_lines(targets):
        say(verdict)
    say(line)


def target_lines(targets: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for key, label, show in (
        ("last_ack_p99_s", "p99 time to the last ack", lambda v: f"{v * 1000:.0f} ms"),
        ("rss_bytes", "controller peak RSS (VmHWM)", lambda v: f"{v / 1e6:.0f} MB"),
        ("cpu_per_change_s", "controller CPU per change", lambda v: f"{v * 1000:.0f} ms"),
        (
            "quiet_after_connect_s",
            "controller quiet, status pass done, after the sidecars connected",
            lambda v: f"{v:.0f} s",
        ),
    ):
        if key in targets:
            t = targets[key]
            lines.append(
                f"{'PASS' if t['pass'] else 'MISS'}  {label} {show(t['value'])} (target < {show(t['target'])})"
            )
    return lines


def print_profile(path: Path, limit: int = 30) -> None:
    import pstats

    if not path.exists():
        say(f"no profile at {path}")
        return
    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative")
    say(f"\ncontroller profile ({path}), top {limit} by cumulative time:")
    stats.print_stats(limit)
    stats.sort_stats("tottime")
    say(f"top {limit} by own time:")
    stats.print_stats(limit)


def print_samples(path: Path, limit: int = 25) -> None:
    """Summarise py-spy's collapsed stacks: own and inclusive samples per function."""
    if not path.exists():
        say(f"no samples at {path} (see {LOGS / 'py-spy.log'})")
        return
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f and not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    if not total:
        say("py-spy collected no samples")
        return

    def show(title: str, table: dict[str, int], keep: Callable[[str], bool]) -> None:
        say(f"\n{title}")
        rows = sorted(((n, f) for f, n in table.items() if keep(f)), reverse=True)[:limit]
        for n, frame in rows:
            say(f"  {100 * n / total:5.1f}%  {frame}")

    say(f"\ncontroller samples during the changes (py-spy, {total} samples of busy threads; {path}):")
    show("hottest by own time (any code):", own, lambda f: True)
    show(
        "hottest controller/ functions, inclusive of what they call:",
        inclusive,
        lambda f: "(controller/" in f or "(proxy/snapshot" in f,
    )
