"""The sidecar's own ports against slow and silent clients: every connection ends at its timeout,
the connection cap holds under a flood of half-sent requests, and /healthz answers throughout."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.conftest import hostile_snapshot
from tests.adversarial.hostile import HostileProvider
from tests.integration.sidecar import REPO, SidecarProcess

SHORT = ["--header-timeout", "1", "--body-timeout", "1", "--idle-timeout", "1"]


@pytest.fixture
def short_sidecar(hostile: HostileProvider) -> Iterator[SidecarProcess]:
    with SidecarProcess(hostile_snapshot(hostile.base_url), extra_args=SHORT) as process:
        yield process


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket, limit: float = 10) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    started, data = time.monotonic(), b""
    sock.settimeout(limit)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - started


def _json_error(data: bytes) -> dict[str, Any]:
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower(), head
    return json.loads(body)


def _both_shapes(body: dict[str, Any]) -> None:
    """OpenAI ({"error": {message, type, param, code}}) and Anthropic ({"type": "error", "error": {type, message}})."""
    assert body["type"] == "error" and body["error"]["message"] and body["error"]["type"]
    assert "param" in body["error"] and body["error"]["code"] == "request_timeout"


@pytest.mark.parametrize("port_name", ["port", "admin_port"])
def test_a_slowloris_head_is_answered_408_and_closed(short_sidecar: SidecarProcess, port_name: str) -> None:
    sock = _connect(getattr(short_sidecar, port_name))
    started = time.monotonic()
    stop = threading.Event()

    def drip() -> None:  # a byte every 0.2 s: never a whole head
        for byte in b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
            if stop.wait(0.2):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return

    threading.Thread(target=drip, daemon=True).start()
    data, _ = _read_until_closed(sock)
    stop.set()
    took = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408 "), data[:80]
    _both_shapes(_json_error(data))
    assert 0.9 < took < 3, took


def test_a_body_that_never_ends_is_answered_408_in_the_api_shape(short_sidecar: SidecarProcess) -> None:
    sock = _connect(short_sidecar.port)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100000\r\n\r\n{"model": "m", "messages": ['
    )
    data, took = _read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 408 "), data[:80]
    _both_shapes(_json_error(data))
    assert 0.9 < took < 3, took
    assert "Traceback" not in short_sidecar.logs() and "Unhandled exception" not in short_sidecar.logs()


@pytest.mark.parametrize("port_name", ["port", "admin_port"])
def test_silent_and_idle_connections_are_closed(short_sidecar: SidecarProcess, port_name: str) -> None:
    port = getattr(short_sidecar, port_name)
    silent = _connect(port)
    data, took = _read_until_closed(silent)
    assert data == b"" and 0.9 < took < 3, (data, took)
    idle = _connect(port)  # one request, then keep-alive with nothing more
    idle.sendall(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        if port_name == "admin_port"
        else b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    data, took = _read_until_closed(idle)
    assert data.startswith(b"HTTP/1.1 200 ") and 0.9 < took < 3, (data[:40], took)


def _proc_numbers(pid: int) -> tuple[int, int]:
    """Open fds and resident memory (KiB) of a process, from /proc."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return fds, rss


class Probe(threading.Thread):
    """GET /healthz on a fresh connection every 50 ms, as a kubelet would; records each latency."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.05):
            started = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    data, _ = _read_until_closed(sock, 2)
                if not data.startswith(b"HTTP/1.1 200 "):
                    self.failures.append(data[:60].decode(errors="replace"))
            except OSError as exc:
                self.failures.append(repr(exc))
            self.latencies.append(time.monotonic() - started)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


def _raise_own_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"the test needs {needed} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


_FLOOD = """
import resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
port, count, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
partial = b"GET /healthz HTTP/1.1\\r\\nHost: x\\r\\n" + b"".join(
    b"X-Pad-%d: %s\\r\\n" % (i, b"p" * 1000) for i in range(14))
socks = []
for _ in range(count):
    time.sleep(pause)
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        sock.send(partial)
    except OSError:
        continue  # shed already: that is the point
    socks.append(sock)
