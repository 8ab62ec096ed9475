"""Helpers for the provider-answer tests: the app's calls, answer bodies, and /proc readings."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.adversarial.hostile import HostileProvider
from tests.integration.sidecar import SidecarProcess

USER = [{"role": "user", "content": "hi"}]


@dataclass
class Answer:
    status: int
    content_type: str
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)

    def events(self) -> list[str]:
        """The data of each SSE event (the stream as the app reads it)."""
        return [line[6:] for line in self.raw.decode().split("\n") if line.startswith("data: ")]


def call(sidecar: SidecarProcess, path: str, body: dict[str, Any], *, timeout: float = 20) -> Answer:
    request = urllib.request.Request(
        sidecar.base_url + path,
        method="POST",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return Answer(resp.status, resp.headers.get("content-type", ""), resp.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.headers.get("content-type", ""), exc.read())


def chat(sidecar: SidecarProcess, model: str = "m", *, stream: bool = False, timeout: float = 20) -> Answer:
    return call(sidecar, "/v1/chat/completions", {"model": model, "messages": USER, "stream": stream}, timeout=timeout)


def models_asked(provider: HostileProvider, since: int) -> list[str]:
    """The models the provider was asked for since its `since`-th request."""
    return [json.loads(r.body).get("model", "") for r in provider.received[since:]]


def metric_lines(sidecar: SidecarProcess, name: str) -> list[str]:
    """The sidecar's /metrics lines for one metric."""
    with urllib.request.urlopen(sidecar.admin_url + "/metrics", timeout=5) as resp:
        assert resp.status == 200
        return [line for line in resp.read().decode().splitlines() if line.startswith(name)]


def messages(sidecar: SidecarProcess, *, stream: bool = False) -> Answer:
    return call(sidecar, "/v1/messages", {"model": "m", "max_tokens": 16, "messages": USER, "stream": stream})


def assert_openai_error(answer: Answer, status: int, *fragments: str) -> dict[str, Any]:
    assert answer.status == status, (answer.status, answer.raw[:500])
    assert answer.content_type.startswith("application/json"), answer.content_type
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["type"] == ("api_error" if status >= 500 else error["type"])
    for fragment in fragments:
        assert fragment in error["message"], error["message"]
    return error


def assert_stream_ends_with_error(answer: Answer, *fragments: str) -> dict[str, Any]:
    """A stream that started, then failed: its last event is the API's error event, and no [DONE]."""
    assert answer.status == 200 and answer.content_type.startswith("text/event-stream"), answer
    events = answer.events()
    assert events and "[DONE]" not in events, events[-3:]
    error = json.loads(events[-1])["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "api_error", error
    for fragment in fragments:
        assert fragment in error["message"], error["message"]
    return error


def completion(content: str = "fine", **extra: Any) -> bytes:
    return json.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": "m-upstream",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            **extra,
        }
    ).encode()


def chunk(delta: dict[str, Any] | None = None, *, finish: str | None = None, **extra: Any) -> bytes:
    choice = {"index": 0, "delta": delta if delta is not None else {}, "finish_reason": finish}
    data = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m-upstream",
        "choices": [choice],
        **extra,
    }
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def good_stream() -> list[bytes]:
    return [
        chunk({"role": "assistant", "content": "he"}),
        chunk({"content": "llo"}),
        chunk(finish="stop"),
        b"data: [DONE]\n\n",
    ]


# --- the sidecar process, from /proc ----------------------------------------------------------


def _status_kb(pid: int, field_name: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field_name} for {pid}")


def rss_kb(pid: int) -> int:
    return _status_kb(pid, "VmRSS")


def peak_rss_kb(pid: int) -> int:
    return _status_kb(pid, "VmHWM")


def fd_count(pid: int) -> int:
    import os

    return len(os.listdir(f"/proc/{pid}/fd"))


def pid_of(sidecar: SidecarProcess) -> int:
    assert sidecar._proc is not None  # the harness keeps its process private; tests read /proc by its pid
    return sidecar._proc.pid


@dataclass
class Probe:
    """GET /healthz on the admin port over and over: the slowest answer, while something else runs."""

    url: str
    latencies: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=5) as resp:
                resp.read()
            self.latencies.append(time.perf_counter() - started)
            time.sleep(0.005)


@contextmanager
def health_probe(sidecar: SidecarProcess) -> Iterator[Probe]:
    probe = Probe(sidecar.admin_url + "/healthz")
    thread = threading.Thread(target=probe.run, daemon=True)
    thread.start()
    try:
        yield probe
    finally:
        probe._stop.set()
        thread.join(10)


def paced_sse(events: list[bytes], *, pause: float = 0.05) -> Any:
    """A chunked SSE answer with a pause after each event, so the sidecar reads them one by one (the
    first one reaches the app before the next arrives)."""
    import asyncio

    async def answer(_: Any, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for event in events:
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(pause)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    return answer
