"""Running benchmark processes and wrk: pinning, readiness, /proc readings, wrk output parsing.

Shared plumbing for the benchmarks in bench/; nothing here knows what is measured.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class BenchBroken(Exception):
    """Something failed that makes the figures meaningless: exit non-zero."""


# --- processes ------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


def pinned(core: int | None, argv: list[str]) -> list[str]:
    # taskset execs the command, so the process id stays the one we measure.
    return argv if core is None else ["taskset", "-c", str(core), *argv]


def start(
    name: str, argv: list[str], *, core: int | None, logs: Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Proc:
    """Starts `argv` from the repository root (or `cwd`), pinned to `core`, its output in logs/<name>.log."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            pinned(core, argv), stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env or os.environ.copy()
        )
    return Proc(name=name, popen=popen, log=log)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(proc: Proc, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise BenchBroken(
                f"{proc.name} exited with status {proc.popen.returncode} before listening; "
                f"log {proc.log}:\n{proc.tail()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchBroken(
        f"{proc.name} did not listen on port {port} within {timeout:.0f}s; log {proc.log}:\n{proc.tail()}"
    )


def start_upstream_and_sink(
    procs: list[Proc], *, python: str, core: int | None, logs: Path, env: dict[str, str]
) -> tuple[int, int]:
    """The fake provider (`bench.upstream`) and the OTLP sink (`bench.otlp_sink`) on `core`, both
    listening; appended to `procs` (for the caller to stop). Returns their ports."""
    upstream_port, sink_port = free_port(), free_port()
    upstream = start(
        "upstream", [python, "-m", "bench.upstream", "--port", str(upstream_port)], core=core, logs=logs, env=env
    )
    procs.append(upstream)
    sink = start(
        "otlp-sink", [python, "-m", "bench.otlp_sink", "--port", str(sink_port)], core=core, logs=logs, env=env
    )
    procs.append(sink)
    wait_listening(upstream, upstream_port)
    wait_listening(sink, sink_port)
    return upstream_port, sink_port


def log_hints(proc: Proc, limit: int = 5) -> list[str]:
    """The last log lines that explain failed answers (failed attempts, cut streams, errors)."""
    try:
        lines = proc.log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    wanted = ("attempt failed", "stream cut", " ERROR ", " WARNING ", "Error", "Traceback")
    return [line[:200] for line in lines if any(w in line for w in wanted)][-limit:]


# --- /proc readings -------------------------------------------------------------------


def proc_status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise BenchBroken(f"no {key} in /proc/{pid}/status")


def proc_cpu_seconds(pid: int) -> float:
    # Fields after the command name: utime and stime are the 12th and 13th (all threads included).
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of each of a process's threads, by thread id (the main thread's id is the pid)."""
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def core_busy_ticks(core: int | None) -> tuple[int, int]:
    """(busy, total) jiffies of one core, or of the whole machine when core is None."""
    label = "cpu" if core is None else f"cpu{core}"
    for line in Path("/proc/stat").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == label:
            values = [int(v) for v in parts[1:9]]
            idle = values[3] + values[4]
            return sum(values) - idle, sum(values)
    return 0, 0


# --- wrk -------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    proxy_cpu_pct: float = 0.0  # of one core, the proxy process over the run
    proxy_cpu_us_per_request: float = 0.0  # the proxy's CPU time per answered request (robust to noise)
    proxy_loop_us_per_request: float = 0.0  # of which its main thread (the event loop)
    proxy_core_other_pct: float = 0.0  # the proxy's core busy with anything but the proxy (noise)
    load_core_busy_pct: float = 0.0  # the core running wrk + upstream + sink

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$")
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)")
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)")
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_wrk(output: str) -> WrkResult:
    percentiles: dict[str, float] = {}
    rps = requests = seconds = None
    non_2xx = 0
    socket_errors: dict[str, int] = {}
    for line in output.splitlines():
        if m := _PERCENTILE.match(line):
            percentiles[m.group(1)] = float(m.group(2)) * _UNITS_MS[m.group(3)]
        elif m := _RPS.match(line):
            rps = float(m.group(1))
        elif m := _TOTAL.match(line):
            requests = int(m.group(1))
            seconds = float(m.group(2)) * _UNITS_MS[m.group(3)] / 1e3
        elif m := _NON_2XX.match(line):
            non_2xx = int(m.group(1))
        elif m := _SOCKET.match(line):
            socket_errors = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True))
    if rps is None or requests is None or seconds is None or "50" not in percentiles or "99" not in percentiles:
        raise BenchBroken(f"could not read wrk's output:\n{output}")
    return WrkResult(
        requests=requests,
        seconds=seconds,
        rps=rps,
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
        non_2xx=non_2xx,
        socket_errors=socket_errors,
    )


def lua_script(path: Path, body: str) -> Path:
    """A wrk script that POSTs `body` as JSON."""
    path.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [==[{body}]==]\n'
    )
    return path


def run_wrk(
    url: str,
    script: Path,
    *,
    connections: int,
    seconds: float,
    core: int | None,
    proxy_pid: int | None = None,
    proxy_core: int | None = None,
    load_core: int | None = None,
) -> WrkResult:
    argv = pinned(core, ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url])
    cpu_before = proc_cpu_seconds(proxy_pid) if proxy_pid else 0.0
    loop_before = thread_cpu_seconds(proxy_pid).get(proxy_pid, 0.0) if proxy_pid else 0.0
    core_before = core_busy_ticks(load_core)
    proxy_core_before = core_busy_ticks(proxy_core)
    wall = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    wall = time.monotonic() - wall
    if done.returncode != 0:
        raise BenchBroken(f"wrk exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    result = parse_wrk(done.stdout)
    if proxy_pid:
        cpu = proc_cpu_seconds(proxy_pid) - cpu_before
        result.proxy_cpu_pct = 100.0 * cpu / wall
        result.proxy_cpu_us_per_request = 1e6 * cpu / max(result.requests, 1)
        loop = thread_cpu_seconds(proxy_pid).get(proxy_pid, 0.0) - loop_before
        result.proxy_loop_us_per_request = 1e6 * loop / max(result.requests, 1)
    core_after = core_busy_ticks(load_core)
    if core_after[1] > core_before[1]:
        result.load_core_busy_pct = 100.0 * (core_after[0] - core_before[0]) / (core_after[1] - core_before[1])
    proxy_core_after = core_busy_ticks(proxy_core)
    if proxy_pid and proxy_core is not None and proxy_core_after[1] > proxy_core_before[1]:
        busy = 100.0 * (proxy_core_after[0] - proxy_core_before[0]) / (proxy_core_after[1] - proxy_core_before[1])
        result.proxy_core_other_pct = max(0.0, busy - result.proxy_cpu_pct)
    return result
