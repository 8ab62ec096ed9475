"""Backpressure through a real sidecar process in front of slow providers: the in-flight bounds,
the queue and its wait, the refusal the app gets (shape, retry-after), a client that leaves
giving its slot back, a full backend spilling to the fallback, and a provider that never answers
costing the pod a bounded amount of memory however many requests arrive."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.fakes.process import FakeProviderProcess
from tests.integration.sidecar import SidecarProcess

HELLO = [{"role": "user", "content": "hello"}]
QUEUE_WAIT = 1.5  # long enough for a slot to free within it (slow answers below take 0.8 s), short for tests
SLOW = {"delay": 0.8}  # an answer that keeps its slot a while
STALLED = {"delay": 4.0}  # an answer that outlasts the queue wait


class BlackHole:
    """A provider that accepts connections and never answers; counts what it accepted."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/v1"
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._server.accept()
                self.accepted.append(conn)  # held open, never read from nor written to

    def close(self) -> None:
        self._server.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture(scope="module")
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


def with_black_hole(snapshot: dict[str, Any], hole: BlackHole) -> dict[str, Any]:
    return {
        "providers": [
            *snapshot["providers"],
            {"name": "void", "type": "openai", "baseUrl": hole.url, "apiKey": "sk-x"},
        ],
        "routes": [
            *snapshot["routes"],
            {"name": "void", "model": "void", "rules": [{"backends": [{"provider": "void", "model": "m"}]}]},
        ],
    }


def bounds(*, backend: int, route: int, queued: int = 1) -> list[str]:
    return [
        f"--max-in-flight-per-backend={backend}",
        f"--max-in-flight-per-route={route}",
        f"--max-queued={queued}",
        f"--queue-wait={QUEUE_WAIT}",
    ]


@pytest.fixture(scope="module")
def per_backend(snapshot_data: dict[str, Any], black_hole: BlackHole) -> Iterator[SidecarProcess]:
    """Two calls per backend at once and one waiting; routes unbounded."""
    with SidecarProcess(with_black_hole(snapshot_data, black_hole), extra_args=bounds(backend=2, route=0)) as process:
        yield process


@pytest.fixture(scope="module")
def per_route(snapshot_data: dict[str, Any]) -> Iterator[SidecarProcess]:
    """Two requests per route at once and one waiting; backends unbounded."""
    with SidecarProcess(snapshot_data, extra_args=bounds(backend=0, route=2)) as process:
        yield process


def async_client(sidecar: SidecarProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sidecar.base_url + "/v1", api_key="placeholder", max_retries=0, timeout=20)


async def chat(client: openai.AsyncOpenAI, model: str = "gpt", *, after: float = 0.0) -> Any:
    """The answer, or the SDK's error; `after` seconds later than the others (arrival order)."""
    await asyncio.sleep(after)
    started = time.monotonic()
    try:
        reply = await client.chat.completions.create(model=model, messages=HELLO)  # type: ignore[arg-type]
    except openai.APIStatusError as error:
        return error, time.monotonic() - started
    return reply, time.monotonic() - started


def refused(results: list[Any]) -> list[openai.APIStatusError]:
    return [r for r, _ in results if isinstance(r, openai.APIStatusError)]


def metrics(sidecar: SidecarProcess) -> str:
    return sidecar.metrics_text()


def test_the_request_past_the_bound_and_the_queue_is_refused_503_in_the_openai_shape(
    per_backend: SidecarProcess, fake_openai: FakeProviderProcess
) -> None:
    fake_openai.script([SLOW, SLOW])

    async def burst() -> list[Any]:
        async with async_client(per_backend) as client:
            return await asyncio.gather(*(chat(client, after=0.05 * i) for i in range(4)))

    results = asyncio.run(burst())
    (error,) = refused(results)  # 2 in flight, 1 waiting, the 4th turned away
    assert isinstance(error, openai.InternalServerError) and error.status_code == 503
    assert error.response.headers["retry-after"] == "2"  # the queue wait, rounded up
    assert error.body == {"message": error.body["message"], "type": "server_error", "param": None, "code": "overloaded"}
    assert "backend oai/gpt-4o is at its bound of 2 requests in flight" in error.message
    assert max(seconds for r, seconds in results if r is error) < 1.0  # at once, not after the queue's wait
    served = [r for r, _ in results if not isinstance(r, openai.APIStatusError)]
    assert len(served) == 3 and all(r.choices[0].message.content == "echo: hello" for r in served)
    assert len(fake_openai.requests()) == 3  # the refused one never reached the provider
    assert 'modelway_backpressure_refusals_total{modelway_route="gpt",modelway_backpressure_scope="backend"}' in (
        metrics(per_backend)
    )