print(len(socks), flush=True)
sys.stdin.read()  # hold them until told
"""


class Flood:
    """`count` connections that each send 14 KB of a request head and never finish it, from another
    process (so the probe's timing is not the test's own GIL)."""

    def __init__(self, port: int, count: int, *, pause: float = 0.0) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _FLOOD, str(port), str(count), str(pause)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def wait_opened(self) -> int:
        assert self._proc.stdout is not None
        return int(self._proc.stdout.readline() or 0)

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait(10)


@pytest.mark.parametrize("port_name", ["admin_port", "port"])
def test_the_connection_cap_holds_under_2000_half_sent_requests(hostile: HostileProvider, port_name: str) -> None:
    args = ["--header-timeout", "30", "--max-connections", "200", "--admin-max-connections", "200"]
    with SidecarProcess(hostile_snapshot(hostile.base_url), extra_args=args) as sidecar:
        pid = sidecar._proc.pid  # type: ignore[union-attr]
        fds_before, rss_before = _proc_numbers(pid)
        probe = Probe(sidecar.admin_port)
        probe.start()
        time.sleep(0.3)
        flood = Flood(getattr(sidecar, port_name), 2000, pause=0.0003)
        flood.wait_opened()
        time.sleep(0.5)
        fds_during, rss_during = _proc_numbers(pid)
        time.sleep(0.5)
        probe.stop()
        try:
            assert not probe.failures, probe.failures[:5]
            # A probe queued behind the half-sent requests would wait out their 30 s header timeout;
            # 1 s leaves room for a loaded machine without hiding that.
            assert len(probe.latencies) >= 10 and max(probe.latencies) < 1.0, sorted(probe.latencies)[-5:]
            assert fds_during <= fds_before + 200 + 20, (fds_before, fds_during)
            assert rss_during - rss_before < 40_000, (rss_before, rss_during)  # KiB
            logs = sidecar.logs()
            assert "connection cap of 200 reached" in logs and logs.count("connection cap of 200") <= 2
            # normal requests are still served, on both ports
            assert sidecar.admin("/healthz") == (200, {"status": "ok"})
            with socket.create_connection(("127.0.0.1", sidecar.port), timeout=5) as sock:
                sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert _read_until_closed(sock)[0].startswith(b"HTTP/1.1 200 ")
        finally:
            flood.close()


class _LowFdSidecar(SidecarProcess):
    """A sidecar whose open-file limit is 300, soft and hard, so fds run short before its caps."""

    def start_process(self) -> None:
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self._args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=REPO,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300)),
        )
        self._wait_for("/healthz")


def test_running_short_of_fds_is_logged_and_the_ports_keep_answering(hostile: HostileProvider) -> None:
    with _LowFdSidecar(hostile_snapshot(hostile.base_url), extra_args=["--header-timeout", "30"]) as sidecar:
        assert "open-file limit (300) is below the connection caps" in sidecar.logs()
        flood = Flood(sidecar.port, 600)  # its cap (1024) is above the fds it has
        try:
            flood.wait_opened()
            time.sleep(0.3)
            assert "file descriptors running short" in sidecar.logs()
            assert _proc_numbers(sidecar._proc.pid)[0] < 200  # type: ignore[union-attr]
            assert sidecar.admin("/healthz") == (200, {"status": "ok"})
            assert sidecar.admin("/readyz")[0] == 200
        finally:
            flood.close()


_CONTROLLER = """
import sys
import controller.admin
getattr(controller.admin, "RUNNER_OPTIONS", {})["keepalive_timeout"] = 1.0  # 15 s in production
from controller.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_controller_ports_close_silent_and_slowloris_connections(tmp_path: Any) -> None:
    from tests.integration.sidecar import free_port

    (tmp_path / "config").mkdir()
    stream, admin = free_port(), free_port()
    log = (tmp_path / "controller.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CONTROLLER,
            "--source",
            "files",
            "--config-dir",
            str(tmp_path / "config"),
            "--dev-token-file",
            str(tmp_path / "token"),
            "--listen",
            f"127.0.0.1:{stream}",
            "--admin-listen",
            f"127.0.0.1:{admin}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OTEL_SDK_DISABLED": "true"},
    )
    try:
        deadline = time.monotonic() + 30
        while "serving sidecar streams" not in (tmp_path / "controller.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "controller.log").read_text()
            time.sleep(0.1)
        for port in (stream, admin):
            slow = _connect(port)
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            silent = _connect(port)
            for sock in (slow, silent):
                data, took = _read_until_closed(sock)
                assert data == b"" and took < 3, (port, data, took)
    finally:
        proc.terminate()
        proc.wait(10)
