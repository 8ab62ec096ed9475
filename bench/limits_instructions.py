"""What one limit costs the sidecar, counted in CPU instructions: steady where the latency and CPU time
of bench.limits_sidecar drown in a busy machine's noise.

The sidecar runs under valgrind's callgrind (bench.sidecar_instructions counts the same way: N1 then,
in a second run, N2 sequential requests after the same warm-up; (instructions(N2) - instructions(N1))
/ (N2 - N1) is one request, start-up and shutdown cancelled out), telemetry off, on three snapshots:
no limits; one tokens-per-minute limit counted in the process; the same limit counted in a local
redis-server (the snapshot's `limitStore`, with a 5 s timeout: under valgrind a check is slow, and a
check that timed out would go uncounted and cost less). Only the sidecar's own instructions are
counted: Redis's work (the script) runs in its own process. With `--before REV`, also that revision's
sidecar (a tree from `git archive`) on the no-limits snapshot: what the request path without limits
paid before limits were wired in.

    python -m bench.limits_instructions [--stream] [--requests 100,600] [--before REV]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import ROOT, BenchBroken, Proc, free_port, start, wait_listening
from bench.limits_sidecar import LIMIT, _scripts_run, _tree_of
from bench.sidecar_instructions import _instructions
from tests.harness.tools import find_tool

LOGS = ROOT / "bench" / "results" / "logs" / "limits_instructions"


def _snapshots(upstream_port: int, redis_url: str) -> dict[str, dict[str, Any]]:
    from bench.sidecar_setup import snapshot_for

    none = snapshot_for(upstream_port)
    in_process = {**none, "policy": {"limits": [LIMIT]}}
    in_redis = {**in_process, "limitStore": {"url": redis_url, "timeoutSeconds": 5}}
    return {"no limits": none, "one limit, in process": in_process, "one limit, Redis": in_redis}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.limits_instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--stream", action="store_true", help="streamed chat completions (default: plain)")
    parser.add_argument("--requests", default="100,600", metavar="N1,N2", help="requests in the two runs")
    parser.add_argument("--before", metavar="REV", help="also the sidecar at this git revision, without limits")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("bench: valgrind is not installed; install it with:  apt-get install -y valgrind", file=sys.stderr)
        return 2
    n1, n2 = (int(n) for n in args.requests.split(","))
    from bench.sidecar_setup import chat_body

    procs: list[Proc] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "MODELWAY_"))}
    print(f"# one limit, in instructions per request ({'stream' if args.stream else 'plain'}; load "
          f"{os.getloadavg()[0]:.2f})")  # fmt: skip
    try:
        with tempfile.TemporaryDirectory(prefix="modelway-bench-limits-instructions-") as tmp:
            upstream_port, redis_port = free_port(), free_port()
            procs.append(start("upstream", [sys.executable, "-m", "bench.upstream", "--port", str(upstream_port)],
                               core=None, logs=LOGS, env=env))  # fmt: skip
            procs.append(start("redis", [str(find_tool("redis-server")), "--port", str(redis_port), "--bind",
                                         "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
                               core=None, logs=LOGS, env=env))  # fmt: skip
            wait_listening(procs[0], upstream_port)
            wait_listening(procs[1], redis_port)
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            LOGS.mkdir(parents=True, exist_ok=True)
            per: dict[str, float] = {}
            snapshots = _snapshots(upstream_port, redis_url)
            runs = [(name, ROOT, snapshot) for name, snapshot in snapshots.items()]
            if args.before:
                before = _tree_of(args.before, Path(tmp) / "before")
                runs.append((f"before limits ({args.before})", before, snapshots["no limits"]))
            for name, home, snapshot in runs:
                path = Path(tmp) / "snapshot.json"
                path.write_text(json.dumps(snapshot))
                scripts = _scripts_run(redis_url)
                label = "".join(c if c.isalnum() else "-" for c in name)
                counts = [
                    _instructions(home, label, n, env={**env, "OTEL_SDK_DISABLED": "true"}, snapshot=path,
                                  body=chat_body(args.stream), logs=LOGS)
                    for n in (n1, n2)
                ]  # fmt: skip
                checked = _scripts_run(redis_url) - scripts
                if name.endswith("Redis") and checked < n1 + n2:
                    raise BenchBroken(f"{name}: Redis ran {checked} scripts for {n1 + n2 + 100} requests")
                per[name] = (counts[1] - counts[0]) / (n2 - n1)
                added = per[name] - per["no limits"]
                print(f"  {name:<24} {per[name]:>12,.0f} instructions a request  ({added:+,.0f})", flush=True)
    except BenchBroken as exc:
        print(f"bench: BROKEN: {exc}", file=sys.stderr)
        return 1
    finally:
        for proc in reversed(procs):
            proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
