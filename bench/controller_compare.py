"""Controller benchmark runs side by side: `python -m bench.controller_compare A.json B.json ...`.

Each file is what `python -m bench.controller --out FILE` wrote; a label is the file's name
without `.json` (so name them e.g. `main-5000-a.json`, `branch-5000-a.json`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROWS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("sidecars / routes / workloads", lambda r: "{sidecars}/{routes}/{workloads}".format(**r["config"])),
    ("last ack p50 (ms)", lambda r: f"{r['latency_s']['last_ack_per_change']['p50'] * 1000:.0f}"),
    ("last ack p99 (ms)", lambda r: f"{r['latency_s']['last_ack_per_change']['p99'] * 1000:.0f}"),
    ("kubectl p50 (ms)", lambda r: f"{r['latency_s']['kubectl']['p50'] * 1000:.0f}"),
    ("controller CPU/change (ms)", lambda r: f"{_cpu_per_change(r) * 1000:.0f}"),
    ("RSS before sidecars (MB)", lambda r: f"{r['rss_bytes']['before_sidecars']['VmRSS'] / 1e6:.0f}"),
    ("RSS with sidecars (MB)", lambda r: f"{r['rss_bytes']['with_sidecars']['VmRSS'] / 1e6:.0f}"),
    ("RSS peak VmHWM (MB)", lambda r: f"{r['rss_bytes']['peak'] / 1e6:.0f}"),
    ("RSS per sidecar (KB)", lambda r: f"{_per_sidecar(r) / 1e3:.1f}"),
    ("clients connected in (s)", lambda r: f"{r['connect_seconds']:.1f}"),
    ("quiet after connect (s)", lambda r: f"{r['quiet_after_connect_seconds']:.0f}"),
    ("controller CPU connect->quiet (s)", lambda r: f"{r['cpu_seconds_connect_to_quiet']['controller']:.1f}"),
    ("apiserver+etcd CPU connect->quiet (s)", lambda r: f"{r['cpu_seconds_connect_to_quiet']['control_plane']:.1f}"),
    ("status writes + Events in the pass", lambda r: "{status_writes} + {events}".format(**r["status_pass"])),
    ("status pass ended after connect (s)", lambda r: f"{r['status_pass']['ended_after_connect_s']:.0f}"),
    (
        "controller CPU connect->pass end (s)",
        lambda r: f"{r['status_pass']['cpu_seconds_connect_to_end']['controller']:.1f}",
    ),
    (
        "apiserver+etcd CPU connect->pass end (s)",
        lambda r: f"{r['status_pass']['cpu_seconds_connect_to_end']['control_plane']:.1f}",
    ),
    ("others' CPU during changes (%)", lambda r: f"{_others(r):.0f}"),
    ("load average at the end", lambda r: " ".join(f"{v:.1f}" for v in r.get("load_average", [])) or "?"),
)


def _cpu_per_change(result: dict[str, Any]) -> float:
    cfg = result["config"]
    return float(result["controller_cpu_seconds_during_changes"]) / (cfg["changes"] + cfg["warmup"])


def _per_sidecar(result: dict[str, Any]) -> float:
    rss = result["rss_bytes"]
    return float(rss["with_sidecars"]["VmRSS"] - rss["before_sidecars"]["VmRSS"]) / result["config"]["sidecars"]


def _others(result: dict[str, Any]) -> float:
    m = result["machine_during_changes"]
    return 100 * m["other_processes_cpu_seconds"] / (m["wall_seconds"] * (result["machine"]["cpus"] or 1))


def table(runs: dict[str, dict[str, Any]]) -> list[str]:
    width = max(len(label) for label, _ in ROWS)
    columns = [max(len(name), 8) for name in runs]
    lines = [" " * width + "  " + "  ".join(f"{name:>{w}}" for name, w in zip(runs, columns, strict=True))]
    for label, cell in ROWS:
        values = []
        for result in runs.values():
            try:
                values.append(cell(result))
            except (KeyError, TypeError, ZeroDivisionError):
                values.append("-")
        lines.append(f"{label:<{width}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(values, columns, strict=True)))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.controller_compare", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="JSON files written by python -m bench.controller")
    args = parser.parse_args(argv)
    runs = {path.name.removesuffix(".json"): json.loads(path.read_text()) for path in args.results}
    print("\n".join(table(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
