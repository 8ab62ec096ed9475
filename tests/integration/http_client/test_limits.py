"""The provider client's limits on an answer (AnswerLimits): each is refused as AnswerTooLarge (or a
protocol violation), the connection closed at once, and answers within them are unaffected."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable

import pytest

from proxy.http_client import AnswerLimits, AnswerTooLarge, HttpClient, UpstreamProtocolViolation
from tests.integration.http_client.servers import (
    CHUNKED_HEAD,
    LAST_CHUNK,
    RawConn,
    RawServer,
    answer_every_request,
    chunk,
    http_response,
    within,
)

JSON = {"content-type": "application/json"}
SMALL = AnswerLimits(
    max_body_bytes=64 * 1024,
    max_header_count=10,
    max_header_bytes=2048,
    max_error_body_bytes=100,
    max_interim_answers=3,
)


def answer_once(data: bytes, *, hold: bool = True) -> Callable[[RawConn], object]:
    async def handler(conn: RawConn) -> None:
        if conn.index > 0:
            await answer_every_request(conn)
            return
        await conn.read_request()
        conn.send(data)
        await conn.drain()
        if hold:
            await conn.wait_until_peer_closes()

    return handler


async def fetch_after(client: HttpClient, server: RawServer) -> bytes:
    """The next request works on a new connection: the bad one was closed, not pooled."""
    resp = await within(client.post(server.url, body=b"{}", headers=JSON))
    async with resp:
        return await within(resp.read())


@pytest.mark.parametrize(
    "head, message",
    [
        (b"HTTP/1.1 200 OK\r\n" + b"x-a: 1\r\n" * 11 + b"content-length: 2\r\n\r\n{}", "more than 10 headers"),
        (b"HTTP/1.1 200 OK\r\nx-big: " + b"v" * 5000 + b"\r\ncontent-length: 2\r\n\r\n{}", "head is larger than 2048"),
        (
            b"HTTP/1.1 100 Continue\r\n\r\n" * 4 + b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
            "more than 3 interim",
        ),
        (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n", "switched protocols"),
    ],
    ids=["count", "size", "interim", "101"],
)
async def test_heads_past_the_limits_fail_the_post(
    make_client: Callable[..., HttpClient], head: bytes, message: str
) -> None:
    client = make_client(limits=SMALL)
    async with RawServer(answer_once(head)) as server:
        with pytest.raises(UpstreamProtocolViolation, match=message):
            await within(client.post(server.url, body=b"{}", headers=JSON))
        await within(server.conns[0].peer_closed.wait())
        assert await fetch_after(client, server) == b'{"conn": 1}'


async def test_a_head_within_the_limits_is_read(make_client: Callable[..., HttpClient]) -> None:
    client = make_client(limits=SMALL)
    head = http_response(b"{}", headers="x-a: 1\r\n" * 7)
    async with RawServer(answer_once(head, hold=False)) as server:
        resp = await within(client.post(server.url, body=b"{}", headers=JSON))
        async with resp:
            assert resp.headers.get("x-a") == ", ".join(["1"] * 7) and await within(resp.read()) == b"{}"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_body_past_the_limit_is_refused_and_the_connection_closed(
    make_client: Callable[..., HttpClient], framing: str
) -> None:
    client = make_client(limits=SMALL)
    body = b"x" * (200 * 1024)
    data = http_response(body) if framing == "content-length" else CHUNKED_HEAD + chunk(body) + LAST_CHUNK
    async with RawServer(answer_once(data)) as server:
        resp = await within(client.post(server.url, body=b"{}", headers=JSON))
        with pytest.raises(AnswerTooLarge, match="larger than the sidecar's limit of 65536 bytes"):
            await within(resp.read())
        resp.close()
        await within(server.conns[0].peer_closed.wait())
        assert await fetch_after(client, server) == b'{"conn": 1}'


async def test_a_declared_length_past_the_limit_is_refused_before_reading(
    make_client: Callable[..., HttpClient],
) -> None:
    client = make_client(limits=SMALL)
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 999999999\r\n\r\n"  # no body ever comes
    async with RawServer(answer_once(head)) as server:
        resp = await within(client.post(server.url, body=b"{}", headers=JSON))
        with pytest.raises(AnswerTooLarge):
            await within(resp.read(), 0.5)


async def test_an_error_body_is_read_only_as_far_as_asked(make_client: Callable[..., HttpClient]) -> None:
    client = make_client(limits=SMALL)
    data = http_response(b'{"error": "' + b"e" * 100_000 + b'"}', status="500 Oops")
    async with RawServer(answer_once(data, hold=False)) as server:
        resp = await within(client.post(server.url, body=b"{}", headers=JSON))
        assert await within(resp.read(100, truncate=True)) == b'{"error": "' + b"e" * 89
        resp.close()
        assert await fetch_after(client, server) == b'{"conn": 1}'


def gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize("how", ["read", "iter_any"])
async def test_a_gzip_bomb_stops_at_the_body_limit(make_client: Callable[..., HttpClient], how: str) -> None:
    client = make_client(limits=SMALL)
    bomb = gzip(bytes(64 * 1024 * 1024))  # 64 MiB of zeros in ~64 KB
    head = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(bomb)
    async with RawServer(answer_once(head + bomb)) as server:
        resp = await within(client.post(server.url, body=b"{}", headers=JSON))
        got = 0
        with pytest.raises(AnswerTooLarge, match="decompresses to more than 65536 bytes"):
            if how == "read":
                await within(resp.read(10**9))
            async for data in resp.iter_any():
                got += len(data)
        assert got <= 64 * 1024
        await within(server.conns[0].peer_closed.wait())


async def test_a_gzip_answer_is_inflated_a_step_per_loop_turn(make_client: Callable[..., HttpClient]) -> None:
    """8 MiB that inflate from ~8 KB: other tasks run between the steps (no step holds the loop long)."""
    client = make_client(read_buffer_limit=64 * 1024)
    original = bytes(8 * 1024 * 1024)
    body = gzip(original)
    head = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(body)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    async with RawServer(answer_once(head + body, hold=False)) as server:
        task = asyncio.create_task(ticker())
        resp = await within(client.post(server.url, body=b"{}", headers=JSON))
        async with resp:
            pieces = [len(data) async for data in resp.iter_any()]
        task.cancel()
    assert sum(pieces) == len(original) and max(pieces) <= 64 * 1024
    assert ticks >= len(pieces) // 2


async def test_a_corrupt_gzip_body_is_a_protocol_violation(make_client: Callable[..., HttpClient]) -> None:
    client = make_client()
    body = b"\x1f\x8b\x08\x00garbage-not-deflate"
    head = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(body)
    async with RawServer(answer_once(head + body)) as server:
        resp = await within(client.post(server.url, body=b"{}", headers=JSON))
        with pytest.raises(UpstreamProtocolViolation, match="corrupt gzip"):
            await within(resp.read())
