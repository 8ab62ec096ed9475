"""`python -m bench.first_request`: what the first request to a front end loaded on demand costs.

The sidecar imports the OpenAI front end at start and the Anthropic Messages and Responses front
ends on their first requests (proxy.server, proxy.deferred_frontend). Each round starts a fresh
sidecar as bench.sidecar does (rules from a saved snapshot, the bench upstream behind it; tracing
off), waits for one OpenAI chat answer (start-up done), then times:

  - an Anthropic Messages request (translated to the bench upstream's chat completions), the first
    and then the second: the difference is the front end's import;
  - the same for a Responses request (to an openai-compatible backend: translated as well);
  - while the first Anthropic request loads, OpenAI chat requests sent one after another from
    another thread: how many were answered before it, and the slowest (the event loop is not
    held by the import).

`--repo` runs the sidecar from another checkout (e.g. `git archive main | tar -x -C /tmp/main`) to
compare against code that imports every front end at start. Figures are medians over the rounds;
the machine is shared, so compare within one run and note its load (`uptime`).

    python -m bench.first_request [--rounds 5] [--repo PATH]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import ROOT, BenchBroken, Proc, free_port, start, start_upstream_and_sink, wait_listening
from bench.sidecar_report import RESULTS
from bench.sidecar_setup import API_KEY, ROUTE_MODEL, UPSTREAM_MODEL, chat_body, post

LOGS = RESULTS / "logs" / "first_request"
TRANSLATED = "bench-translated"  # a route to an openai-compatible backend: Responses requests translated

MESSAGES = {"model": ROUTE_MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "Say hello."}]}
RESPONSES = {"model": TRANSLATED, "input": "Say hello."}


def _snapshot(upstream_port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{upstream_port}/v1"

    def route(name: str, provider: str) -> dict[str, Any]:
        backends = [{"provider": provider, "model": UPSTREAM_MODEL}]
        return {"name": name, "model": name, "rules": [{"name": "default", "backends": backends}]}

    return {
        "providers": [
            {"name": "bench-upstream", "type": "openai", "baseUrl": url, "apiKey": API_KEY},
            {"name": "bench-compatible", "type": "openai-compatible", "baseUrl": url, "apiKey": API_KEY},
        ],
        "routes": [route(ROUTE_MODEL, "bench-upstream"), route(TRANSLATED, "bench-compatible")],
    }


def _timed(url: str, body: dict[str, Any] | bytes) -> float:
    """Milliseconds to a 200 answer from `url`."""
    started = time.perf_counter()
    status, _, raw = post(url, body if isinstance(body, bytes) else json.dumps(body).encode(), timeout=30)
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200:
        raise BenchBroken(f"{url} answered {status}: {raw[:300]!r}")
    return elapsed


def _round(repo: Path, upstream_port: int, tmpdir: Path, number: int) -> dict[str, Any]:
    state = tmpdir / "state.json"
    state.write_text(json.dumps({"receivedAt": time.time(), "snapshot": _snapshot(upstream_port)}))
    (tmpdir / "token").write_text("bench")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(repo)
    sidecar = start(
        f"sidecar-{number}",
        [
            *(sys.executable, "-m", "proxy", "--controller", f"https://127.0.0.1:{free_port()}"),
            *("--token-file", str(tmpdir / "token"), "--state-file", str(state)),
            *("--reconnect-max-seconds", "60", "--port", str(port), "--admin-port", str(free_port())),
        ],
        core=None,
        logs=LOGS,
        env=env,
        cwd=repo,
    )
    try:
        wait_listening(sidecar, port)
        base = f"http://127.0.0.1:{port}"
        chat_url = base + "/v1/chat/completions"
        _timed(chat_url, chat_body(stream=False))  # start-up done, connections to the upstream made
        chat_usual = statistics.median(_timed(chat_url, chat_body(stream=False)) for _ in range(5))
        during: list[float] = []
        first_messages: list[float] = []
        loading = threading.Thread(target=lambda: first_messages.append(_timed(base + "/v1/messages", MESSAGES)))
        loading.start()
        while loading.is_alive():
            during.append(_timed(chat_url, chat_body(stream=False)))
        loading.join()
        if not first_messages:
            raise BenchBroken(f"the first Anthropic request failed; log {sidecar.log}:\n{sidecar.tail()}")
        return {
            "messages": (first_messages[0], _timed(base + "/v1/messages", MESSAGES)),
            "responses": (_timed(base + "/v1/responses", RESPONSES), _timed(base + "/v1/responses", RESPONSES)),
            "chat_usual": chat_usual,
            "chat_during": during,
        }
    finally:
        sidecar.stop()


def measure(repo: Path, rounds: int) -> list[dict[str, Any]]:
    for package in ("proxy", "shared"):  # run from .pyc files, as in the image
        if not compileall.compile_dir(repo / package, quiet=1):
            raise BenchBroken(f"byte-compiling {repo / package} failed")
    procs: list[Proc] = []
    try:
        with tempfile.TemporaryDirectory(prefix="modelway-first-request-") as tmp:
            env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
            upstream_port, _ = start_upstream_and_sink(procs, python=sys.executable, core=None, logs=LOGS, env=env)
            return [_round(repo, upstream_port, Path(tmp), n) for n in range(rounds)]
    finally:
        for proc in reversed(procs):
            proc.stop()


def report(results: list[dict[str, Any]], repo: Path) -> None:
    print(f"Sidecar from {repo}; {len(results)} fresh sidecars; medians, ms")
    print(f"\n{'':<22} {'first':>7} {'second':>7} {'first - second':>15}")
    for name, key in (("Anthropic Messages", "messages"), ("Responses", "responses")):
        first = statistics.median(r[key][0] for r in results)
        second = statistics.median(r[key][1] for r in results)
        print(f"{name:<22} {first:>7.1f} {second:>7.1f} {first - second:>15.1f}")
    answered = statistics.median(len(r["chat_during"]) for r in results)
    slowest = statistics.median(max(r["chat_during"], default=0.0) for r in results)
    usual = statistics.median(r["chat_usual"] for r in results)
    print(
        f"\nOpenAI chat requests answered while the first Anthropic request was served: {answered:.0f}, "
        f"the slowest {slowest:.1f} ms (usually {usual:.1f} ms)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.first_request", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="fresh sidecars to measure")
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout to run the sidecar from")
    args = parser.parse_args(argv)
    try:
        results = measure(args.repo.resolve(), args.rounds)
    except BenchBroken as exc:
        print(f"bench: BROKEN: {exc}", file=sys.stderr)
        return 1
    report(results, args.repo.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
