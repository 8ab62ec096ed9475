"""A real sidecar in front of a hostile provider whose answers have no bound (100 MB bodies, gzip
bombs, endless events, 50 MB lines, 20,000 headers): each is a 502 (or the stream's error event)
while memory, fds and the event loop stay as they were."""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from typing import Any

import pytest

from tests.adversarial.answers_helpers import (
    Answer,
    assert_openai_error,
    assert_stream_ends_with_error,
    chat,
    chunk,
    completion,
    fd_count,
    good_stream,
    health_probe,
    models_asked,
    peak_rss_kb,
    pid_of,
    rss_kb,
)
from tests.adversarial.hostile import HostileProvider, Received, http, raw, sse
from tests.integration.sidecar import SidecarProcess

MiB = 1024 * 1024


# --- 6, 7. answers of unbounded size, and heads that would take quadratic time ----------------


def _bounded(sidecar: SidecarProcess, run: Any, *, peak_growth_mib: float) -> Answer:
    """Runs `run()` (the app's call) while /healthz is probed: the loop answers within 250 ms
    throughout, the peak RSS grows by less than `peak_growth_mib` and no fd is left behind. (A loop
    held by an inflating bomb or a quadratic parse is held for seconds; the margin is for a busy
    machine's scheduling, which alone has reached 0.2 s on 2 cores.)"""
    pid = pid_of(sidecar)
    fds, peak = fd_count(pid), peak_rss_kb(pid)
    with health_probe(sidecar) as probe:
        time.sleep(0.05)
        answer = run()
    assert probe.latencies and max(probe.latencies) < 0.25, sorted(probe.latencies)[-3:]
    growth = (peak_rss_kb(pid) - peak) / 1024
    assert growth < peak_growth_mib, f"peak RSS grew by {growth:.0f} MiB (now {rss_kb(pid) // 1024} MiB)"
    time.sleep(0.1)  # the closed connection's fd is released on the loop's next turn
    assert fd_count(pid) <= fds, (fds, fd_count(pid))
    return answer


