"""Runs the sidecar as a real process on free ports, with its snapshot in a temp file."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import anthropic
import openai

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SidecarProcess:
    def __init__(
        self,
        snapshot: dict[str, Any] | None = None,
        *,
        source_args: list[str] | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """`snapshot`: run on a snapshot file; else `source_args` say where config comes from."""
        self._dir = Path(tempfile.mkdtemp(prefix="modelway-sidecar-"))
        self.snapshot_path = self._dir / "snapshot.json"
        if snapshot is not None:
            self.snapshot_path.write_text(json.dumps(snapshot))
            source_args = ["--snapshot", str(self.snapshot_path), "--reload-interval", "0.1"]
        self.log_path = self._dir / "sidecar.log"
        self.port, self.admin_port = free_port(), free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self._args = [
            sys.executable,
            "-m",
            "proxy",
            *(source_args or []),
            "--port",
            str(self.port),
            "--admin-port",
            str(self.admin_port),
            *(extra_args or []),
        ]
        self._env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self._env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None) if env is None else None
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SidecarProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start_process(self) -> None:
        """Starts the process and waits only for its ports, not for a snapshot."""
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(self._args, stdout=log, stderr=subprocess.STDOUT, env=self._env, cwd=REPO)
        self._wait_for("/healthz")

    def start(self) -> None:
        self.start_process()
        self._wait_for("/readyz")

    def _wait_for(self, path: str) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"sidecar exited with {self._proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.admin_url + path, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sidecar did not answer {path} within 20s:\n{self.logs()}")

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def admin(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def openai_client(self) -> openai.OpenAI:
        """An OpenAI SDK client for it (no retries, 20 s timeout)."""
        return openai.OpenAI(base_url=self.base_url + "/v1", api_key="placeholder", max_retries=0, timeout=20)

    def anthropic_client(self) -> anthropic.Anthropic:
        """An Anthropic SDK client for it (no retries, 20 s timeout)."""
        return anthropic.Anthropic(base_url=self.base_url, api_key="placeholder", max_retries=0, timeout=20)

    def metrics_text(self) -> str:
        """Its /metrics page (Prometheus text) from the admin port."""
        with urllib.request.urlopen(self.admin_url + "/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` on its /metrics page whose labels include `labels`."""
        return metric_sum(self.metrics_text(), name, **labels)

    def write_snapshot(self, snapshot: dict[str, Any] | str) -> None:
        """Atomically replaces the snapshot file (rename), as a ConfigMap update would."""
        tmp = self.snapshot_path.with_suffix(".tmp")
        tmp.write_text(snapshot if isinstance(snapshot, str) else json.dumps(snapshot))
        tmp.replace(self.snapshot_path)

    def wait_for_version(self, predicate: Any, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.admin("/readyz")
            if status == 200 and predicate(body["version"]):
                return body
            time.sleep(0.05)
        raise AssertionError(f"sidecar did not load the expected snapshot:\n{self.logs()[-3000:]}")


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` in Prometheus text `text` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total
