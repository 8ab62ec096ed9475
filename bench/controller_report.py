"""The controller benchmark's report: the table, PASS/MISS against the targets, profiles."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.controller_setup import NAMESPACE, say

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "bench" / "results" / "logs"

TARGET_LAST_ACK_P99_S = 1.0
TARGET_RSS_BYTES = 200_000_000
MEASURED_ROUTE = "route-0"


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
    say(line)
    t_lat, t_rss = targets["last_ack_p99_s"], targets["rss_bytes"]
    say(
        f"{'PASS' if t_lat['pass'] else 'MISS'}  p99 time to the last ack {ms(t_lat['value']).strip()} "
        f"(target < {t_lat['target'] * 1000:.0f} ms)"
    )
    say(
        f"{'PASS' if t_rss['pass'] else 'MISS'}  controller peak RSS (VmHWM) {mb(t_rss['value']).strip()} "
        f"(target < {t_rss['target'] / 1e6:.0f} MB)"
    )
    say(line)


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