def _big_body(size: int, *, chunked: bool) -> Any:
    async def answer(_: Received, writer: Any) -> None:
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        piece = b"x" * MiB
        if chunked:
            writer.write(head + b"transfer-encoding: chunked\r\n\r\n")
            for _ in range(size // MiB):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(head + b"content-length: %d\r\n\r\n" % size)
            for _ in range(size // MiB):
                writer.write(piece)
                await writer.drain()
        await writer.drain()

    return answer


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_100_mb_answer_is_a_502_without_buffering_it(
    provider: HostileProvider, sidecar: SidecarProcess, chunked: bool
) -> None:
    provider.script(_big_body(100 * MiB, chunked=chunked))
    answer = _bounded(sidecar, lambda: chat(sidecar), peak_growth_mib=48)
    assert_openai_error(answer, 502, "larger than", str(32 * MiB))


def _gzip_bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MiB)
    return b"".join([compressor.compress(zeros) for _ in range(size // MiB)] + [compressor.flush()])


BOMB = _gzip_bomb(512 * MiB)  # ~500 KB that inflate to 512 MiB


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_a_gzip_bomb_is_a_502_without_inflating_it(
    provider: HostileProvider, sidecar: SidecarProcess, stream: bool
) -> None:
    content_type = b"text/event-stream" if stream else b"application/json"
    provider.script(
        raw(
            b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s"
            % (content_type, len(BOMB), BOMB)
        )
    )
    answer = _bounded(sidecar, lambda: chat(sidecar, stream=stream), peak_growth_mib=48)
    # a stream of zeros has no event boundary: the event limit comes first
    assert_openai_error(answer, 502, "a stream event is longer than" if stream else "decompresses to more than")


def test_a_gzip_bomb_of_events_ends_the_stream_at_the_decompressed_limit(
    provider: HostileProvider, sidecar: SidecarProcess
) -> None:
    """Well-formed content events that inflate without end: relayed up to the limit, then the error event."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    events = chunk({"content": "x" * 4000}) * 256  # ~1 MiB of events, compressing ~1000:1
    bomb = b"".join([compressor.compress(events) for _ in range(100)] + [compressor.flush()])
    provider.script(
        raw(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(bomb), bomb)
        )
    )
    answer = _bounded(sidecar, lambda: chat(sidecar, stream=True), peak_growth_mib=48)
    assert_stream_ends_with_error(answer, "decompresses to more than")
    assert 30 * MiB < len(answer.raw) < 34 * MiB


def test_endless_events_without_content_are_a_502(provider: HostileProvider, sidecar: SidecarProcess) -> None:
    """Nothing to relay yet, so the sidecar holds them: not without end, even when the content comes in
    the same read as the events past the bound."""
    provider.script(sse([b'data: {"choices": []}\n\n' * 1000] * 10 + good_stream()), http(200, completion()))
    answer = _bounded(sidecar, lambda: chat(sidecar, stream=True), peak_growth_mib=24)
    assert_openai_error(answer, 502, "without content")


def test_a_gzipped_answer_within_the_limits_is_read(provider: HostileProvider, sidecar: SidecarProcess) -> None:
    body = zlib.compress(completion("zipped"), 6, wbits=31)
    provider.script(
        raw(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
    )
    assert chat(sidecar).json()["choices"][0]["message"]["content"] == "zipped"


def _long_line(size: int, *, after_content: bool) -> Any:
    async def answer(_: Received, writer: Any) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")  # until close
        if after_content:
            writer.write(chunk({"role": "assistant", "content": "partial"}))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b'data: {"choices": [{"index": 0, "delta": {"content": "')
        piece = b"a" * (64 * 1024)
        for _ in range(size // len(piece)):
            writer.write(piece)
            await writer.drain()

    return answer


@pytest.mark.parametrize("after_content", [False, True], ids=["before-content", "mid-stream"])
def test_a_50_mb_sse_line_is_refused_at_the_event_limit(
    provider: HostileProvider, sidecar: SidecarProcess, after_content: bool
) -> None:
    provider.script(_long_line(50 * MiB, after_content=after_content))
    started = time.monotonic()
    answer = _bounded(sidecar, lambda: chat(sidecar, stream=True), peak_growth_mib=24)
    assert time.monotonic() - started < 5
    if after_content:
        assert_stream_ends_with_error(answer, "longer than 1048576 bytes")
    else:
        assert_openai_error(answer, 502, "longer than 1048576 bytes")


def test_a_long_stream_of_small_events_is_relayed_whole(provider: HostileProvider, sidecar: SidecarProcess) -> None:
    """The event limit is per event: 5 MB of stream in small events, sent a few bytes at a time."""
    events = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": "x" * 500})] * 10_000
    stream = b"".join([*events, chunk(finish="stop"), b"data: [DONE]\n\n"])
    provider.script(sse([stream[i : i + 7_777] for i in range(0, len(stream), 7_777)]))
    answer = chat(sidecar, stream=True)
    assert answer.events()[-1] == "[DONE]"
    assert (
        sum(
            len(json.loads(e)["choices"][0]["delta"].get("content") or "")
            for e in answer.events()[:-1]
            if json.loads(e)["choices"]
        )
        == 5_000_000
    )


def _headers(count: int, *, value: bytes = b"1") -> Any:
    body = completion()
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    return raw(head + b"".join(b"x-repeated: %s\r\n" % value for _ in range(count)) + b"\r\n" + body)


def test_20000_repeated_headers_are_a_502_at_once(provider: HostileProvider, sidecar: SidecarProcess) -> None:
    provider.script(_headers(20_000))
    started = time.monotonic()
    answer = _bounded(sidecar, lambda: chat(sidecar), peak_growth_mib=16)
    assert time.monotonic() - started < 1
    assert_openai_error(answer, 502, "more than 100 headers")


def test_one_huge_header_is_a_502(provider: HostileProvider, sidecar: SidecarProcess) -> None:
    provider.script(_headers(1, value=b"v" * (8 * MiB)))
    answer = _bounded(sidecar, lambda: chat(sidecar), peak_growth_mib=16)
    assert_openai_error(answer, 502, "head is larger than 65536 bytes")


def test_answers_with_many_but_not_too_many_headers_are_read(
    provider: HostileProvider, sidecar: SidecarProcess
) -> None:
    provider.script(_headers(90, value=b"v" * 500))
    assert chat(sidecar).status == 200
    since = len(provider.received)
    provider.script(_headers(20_000), http(200, completion("fallback")))
    assert chat(sidecar, "fb").status == 200 and models_asked(provider, since) == ["m-upstream", "m-fallback"]


def test_an_error_answer_of_100_mb_is_read_only_for_its_message(
    provider: HostileProvider, sidecar: SidecarProcess
) -> None:
    async def answer(_: Received, writer: Any) -> None:
        writer.write(b"HTTP/1.1 500 Oops\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % (100 * MiB))
        writer.write(b'{"error": {"message": "')
        for _ in range(100):
            writer.write(b"x" * MiB)
            await writer.drain()

    provider.script(answer)
    assert_openai_error(_bounded(sidecar, lambda: chat(sidecar), peak_growth_mib=16), 502, "5xx 500")
