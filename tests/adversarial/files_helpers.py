"""Bad and half-written config files, and the processes that read them (sidecar --snapshot, `modelway dev`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.fakes.server import DEFAULT_KEYS
from tests.integration.sidecar import REPO, free_port

# Looks like a key; must never show in any message about a broken file.
FILE_KEY = "sk-file-9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a"

DEEP = ("[" * 100_000).encode()  # PyYAML's composer recurses once per level
DEEP_MAP = ("".join(f"{'  ' * i}k{i}:\n" for i in range(300)) + "  " * 300 + "v\n").encode()
BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))
).encode()  # 10^9 values once aliases are expanded


def snapshot_routes(openai_url: str, names: list[str]) -> dict[str, Any]:
    """One provider; one route per name, each serving the model of the same name."""
    return {
        "providers": [
            {"name": "oai", "type": "openai", "baseUrl": openai_url + "/v1", "apiKey": DEFAULT_KEYS["openai"]}
        ],
        "routes": [
            {
                "name": n,
                "model": n,
                "rules": [{"name": "default", "backends": [{"provider": "oai", "model": "gpt-4o"}]}],
            }
            for n in names
        ],
    }


def apikey_syntax_error(openai_url: str) -> bytes:
    """A snapshot whose apiKey line breaks the YAML (an unclosed quote after the key)."""
    return (
        f"providers:\n  - name: oai\n    type: openai\n    baseUrl: {openai_url}/v1\n"
        f'    apiKey: {FILE_KEY}: "oops\n'
        "routes: []\n"
    ).encode()


def write_in_place(path: Path, data: bytes) -> None:
    """As an editor or `echo >` does: truncate, then write (a poll may see it half done)."""
    old = path.stat().st_mtime_ns if path.exists() else 0
    with open(path, "wb") as out:
        out.write(data)
    if path.stat().st_mtime_ns <= old:  # a coarse clock must not hide the change
        os.utime(path, ns=(old + 1_000_000, old + 1_000_000))


def chat(base_url: str, model: str, timeout: float = 10) -> int:
    request = urllib.request.Request(
        base_url + "/v1/chat/completions",
        method="POST",
        headers={"content-type": "application/json"},
        data=json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode(),
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


class Caller(threading.Thread):
    """Sends requests one after another until stopped; keeps every status."""

    def __init__(self, base_url: str, model: str) -> None:
        super().__init__(daemon=True)
        self.base_url, self.model = base_url, model
        self.statuses: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.statuses.append(chat(self.base_url, self.model))
            except OSError as exc:
                self.statuses.append(-1)
                self.error = exc

    def stop(self) -> list[int]:
        self._stop_event.set()
        self.join(15)
        return self.statuses


def wait_until(predicate: Any, timeout: float = 10, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")


# --- modelway dev -------------------------------------------------------------------------


def dev_provider(openai_url: str) -> str:
    return f"""apiVersion: modelway.io/v1alpha1
kind: ModelProvider
metadata: {{name: openai}}
spec:
  type: openai
  baseURL: {openai_url}/v1
  credentialsRef: {{name: creds, key: openai}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds, labels: {{modelway.io/credentials: "true"}}}}
stringData: {{openai: {DEFAULT_KEYS["openai"]}}}
"""


def dev_routes(names: list[str]) -> str:
    return "".join(
        f"""---
apiVersion: modelway.io/v1alpha1
kind: ModelRoute
metadata: {{name: {n}}}
spec:
  model: {n}
  rules:
    - backends: [{{provider: openai, model: gpt-4o}}]
"""
        for n in names
    )


def dev_apikey_syntax_error() -> bytes:
    return (
        f'apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData:\n  openai: {FILE_KEY}: "oops\n'
    ).encode()


class DevProcess:
    """`modelway dev` on free ports, its output (controller and sidecar) in a file."""

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self.port, self.admin_port, self.controller_port = free_port(), free_port(), free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkdtemp(prefix="modelway-dev-test-")) / "dev.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DevProcess:
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller.dev",
                "dev",
                "--config-dir",
                str(self.config_dir),
                "--port",
                str(self.port),
                "--admin-port",
                str(self.admin_port),
                "--controller-port",
                str(self.controller_port),
            ],
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "OTEL_SDK_DISABLED": "true"},
            start_new_session=True,
        )
        wait_until(lambda: "modelway dev is up" in self.logs() or self._proc.poll() is not None, 40, "dev to start")
        assert self._proc.poll() is None, self.logs()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        self._proc.terminate()
        try:
            self._proc.wait(20)
        except subprocess.TimeoutExpired:
            self._proc.kill()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def models(self) -> set[str]:
        with urllib.request.urlopen(self.base_url + "/v1/models", timeout=5) as resp:
            return {m["id"] for m in json.loads(resp.read())["data"]}


def dump_yaml(data: dict[str, Any]) -> bytes:
    return yaml.safe_dump(data, sort_keys=False).encode()
