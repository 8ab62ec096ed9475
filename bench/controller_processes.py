"""The processes `python -m bench.controller` watches and drives: /proc readings (RSS, CPU time,
the machine's busy time, when the controller goes quiet) and the light clients' process
(bench/controller_clients.py), spoken to over JSON lines."""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.controller_setup import BenchBroken, say
from bench.harness import core_busy_ticks, proc_status_kb
from bench.harness import proc_cpu_seconds as cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    return {key: proc_status_kb(pid, key) * 1024 for key in ("VmRSS", "VmHWM")}


def machine_cpu(pids: Iterable[int]) -> dict[str, float]:
    """Machine-wide busy CPU seconds and this benchmark's share (`pids`, this driver and its kubectl runs)."""
    busy = core_busy_ticks(None)[0] / os.sysconf("SC_CLK_TCK")
    ours = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            ours += cpu_seconds(pid)
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):  # the driver, and kubectl (waited children)
        usage = resource.getrusage(who)
        ours += usage.ru_utime + usage.ru_stime
    return {"busy": busy, "ours": ours, "wall": time.monotonic()}


QUIET_CPU = 0.05  # CPU seconds per second below which the controller counts as idle
QUIET_TIMEOUT_S = 600.0


def wait_quiet(pid: int) -> float:
    """Until the controller is idle (< QUIET_CPU of a core for 2 s running): measure steady state.

    A freshly started leader first writes the status of every object (a status patch each, and
    an Event for news); changes measured during that backlog would measure the backlog. Returns
    the seconds waited, the 2 quiet seconds that prove it included.
    """
    say("waiting for the controller to go quiet (e.g. its first status pass over every object)")
    started = time.monotonic()
    quiet = 0
    last = cpu_seconds(pid)
    while quiet < 2:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        busy, last = now - last, now
        quiet = quiet + 1 if busy < QUIET_CPU else 0
        waited = time.monotonic() - started
        if waited > QUIET_TIMEOUT_S:
            say(f"  still busy after {waited:.0f} s ({busy * 100:.0f}% of a core): measuring anyway")
            break
        if int(waited) % 10 == 0 and quiet == 0:
            say(f"  {waited:.0f} s: controller at {busy * 100:.0f}% of a core")
    waited = time.monotonic() - started
    say(f"  quiet after {waited:.1f} s")
    return waited


class Clients:
    """The light clients' process, spoken to over JSON lines (see bench/controller_clients.py)."""

    def __init__(self, url: str, tokens_file: Path, concurrency: int, log: Path) -> None:
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "bench.controller_clients",
                "--url",
                url,
                "--tokens",
                str(tokens_file),
                "--concurrency",
                str(concurrency),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            start_new_session=True,
            text=True,
            bufsize=1,
        )
        self.log = log
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True, name="clients-stdout").start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self._events.put(json.loads(line))
            except ValueError:
                self._events.put({"event": "error", "message": f"not JSON: {line[:200]!r}"})
        self._events.put(None)

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise BenchBroken(f"the clients process is gone; log {self.log}:\n{self.tail()}") from None

    def next_event(self, timeout: float) -> dict[str, Any]:
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            raise BenchBroken(
                f"the clients process said nothing for {timeout:.0f} s; log {self.log}:\n{self.tail()}"
            ) from None
        if event is None:
            raise BenchBroken(f"the clients process exited ({self.proc.poll()}); log {self.log}:\n{self.tail()}")
        if event.get("event") == "error":
            raise BenchBroken(f"clients: {event['message']}")
        return event

    def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        event = self.next_event(timeout)
        if event.get("event") != kind:
            raise BenchBroken(f"clients: expected {kind!r}, got {event}")
        return event

    def tail(self, lines: int = 20) -> str:
        self._log.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "quit"})
                self.proc.wait(10)
            except (BenchBroken, subprocess.TimeoutExpired, OSError):
                pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


# --- statistics -----------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q% of the values at or below it."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