def test_a_queued_request_is_served_when_a_slot_frees(
    per_backend: SidecarProcess, fake_openai: FakeProviderProcess
) -> None:
    fake_openai.script([SLOW, SLOW])

    async def burst() -> list[Any]:
        async with async_client(per_backend) as client:
            return await asyncio.gather(*(chat(client, after=0.05 * i) for i in range(3)))

    results = asyncio.run(burst())
    assert refused(results) == []
    waited = results[2][1]
    assert waited >= 0.6  # it waited for one of the slow ones to end...
    assert waited < QUEUE_WAIT + 0.5  # ...and went out as soon as it did


def test_a_request_that_waits_past_the_queue_wait_is_refused(
    per_backend: SidecarProcess, fake_openai: FakeProviderProcess
) -> None:
    fake_openai.script([STALLED, STALLED])

    async def burst() -> list[Any]:
        async with async_client(per_backend) as client:
            return await asyncio.gather(*(chat(client, after=0.05 * i) for i in range(3)))

    results = asyncio.run(burst())
    (error,) = refused(results)
    assert error.status_code == 503 and error.body["code"] == "overloaded"
    waited = re.search(r"waited ([0-9.]+)s in the queue", error.message)
    assert waited and QUEUE_WAIT <= float(waited[1]) < QUEUE_WAIT + 0.5  # its own wait, however busy the machine
    seconds = next(s for r, s in results if r is error)
    assert QUEUE_WAIT - 0.1 <= seconds < STALLED["delay"]  # turned away at the wait's end, not the answer's


async def hang_up_after(sidecar: SidecarProcess, seconds: float) -> None:
    """A client that sends a chat request and closes its connection `seconds` later."""
    body = json.dumps({"model": "gpt", "messages": HELLO}).encode()
    _, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    writer.write(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body)
    await writer.drain()
    await asyncio.sleep(seconds)
    writer.close()


def test_a_client_that_leaves_gives_its_slot_back(
    per_backend: SidecarProcess, fake_openai: FakeProviderProcess
) -> None:
    fake_openai.script([STALLED, STALLED])

    async def scenario() -> tuple[Any, float]:
        async with async_client(per_backend) as client:
            staying = asyncio.create_task(chat(client))
            await hang_up_after(per_backend, 0.3)  # held a slot, then left
            await asyncio.sleep(0.2)
            result = await chat(client)  # a slot is free: out at once, not queued nor refused
            staying.cancel()
            return result

    reply, seconds = asyncio.run(scenario())
    assert not isinstance(reply, openai.APIStatusError), reply
    assert seconds < 1.2  # (a queued one would have waited for a stalled answer: 1.5 s, then a 503)


def test_a_full_backend_spills_to_the_fallback(
    per_backend: SidecarProcess, fake_openai: FakeProviderProcess, fake_anthropic: FakeProviderProcess
) -> None:
    fake_openai.script([SLOW, SLOW])

    async def scenario() -> list[Any]:
        async with async_client(per_backend) as client:
            # oai/gpt-4o: two in flight and one waiting (route gpt); then route resilient wants it too
            return await asyncio.gather(
                *(chat(client, after=0.05 * i) for i in range(3)), chat(client, "resilient", after=0.3)
            )

    results = asyncio.run(scenario())
    assert refused(results) == []
    spilled, seconds = results[3]
    assert spilled.model == "claude-sonnet-4-5" and seconds < 1.0  # the fallback, not after the queue's wait
    assert len(fake_anthropic.requests()) == 1
    text = metrics(per_backend)
    assert 'modelway_fallbacks_total{modelway_route="resilient"' in text
    fallbacks = [line for line in text.splitlines() if line.startswith("modelway_fallbacks_total{")]
    assert any('modelway_fallback_reason="overloaded"' in line for line in fallbacks), fallbacks


