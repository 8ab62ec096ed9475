"""Run a fake provider as a real process, controlled over HTTP.

Plain ``urllib`` so the helper works the same from sync and async tests (a
blocking call to another process cannot deadlock the test's event loop).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from .server import DEFAULT_KEYS, Provider

REPO_ROOT = Path(__file__).resolve().parents[2]


class FakeProviderProcess:
    """``python -m tests.fakes`` in a subprocess; a context manager.

    >>> with FakeProviderProcess("openai") as fake:
    ...     fake.script([{"status": 429, "retry_after": "1"}])
    ...     ...  # call fake.base_url
    ...     fake.requests()
    """

    def __init__(
        self, provider: Provider, *, api_key: str | None = None, port: int = 0, start_timeout: float = 15.0
    ) -> None:
        self.provider = provider
        self.api_key = api_key or DEFAULT_KEYS[provider]
        self.port = port
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (lives as long as the process; closed in stop)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeProviderProcess:
        cmd = [
            sys.executable,
            "-m",
            "tests.fakes",
            "--provider",
            self.provider,
            "--port",
            str(self.port),
            "--api-key",
            self.api_key,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=self._stderr, text=True
        )
        line = self._first_line()
        if not line.startswith("listening on "):
            self.stop()
            self._stderr.seek(0)
            raise RuntimeError(f"fake {self.provider} did not start: {line!r}\n{self._stderr.read()}")
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def _first_line(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(self._start_timeout)
        return got[0].strip() if got else ""

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None

    def __enter__(self) -> FakeProviderProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self._stderr.close()

    # -- control API -------------------------------------------------------

    def script(self, behaviours: list[dict[str, Any]]) -> None:
        """Queue behaviours, one per coming LLM request (see behaviour.Behaviour)."""
        self._call("POST", "/_fake/script", behaviours)

    def profile(self, *, error_rate: float = 0.0, delay: float = 0.0, seed: int = 0, error_status: int = 500) -> None:
        """Answer every unscripted request this way from now on (see behaviour.Profile); reset() ends it."""
        self._call(
            "POST",
            "/_fake/profile",
            {"error_rate": error_rate, "delay": delay, "seed": seed, "error_status": error_status},
        )

    def requests(self) -> list[dict[str, Any]]:
        """What arrived so far: method, path, query, headers (lower-case names), json, text, at."""
        result: list[dict[str, Any]] = self._call("GET", "/_fake/requests")
        return result

    def reset(self) -> None:
        """Forget recorded requests, any queued script and the profile."""
        self._call("DELETE", "/_fake/requests")

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
