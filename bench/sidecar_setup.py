"""What the sidecar benchmarks share: the bench route and its snapshot, the chat bodies wrk sends,
the sanity checks that a proxy answers properly, and the machine's description (cores, CPU model).

Used by `python -m bench.sidecar` and the benchmarks built on it (bench.ab, bench.sidecar_*,
bench.limits*, bench.http_client, ...).
"""

from __future__ import annotations

import compileall
import json
import os
import platform
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.harness import ROOT, BenchBroken

API_KEY = "sk-bench-0123456789"
ROUTE_MODEL = "bench"
UPSTREAM_MODEL = "bench-upstream-model"

SCENARIOS: tuple[tuple[str, bool, int], ...] = (
    ("plain@1", False, 1),
    ("plain@16", False, 16),
    ("stream@1", True, 1),
    ("stream@16", True, 16),
)


# --- HTTP sanity checks ---------------------------------------------------------------


def chat_body(stream: bool) -> bytes:
    body: dict[str, Any] = {"model": ROUTE_MODEL, "messages": [{"role": "user", "content": "Say hello."}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def post(
    url: str, body: bytes, *, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, str, bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.headers.get("content-type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", ""), exc.read()


def sanity_check(name: str, base: str) -> None:
    """One plain and one streaming request: a proper completion, and a stream that ends in [DONE]."""
    url = base + "/v1/chat/completions"
    status, _, raw = post(url, chat_body(stream=False))
    if status != 200:
        raise BenchBroken(f"{name}: plain request answered {status}: {raw[:300]!r}")
    try:
        data = json.loads(raw)
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise BenchBroken(f"{name}: plain answer is not a chat.completion: {raw[:300]!r}") from None
    if not content:
        raise BenchBroken(f"{name}: plain answer has no content: {raw[:300]!r}")
    status, content_type, raw = post(url, chat_body(stream=True))
    if status != 200:
        raise BenchBroken(f"{name}: streaming request answered {status}: {raw[:300]!r}")
    if not content_type.startswith("text/event-stream"):
        raise BenchBroken(f"{name}: streaming answer has content-type {content_type!r}")
    events = [e for e in raw.split(b"\n\n") if e.strip()]
    if not events or events[-1].strip() != b"data: [DONE]":
        raise BenchBroken(f"{name}: stream does not end with the [DONE] marker: {raw[-300:]!r}")
    chunks = [json.loads(e[len(b"data: ") :]) for e in events[:-1]]
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
    if not text:
        raise BenchBroken(f"{name}: stream carried no content: {raw[:300]!r}")


# --- the processes' code ----------------------------------------------------------------


def precompile() -> None:
    """Byte-compiles the project's own packages (and the bench's) before any process starts.

    In the image the sidecar runs from compiled .pyc files (pip compiles what it installs), but a
    source checkout under PYTHONDONTWRITEBYTECODE=1 has none: every start then compiles ~150 modules
    from source, whose parse trees and compiler buffers leave ~1 MiB more RSS behind in the sidecar
    (and a few KiB in the baseline, whose own code is two small modules). Both proxies get their
    code compiled alike; site-packages and the standard library come compiled by their installers."""
    for package in ("proxy", "shared", "bench"):
        if not compileall.compile_dir(ROOT / package, quiet=1):
            raise BenchBroken(f"byte-compiling {package}/ failed")


# --- the machine and the bench route ------------------------------------------------


def choose_cores() -> tuple[int | None, int | None, str]:
    available = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") is None or len(available) < 2:
        return (
            None,
            None,
            (
                f"cores: not pinned ({len(available)} core(s) available"
                f"{', no taskset' if shutil.which('taskset') is None else ''}); figures are indicative only"
            ),
        )
    proxy_core, load_core = available[0], available[1]
    return (
        proxy_core,
        load_core,
        (
            f"cores: core {proxy_core} = the proxy under test (baseline or sidecar, in turn), alone; "
            f"core {load_core} = wrk + fake upstream + OTLP sink"
        ),
    )


def snapshot_for(upstream_port: int) -> dict[str, Any]:
    return {
        "providers": [
            {
                "name": "bench-upstream",
                "type": "openai",
                "baseUrl": f"http://127.0.0.1:{upstream_port}/v1",
                "apiKey": API_KEY,
            }
        ],
        "routes": [
            {
                "name": "bench",
                "model": ROUTE_MODEL,
                "rules": [{"name": "default", "backends": [{"provider": "bench-upstream", "model": UPSTREAM_MODEL}]}],
            }
        ],
    }


def sink_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as resp:
        return json.loads(resp.read())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