def test_a_full_route_refuses_at_once_in_each_api_shape(
    per_route: SidecarProcess, fake_openai: FakeProviderProcess, fake_anthropic: FakeProviderProcess
) -> None:
    fake_openai.script([SLOW, SLOW])
    fake_anthropic.script([SLOW, SLOW])

    async def burst(model: str) -> list[Any]:
        async with async_client(per_route) as client:
            return await asyncio.gather(*(chat(client, model, after=0.05 * i) for i in range(4)))

    (error,) = refused(asyncio.run(burst("gpt")))
    assert error.status_code == 503 and error.body["code"] == "overloaded"
    assert "route 'gpt' is at its bound of 2 requests in flight, with 1 more waiting" in error.message

    claude = anthropic.AsyncAnthropic(base_url=per_route.base_url, api_key="placeholder", max_retries=0, timeout=20)

    async def message(after: float) -> Any:
        await asyncio.sleep(after)
        try:
            return await claude.messages.create(model="claude", max_tokens=16, messages=HELLO)  # type: ignore[arg-type]
        except anthropic.APIStatusError as failure:
            return failure

    async def claude_burst() -> list[Any]:
        async with claude:
            return await asyncio.gather(*(message(0.05 * i) for i in range(4)))

    (failure,) = [r for r in asyncio.run(claude_burst()) if isinstance(r, anthropic.APIStatusError)]
    assert failure.status_code == 503 and failure.response.headers["retry-after"] == "2"
    assert failure.body["type"] == "error" and failure.body["error"]["type"] == "overloaded_error"
    assert "route 'claude' is at its bound of 2 requests in flight" in failure.body["error"]["message"]
    assert 'modelway_backpressure_refusals_total{modelway_route="claude",modelway_backpressure_scope="route"}' in (
        metrics(per_route)
    )


def test_the_sdks_built_in_retry_gets_through_once_the_burst_is_over(
    per_backend: SidecarProcess, fake_openai: FakeProviderProcess
) -> None:
    """The refusal's retry-after is the SDK's cue: with its default retries the app never sees it."""
    fake_openai.script([SLOW, SLOW])
    retrying = openai.AsyncOpenAI(base_url=per_backend.base_url + "/v1", api_key="placeholder", timeout=20)

    async def burst() -> list[Any]:
        async with retrying:
            return await asyncio.gather(*(chat(retrying, after=0.05 * i) for i in range(4)))

    assert refused(asyncio.run(burst())) == []


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_provider_that_never_answers_holds_a_bounded_number_of_requests(
    per_backend: SidecarProcess, black_hole: BlackHole
) -> None:
    """Crowds of 500 concurrent requests (50 KB prompts) at a provider that never answers: two go
    out, one waits, every other one is refused, and a second crowd costs the pod no more memory
    (without the bound each crowd would stay in the pod: about 100 MB more each time)."""
    pid = per_backend.pid
    prompt = [{"role": "user", "content": "x" * 50_000}]

    async def crowds(n: int) -> tuple[list[int], list[int]]:
        answered, rss = [], []
        async with async_client(per_backend) as client:  # (the SDK opens up to 1000 connections)
            waiting: list[asyncio.Task[Any]] = []
            for _ in range(2):
                tasks = [
                    asyncio.create_task(client.chat.completions.create(model="void", messages=prompt))  # type: ignore[arg-type]
                    for _ in range(n)
                ]
                waiting += tasks
                deadline = time.monotonic() + 60  # (500 connections at once take seconds on a busy machine)
                while sum(not t.done() for t in waiting) > 2 and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                rss.append(rss_kib(pid))
                assert 'modelway_backpressure_in_flight{modelway_backend="void/m"} 2' in metrics(per_backend)
                answered.append(sum(t.done() for t in tasks))
                for task in tasks:
                    if task.done():
                        assert isinstance(task.exception(), openai.InternalServerError)
            for task in waiting:
                task.cancel()  # the two that went out: their clients leave
            await asyncio.gather(*waiting, return_exceptions=True)
        return answered, rss

    before = rss_kib(pid)
    answered, (first, second) = asyncio.run(crowds(500))
    print(f"sidecar RSS: {before} KiB, {first} KiB after 500 requests, {second} KiB after 500 more")
    assert answered == [498, 500]  # refused 503 (two held by the provider, from the first crowd)
    assert len(black_hole.accepted) <= 2  # only the bound's worth ever reached the provider
    assert second - first < 20 * 1024
