"""What a snapshot costs to take in: parse (validate) it, write its wire form, hash its content.

A sidecar parses every snapshot it is pushed, and the controller writes and hashes one per
workload. Rows: a snapshot of N routes (each with two rules, headers, fallbacks, one with an
experiment) over N/10 providers, and a policy with denials and limits; the median of `--runs`
runs, per snapshot and per route, and the memory the parsed snapshot holds (tracemalloc).

`--against REV` loads the snapshot of a git revision (the package `proxy/snapshot/`, or the single
file `proxy/snapshot.py` of older ones) and runs the same rows on it, in the same process. `wire KiB`
is the size of the JSON the controller sends (`to_wire`, compact).

    python -m bench.snapshot_parse [--routes 1000] [--runs 7] [--against REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import proxy.snapshot

ROOT = Path(__file__).resolve().parents[1]


def snapshot_data(routes: int) -> dict[str, Any]:
    providers = [
        {"name": f"ns.p{i}", "type": "openai", "baseUrl": f"https://p{i}.example.com/v1", "apiKey": f"sk-{i:08d}"}
        for i in range(max(1, routes // 10))
    ]

    def backend(i: int, model: str, weight: int = 1) -> dict[str, Any]:
        return {"provider": providers[i % len(providers)]["name"], "model": model, "weight": weight}

    route_list = []
    for i in range(routes):
        arms = [{"name": "control", "backends": [backend(i, "a")]}, {"name": "b", "backends": [backend(i + 1, "b")]}]
        rules = [
            {
                "name": "beta",
                "matchHeaders": [{"name": "x-tier", "regex": "^beta-[0-9]+$"}],
                "backends": [backend(i, "a"), backend(i + 1, "b")],
                "experiment": {"name": f"ns/r{i}/beta@00000000", "arms": arms, "stickyHeader": "x-user"},
            },
            {
                "name": "default",
                "backends": [backend(i, "a", 3), backend(i + 2, "c")],
                "fallbacks": [backend(i + 3, "d")],
                "retry": {"attempts": 3, "backoffBaseSeconds": 0.2},
                "timeouts": {"totalSeconds": 60.0, "firstTokenSeconds": 10.0},
            },
        ]
        route_list.append({"name": f"ns/r{i}", "model": f"model-{i}", "rules": rules})
    denial = {"policy": "ModelPolicy ns/eu", "reason": "outside the EU"}
    policy = {
        "workload": "ns/app",
        "policies": ["ModelPolicy ns/eu"],
        "deniedBackends": [
            {"provider": p["name"], "model": "a", "dataClasses": ["personal", "restricted"], "denial": denial}
            for p in providers
        ],
        "limits": [
            {"policy": "ModelPolicy ns/caps", "name": f"l{i}", "key": f"k{i}", "requestsPerMinute": 100 + i}
            for i in range(8)
        ],
    }
    return {"providers": providers, "routes": route_list, "policy": policy}


def median_seconds(run: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def held_bytes(build: Callable[[], object]) -> int:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = build()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return after - before


def rows(module: ModuleType, data: dict[str, Any], runs: int) -> dict[str, float]:
    parsed = module.parse_snapshot(data)
    versioned = {**data, "version": parsed.version}
    return {
        "parse": median_seconds(lambda: module.parse_snapshot(versioned), runs),
        "parse + version": median_seconds(lambda: module.parse_snapshot(data), runs),
        "to_wire": median_seconds(lambda: module.to_wire(parsed), runs),
        "content_version": median_seconds(lambda: module.content_version(parsed), runs),
        "held MiB": held_bytes(lambda: module.parse_snapshot(versioned)) / 2**20,
        "wire KiB": len(json.dumps(module.to_wire(parsed), separators=(",", ":"))) / 1024,
    }


def module_at(rev: str) -> ModuleType:
    """The snapshot contract as it was at `rev`, imported under another name (`snapshot_at_rev`)."""
    listing = _git("ls-tree", "--name-only", f"{rev}:proxy/snapshot/", check=False)
    where = Path(tempfile.mkdtemp())
    if not listing:  # before the package: one file
        (where / "snapshot_at_rev.py").write_text(_git("show", f"{rev}:proxy/snapshot.py"))
        location = where / "snapshot_at_rev.py"
    else:
        package = where / "snapshot_at_rev"
        package.mkdir()
        for name in listing.split():
            source = _git("show", f"{rev}:proxy/snapshot/{name}")
            (package / name).write_text(re.sub(r"\bproxy\.snapshot\b", "snapshot_at_rev", source))
        location = package / "__init__.py"
    spec = importlib.util.spec_from_file_location("snapshot_at_rev", location)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _git(*args: str, check: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, check=check, capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.snapshot_parse", description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--against", metavar="REV", help="also run the single-file snapshot module of this revision")
    args = parser.parse_args(argv)
    data = snapshot_data(args.routes)
    results = {"this tree": rows(proxy.snapshot, data, args.runs)}
    if args.against:
        results[args.against] = rows(module_at(args.against), data, args.runs)
    print(f"snapshot of {args.routes} routes, {len(data['providers'])} providers; median of {args.runs} runs")
    for name, figures in results.items():
        print(f"  {name}:")
        for row, value in figures.items():
            if row in ("held MiB", "wire KiB"):
                print(f"    {row:<16} {value:8.2f}")
            else:
                print(f"    {row:<16} {value * 1000:8.1f} ms  {value * 1e6 / args.routes:7.1f} us/route")
    if args.against:
        ours, theirs = results["this tree"], results[args.against]
        print(
            "  ratio (this tree / "
            + args.against
            + "): "
            + ", ".join(f"{row} {ours[row] / theirs[row]:.2f}" for row in ours if theirs[row])
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
