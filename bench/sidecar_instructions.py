"""What telemetry costs the sidecar, counted in CPU instructions: steady where requests/s and CPU
time drown in a busy machine's noise.

Each sidecar runs under valgrind's callgrind (every thread counted), telemetry off
(OTEL_SDK_DISABLED=true) and on (every span sampled and exported to an OTLP sink, metrics
recorded), and serves N1 then, in a second run, N2 sequential requests (after the same
warm-up); (instructions(N2) - instructions(N1)) / (N2 - N1) is the cost of one request,
start-up and shutdown cancelled out. On a core where the sidecar is CPU-bound, off/on of
instructions per request is close to the on/off ratio of requests/s that
bench.sidecar_telemetry measures (target >= 0.85). Spans are exported in full batches only (a
schedule delay of ten minutes): as under load, where the batch size, not the timer, starts each
export, and the same from run to run (with the default 1 s timer, valgrind's slowness cut batches
of a few dozen spans, differently each run, and off/on moved by a few hundredths between runs of
the same code). `--down` also measures `on` with the collector away. `--before DIR` measures
another checkout the same way (e.g. `git archive main | tar -x -C DIR`).

Slow (valgrind runs Python ~50x slower): a few minutes per checkout and scenario.

    python -m bench.sidecar_instructions [--stream] [--down] [--requests 200,1200] [--before DIR]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import ROOT, BenchBroken, free_port, start, wait_listening

LOGS = ROOT / "bench" / "results" / "logs" / "instructions"
FULL_BATCHES = {"OTEL_BSP_SCHEDULE_DELAY": "600000"}  # exports started by the batch size only (see above)
VARIANTS = {
    "off": {"OTEL_SDK_DISABLED": "true"},
    "on": {"OTEL_TRACES_SAMPLER": "always_on", **FULL_BATCHES},  # + the sink's endpoint
}
# As bench.sidecar_telemetry's `down`: `on` with the collector away (a closed port): exports fail, the
# queue fills, drops are counted.
DOWN = {"OTEL_TRACES_SAMPLER": "always_on", "OTEL_EXPORTER_OTLP_TIMEOUT": "2000", **FULL_BATCHES}


def _instructions(
    home: Path, variant: str, requests: int, *, env: dict[str, str], snapshot: Path, body: bytes, logs: Path
) -> int:
    port, admin = free_port(), free_port()
    log = logs / f"{home.name}-{variant}-{requests}.log"
    argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m", "proxy"]
    argv += ["--snapshot", str(snapshot), "--port", str(port), "--admin-port", str(admin)]
    with log.open("wb") as out:
        # A fixed hash seed: start-up's count must not differ between the two runs by the dicts' layouts
        proc = subprocess.Popen(
            argv,
            cwd=home,
            env={**env, "PYTHONPATH": str(home), "PYTHONHASHSEED": "0"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                conn.connect()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchBroken(f"sidecar under valgrind did not start; log {log}") from None
                time.sleep(0.5)
        for _ in range(50 + requests):  # the same 50 warm-up requests in both runs
            conn.request("POST", "/v1/chat/completions", body=body, headers={"content-type": "application/json"})
            answer = conn.getresponse()
            data = answer.read()
            if answer.status != 200:
                raise BenchBroken(f"sidecar answered {answer.status}: {data[:200]!r}")
        conn.close()
        time.sleep(1.0)  # let an export under way finish before the shutdown flush
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=600)
    found = re.search(r"Collected : (\d+)", log.read_text())
    if found is None:
        raise BenchBroken(f"no instruction count in {log}")
    return int(found.group(1))


def measure(
    homes: dict[str, Path], *, stream: bool, n1: int, n2: int, sink_port: int, snapshot: Path, down: bool = False
) -> dict[str, dict[str, float]]:
    from bench.sidecar_setup import chat_body

    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    body = chat_body(stream)
    LOGS.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, float]] = {label: {} for label in homes}
    # The checkouts taken in turn for each run: timers in the sidecar (the access log's flush, the
    # loop's) fire by the clock, so a count drifts a little with the machine's load; in turn, both
    # checkouts see the same drift.
    for variant, extra in (VARIANTS | ({"down": DOWN} if down else {})).items():
        env = {**base, **extra}
        if variant == "on":
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink_port}"
        elif variant == "down":
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        counts: dict[str, list[int]] = {label: [] for label in homes}
        for n in (n1, n2):
            for label, home in homes.items():
                counts[label].append(_instructions(home, variant, n, env=env, snapshot=snapshot, body=body, logs=LOGS))
        for label in homes:
            out[label][variant] = (counts[label][1] - counts[label][0]) / (n2 - n1)
    for label, per in out.items():
        print(
            f"{label:<7} {'stream' if stream else 'plain'}: instructions per request off {per['off']:,.0f}, "
            f"on {per['on']:,.0f}; telemetry {per['on'] - per['off']:,.0f} "
            f"({100 * (per['on'] - per['off']) / per['off']:.0f} % of off); off/on {per['off'] / per['on']:.3f}",
            flush=True,
        )
        if "down" in per:
            print(
                f"{label:<7} {'stream' if stream else 'plain'}: collector down: instructions per request "
                f"{per['down']:,.0f}; off/down {per['off'] / per['down']:.3f}",
                flush=True,
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sidecar_instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--stream", action="store_true", help="streamed chat completions (default: plain)")
    parser.add_argument("--requests", default="200,1200", metavar="N1,N2", help="requests in the two runs")
    parser.add_argument("--before", type=Path, metavar="DIR", help="also measure this checkout")
    parser.add_argument("--down", action="store_true", help="also with the collector down (a closed port)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("bench: valgrind is not installed; install it with:  apt-get install -y valgrind", file=sys.stderr)
        return 2
    n1, n2 = (int(n) for n in args.requests.split(","))
    from bench.sidecar_setup import snapshot_for

    homes = {"this": ROOT} | ({"before": args.before.resolve()} if args.before else {})
    procs = []
    try:
        with tempfile.TemporaryDirectory(prefix="modelway-bench-instructions-") as tmp:
            base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
            upstream_port, sink_port = free_port(), free_port()
            procs.append(
                start(
                    "upstream",
                    [sys.executable, "-m", "bench.upstream", "--port", str(upstream_port)],
                    core=None,
                    logs=LOGS,
                    env=base,
                )
            )
            procs.append(
                start(
                    "otlp-sink",
                    [sys.executable, "-m", "bench.otlp_sink", "--port", str(sink_port)],
                    core=None,
                    logs=LOGS,
                    env=base,
                )
            )
            wait_listening(procs[0], upstream_port)
            wait_listening(procs[1], sink_port)
            snapshot = Path(tmp) / "snapshot.json"
            snapshot.write_text(json.dumps(snapshot_for(upstream_port)))
            measure(homes, stream=args.stream, n1=n1, n2=n2, sink_port=sink_port, snapshot=snapshot, down=args.down)
    except BenchBroken as exc:
        print(f"bench: BROKEN: {exc}", file=sys.stderr)
        return 1
    finally:
        for proc in reversed(procs):
            proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
