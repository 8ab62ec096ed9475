"""`python -m bench.sidecar_footprint`: where the sidecar's memory goes, by package, against the baseline.

`python -m bench.sidecar` gives the sidecar's RSS against a bare aiohttp pass-through (bench/baseline.py);
this says what the difference is made of. Both proxies are started as bench.sidecar starts them (the
sidecar with its rules from a saved snapshot and tracing to an OTLP sink), each under a small wrapper
that traces Python allocations (tracemalloc) and records, for every module imported, what its import
allocated and kept (its own code, classes, constants; what the modules it imports keep counted under
them). After one plain and one streamed request, each process writes its records; the report lists

  - the modules only the sidecar imports, summed by package (proxy.* and shared.* by subpackage;
    standard library modules by name, e.g. decimal and numbers, which msgspec imports), and the
    largest of them;
  - the shared libraries only the sidecar maps, with their resident size (/proc/<pid>/smaps).

What an import allocated is close to what it costs in RSS (pymalloc pages and malloc chunks hold it,
plus a little slack); tracemalloc itself makes both processes bigger, so their RSS is not shown here:
bench.sidecar measures it without the tracer.

    python -m bench.sidecar_footprint [--top 30]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import BenchBroken, Proc, free_port, start, start_upstream_and_sink, wait_listening
from bench.sidecar_report import RESULTS
from bench.sidecar_setup import API_KEY, precompile, sanity_check, snapshot_for

LOGS = RESULTS / "logs" / "sidecar_footprint"

# Runs `python -m <module> <args>` with every import's allocations recorded; on SIGUSR1 writes
# {"modules": [...], "imports": {module: [kept, own]}} to the file named by FOOTPRINT_OUT.
# kept: what the import allocated and still holds, modules it imported included; own: less those.
PROBE = r"""
import json, os, runpy, signal, sys, tracemalloc
tracemalloc.start()
import _frozen_importlib as bootstrap
stack, imports = [], {}
load = bootstrap._load_unlocked
def _load_unlocked(spec):
    stack.append([tracemalloc.get_traced_memory()[0], 0])
    try:
        return load(spec)
    finally:
        start, nested = stack.pop()
        kept = tracemalloc.get_traced_memory()[0] - start
        imports[spec.name] = [kept, kept - nested]
        if stack:
            stack[-1][1] += kept
bootstrap._load_unlocked = _load_unlocked
def dump(*_):
    with open(os.environ["FOOTPRINT_OUT"], "w") as out:
        json.dump({"modules": sorted(sys.modules), "imports": imports}, out)
signal.signal(signal.SIGUSR1, dump)
sys.path.insert(0, os.getcwd())
module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] in ("proxy", "shared") else parts[0]


def shared_libraries(pid: int) -> dict[str, int]:
    """Resident KiB of each file mapped by `pid` that is a shared library."""
    sizes: collections.Counter[str] = collections.Counter()
    current = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            current = fields[5] if len(fields) > 5 and ".so" in fields[5] else ""
        elif current and fields[0] == "Rss:":
            sizes[current.split("site-packages/")[-1]] += int(fields[1])
    return dict(sizes)


def _probed(name: str, argv: list[str], *, out: Path, env: dict[str, str]) -> Proc:
    return start(
        name, [sys.executable, "-c", PROBE, *argv], core=None, logs=LOGS, env={**env, "FOOTPRINT_OUT": str(out)}
    )


def _collect(proc: Proc, out: Path) -> dict[str, Any]:
    proc.popen.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            data: dict[str, Any] = json.loads(out.read_text())
            data["libraries"] = shared_libraries(proc.pid)
            return data
        except (OSError, ValueError):  # not written yet, or half written
            time.sleep(0.2)
    raise BenchBroken(f"{proc.name} wrote no footprint; log {proc.log}:\n{proc.tail()}")


def measure() -> tuple[dict[str, Any], dict[str, Any]]:
    precompile()  # as bench.sidecar: modules loaded from .pyc files, as in the image
    procs: list[Proc] = []
    try:
        with tempfile.TemporaryDirectory(prefix="modelway-footprint-") as tmp:
            tmpdir = Path(tmp)
            env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
            upstream_port, sink_port = start_upstream_and_sink(
                procs, python=sys.executable, core=None, logs=LOGS, env=env
            )
            base_port = free_port()
            baseline = _probed(
                "baseline",
                [
                    *("bench.baseline", "--port", str(base_port), "--api-key", API_KEY),
                    *("--upstream", f"http://127.0.0.1:{upstream_port}/v1"),
                ],
                out=tmpdir / "baseline.json",
                env=env,
            )
            procs.append(baseline)
            state = tmpdir / "state.json"
            state.write_text(json.dumps({"receivedAt": time.time(), "snapshot": snapshot_for(upstream_port)}))
            (tmpdir / "token").write_text("bench")
            side_port = free_port()
            sidecar = _probed(
                "sidecar",
                [
                    *("proxy", "--controller", f"https://127.0.0.1:{free_port()}"),
                    *("--token-file", str(tmpdir / "token"), "--state-file", str(state)),
                    *("--reconnect-max-seconds", "60", "--port", str(side_port), "--admin-port", str(free_port())),
                ],
                out=tmpdir / "sidecar.json",
                env={
                    **env,
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                    "OTEL_TRACES_SAMPLER": "always_on",
                },
            )
            procs.append(sidecar)
            for proc, port in ((baseline, base_port), (sidecar, side_port)):
                wait_listening(proc, port)
                sanity_check(proc.name, f"http://127.0.0.1:{port}")
            time.sleep(0.5)
            return _collect(baseline, tmpdir / "baseline.json"), _collect(sidecar, tmpdir / "sidecar.json")
    finally:
        for proc in reversed(procs):
            proc.stop()


def report(baseline: dict[str, Any], sidecar: dict[str, Any], *, top: int) -> None:
    only = sorted(set(sidecar["modules"]) - set(baseline["modules"]))
    imports = sidecar["imports"]
    own = {m: imports.get(m, [0, 0])[1] for m in only}
    by_package: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    for module, size in own.items():
        by_package[package_of(module)] += size
        counts[package_of(module)] += 1
    total = sum(own.values())
    print(f"Modules only the sidecar imports: {len(only)}, {total / 1024:,.0f} KiB allocated and kept by their imports")
    print(f"\n{'package':<32} {'modules':>7} {'KiB':>7} {'share':>6}")
    for package, size in by_package.most_common():
        print(f"{package:<32} {counts[package]:>7} {size / 1024:>7,.0f} {size / max(total, 1):>6.0%}")
    print(f"\nThe {top} largest (KiB, its own import; modules it imported counted under them):")
    for module, size in sorted(own.items(), key=lambda item: -item[1])[:top]:
        print(f"  {size / 1024:>6,.0f}  {module}")
    libraries = sidecar["libraries"]
    extra = {name: kib for name, kib in libraries.items() if name not in baseline["libraries"]}
    print(f"\nShared libraries only the sidecar maps: {sum(extra.values()):,} KiB resident")
    for name, kib in sorted(extra.items(), key=lambda item: -item[1]):
        print(f"  {kib:>6,}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sidecar_footprint", description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=30, help="how many of the largest modules to list")
    args = parser.parse_args(argv)
    try:
        baseline, sidecar = measure()
    except BenchBroken as exc:
        print(f"bench: BROKEN: {exc}", file=sys.stderr)
        return 1
    report(baseline, sidecar, top=args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
