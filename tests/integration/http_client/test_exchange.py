"""HttpClient exchanges that go right, against real sockets on 127.0.0.1:

- a plain POST: status, body, and the request as the server saw it (Host with port, Content-Length,
  caller headers, User-Agent, body bytes unchanged), large request bodies;
- keep-alive: sequential and concurrent reuse, separate pools per port, max_idle_per_host,
  idle_seconds, servers that refuse keep-alive (Connection: close, HTTP/1.0);
- streaming: post() returns at the headers, iter_any() yields each chunk while the server still holds
  the rest; chunked extensions and trailers; close-delimited bodies;
- non-200 statuses with readable headers, interim 1xx responses skipped, gzip/deflate bodies (read()
  and a gzip stream through iter_any()).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import zlib
from collections.abc import Callable

import pytest
from aiohttp import web

from proxy.http_client import HttpClient
from tests.integration.http_client.servers import (
    CHUNKED_HEAD,
    JSON,
    LAST_CHUNK,
    RawConn,
    RawServer,
    Recorder,
    answer_every_request,
    chunk,
    collect,
    fetch,
    http_response,
    pattern,
    serve_app,
    wait_for,
    within,
)

pytestmark = pytest.mark.timeout(10)


# --------------------------------------------------------------------------------------------------
# 1. a plain POST


async def test_post_returns_status_and_body_and_sends_the_request_unchanged(client: HttpClient) -> None:
    recorder = Recorder()
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "héllo"}]}).encode() + bytes(
        range(256)
    )  # every byte value, to catch any text re-encoding
    async with serve_app(recorder.app()) as port:
        resp = await within(
            client.post(
                f"http://127.0.0.1:{port}/v1/chat/completions?x=1",
                body=body,
                headers={
                    "content-type": "application/json",
                    "authorization": "Bearer sk-test",
                    "X-Request-Id": "abc-123",
                },
            )
        )
        async with resp:
            assert resp.status == 200
            assert resp.headers.get("content-type") == "application/json; charset=utf-8"
            assert resp.headers.get("Content-Type") == resp.headers.get("CONTENT-TYPE")
            assert json.loads(await within(resp.read())) == {"path": "/v1/chat/completions", "bytes": len(body)}

    [seen] = recorder.seen
    assert (seen.method, seen.path, seen.body) == ("POST", "/v1/chat/completions?x=1", body)
    assert seen.headers["Host"] == f"127.0.0.1:{port}"
    assert seen.headers["Content-Length"] == str(len(body))
    assert "Transfer-Encoding" not in seen.headers
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Authorization"] == "Bearer sk-test"
    assert seen.headers["X-Request-Id"] == "abc-123"
    assert seen.headers["User-Agent"] == "modelway-proxy"
    assert seen.headers["Accept-Encoding"] == "identity"  # small streamed answers: not worth compressing
    assert len(seen.headers.getall("Host")) == 1 and len(seen.headers.getall("Content-Length")) == 1


async def test_user_agent_option_and_empty_body(make_client: Callable[..., HttpClient]) -> None:
    client = make_client(user_agent="tester/1.0")
    recorder = Recorder()
    async with serve_app(recorder.app()) as port:
        assert await fetch(client, f"http://127.0.0.1:{port}/empty", body=b"") == (
            200,
            b'{"path": "/empty", "bytes": 0}',
        )
    [seen] = recorder.seen
    assert seen.headers["User-Agent"] == "tester/1.0"
    assert seen.headers.get("Content-Length") == "0" and seen.body == b""


async def test_large_request_body_arrives_intact(client: HttpClient) -> None:
    async def digest(request: web.Request, body: bytes) -> web.Response:
        return web.Response(text=hashlib.sha256(body).hexdigest())

    recorder = Recorder(reply=digest)
    body = pattern(8 * 1024 * 1024)
    async with serve_app(recorder.app()) as port:
        status, data = await fetch(client, f"http://127.0.0.1:{port}/upload", body=body)
    assert status == 200 and data.decode() == hashlib.sha256(body).hexdigest()


# --------------------------------------------------------------------------------------------------
# 2. keep-alive reuse


async def test_sequential_requests_reuse_one_connection(client: HttpClient) -> None:
    recorder = Recorder()
    async with serve_app(recorder.app()) as port:
        for i in range(5):
            assert (await fetch(client, f"http://127.0.0.1:{port}/r{i}"))[0] == 200
    assert client.connections_opened == 1
    assert len(recorder.peers) == 1 and len(recorder.seen) == 5


async def test_body_consumed_through_iter_any_also_releases_the_connection_for_reuse(client: HttpClient) -> None:
    recorder = Recorder()
    async with serve_app(recorder.app()) as port:
        for _ in range(3):
            resp = await within(client.post(f"http://127.0.0.1:{port}/", body=b"{}", headers=JSON))
            async with resp:
                assert json.loads(b"".join(await within(collect(resp))))["bytes"] == 2
    assert client.connections_opened == 1 and len(recorder.peers) == 1


async def test_a_closed_answers_headers_stay_readable_after_its_connection_serves_the_next(client: HttpClient) -> None:
    async def reply(request: web.Request, body: bytes) -> web.Response:
        return web.json_response({}, headers={"X-Request-Id": request.path.strip("/"), "Retry-After": "7"})

    async with serve_app(Recorder(reply=reply).app()) as port:
        first = await within(client.post(f"http://127.0.0.1:{port}/one", body=b"{}", headers=JSON))
        async with first:
            await within(first.read())
        second = await within(client.post(f"http://127.0.0.1:{port}/two", body=b"{}", headers=JSON))
        async with second:
            await within(second.read())
    assert client.connections_opened == 1  # the second answer came on the first's connection
    assert (first.headers.get("x-request-id"), first.headers.get("Retry-After")) == ("one", "7")
    assert second.headers.get("X-Request-Id") == "two"


async def test_concurrent_requests_open_several_connections_and_reuse_them_afterwards(client: HttpClient) -> None:
    barrier = asyncio.Barrier(4)  # each request is answered only once 4 are in flight at the same time

    async def after_barrier(request: web.Request, body: bytes) -> web.Response:
        await asyncio.wait_for(barrier.wait(), 2)
        return web.json_response({"ok": True})

    recorder = Recorder(reply=after_barrier)
    async with serve_app(recorder.app()) as port:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(2):
            results = await within(asyncio.gather(*(fetch(client, url) for _ in range(4))))
            assert results == [(200, b'{"ok": true}')] * 4
    assert client.connections_opened == 4
    assert len(recorder.peers) == 4 and len(recorder.seen) == 8


async def test_each_host_and_port_has_its_own_pool(client: HttpClient) -> None:
    first, second = Recorder(), Recorder()
    async with serve_app(first.app()) as port_a, serve_app(second.app()) as port_b:
        for _ in range(3):
            await fetch(client, f"http://127.0.0.1:{port_a}/a")
            await fetch(client, f"http://127.0.0.1:{port_b}/b")
    assert [s.path for s in first.seen] == ["/a"] * 3 and [s.path for s in second.seen] == ["/b"] * 3
    assert client.connections_opened == 2


async def test_max_idle_per_host_closes_the_connections_beyond_it(make_client: Callable[..., HttpClient]) -> None:
    client = make_client(max_idle_per_host=2)
    barrier = asyncio.Barrier(4)

    async def handler(conn: RawConn) -> None:
        while (await conn.read_request()) is not None:
            await asyncio.wait_for(barrier.wait(), 2)
            conn.send(http_response())

    async with RawServer(handler) as server:
        await within(asyncio.gather(*(fetch(client, server.url) for _ in range(4))))
        assert client.connections_opened == 4
        # two of the four are kept idle; the client closes the other two
        await within(wait_for(lambda: sum(c.peer_closed.is_set() for c in server.conns) >= 2))
        await asyncio.sleep(0.05)
        assert sum(c.peer_closed.is_set() for c in server.conns) == 2
        await within(asyncio.gather(*(fetch(client, server.url) for _ in range(4))))
        assert client.connections_opened == 6


async def test_idle_connection_older_than_idle_seconds_is_not_reused(make_client: Callable[..., HttpClient]) -> None:
    client = make_client(idle_seconds=0.1)
    async with RawServer(answer_every_request) as server:
        await fetch(client, server.url)
        await fetch(client, server.url)
        assert client.connections_opened == 1
        await asyncio.sleep(0.3)
        assert await fetch(client, server.url) == (200, b'{"conn": 1}')
        assert client.connections_opened == 2


@pytest.mark.parametrize(
    "response",
    [http_response(b"ok", headers="Connection: close\r\n"), b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"],
    ids=["connection-close", "http-1.0"],
)
async def test_connection_is_not_reused_when_the_server_refuses_keep_alive(client: HttpClient, response: bytes) -> None:
    async def handler(conn: RawConn) -> None:  # answers, but leaves the closing to the client
        while (await conn.read_request()) is not None:
            conn.send(response)

    async with RawServer(handler) as server:
        assert await fetch(client, server.url) == (200, b"ok")
        assert await fetch(client, server.url) == (200, b"ok")
        assert client.connections_opened == 2 and len(server.conns) == 2
        assert [len(c.requests) for c in server.conns] == [1, 1]
        await within(server.conns[0].peer_closed.wait())


async def test_client_close_closes_idle_pooled_connections(client: HttpClient) -> None:
    async with RawServer(answer_every_request) as server:
        await fetch(client, server.url)
        assert not server.conns[0].peer_closed.is_set()
        await within(client.close())
        await within(server.conns[0].peer_closed.wait())


# --------------------------------------------------------------------------------------------------
# 3. streaming


async def test_post_returns_at_the_headers_and_iter_any_yields_chunks_as_they_arrive(client: HttpClient) -> None:
    send_first, send_rest = asyncio.Event(), asyncio.Event()

    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        conn.send(CHUNKED_HEAD)
        await send_first.wait()
        conn.send(chunk(b"data: one\n\n"))
        await send_rest.wait()
        conn.send(chunk(b"data: two\n\n") + chunk(b"data: [DONE]\n\n") + LAST_CHUNK)
        await conn.wait_until_peer_closes()

    async with RawServer(handler) as server:
        resp = await within(client.post(server.url, body=b"{}", headers=JSON))  # no body byte sent yet
        async with resp:
            assert resp.status == 200 and resp.headers.get("content-type") == "text/event-stream"
            chunks = resp.iter_any()
            send_first.set()
            first = b""
            while len(first) < len(b"data: one\n\n"):
                first += await within(anext(chunks))
            assert first == b"data: one\n\n"  # the chunk framing is removed
            send_rest.set()
            rest = [c async for c in chunks]
            assert all(rest)
            assert first + b"".join(rest) == b"data: one\n\ndata: two\n\ndata: [DONE]\n\n"
    assert client.connections_opened == 1


async def test_chunked_body_with_extensions_trailers_and_many_chunks_is_read_whole(client: HttpClient) -> None:
    pieces = [b"x" * n for n in (1, 15, 16, 255, 4096, 70000)]

    async def handler(conn: RawConn) -> None:
        while (await conn.read_request()) is not None:
            conn.send(CHUNKED_HEAD)
            for piece in pieces:
                conn.send(f"{len(piece):X};ext=1\r\n".encode() + piece + b"\r\n")  # upper-case hex, extension
                await asyncio.sleep(0)
            conn.send(b"0\r\nX-Trailer: yes\r\n\r\n")

    async with RawServer(handler) as server:
        assert await fetch(client, server.url) == (200, b"".join(pieces))
        assert await fetch(client, server.url) == (200, b"".join(pieces))  # framing fully consumed: reusable
    assert client.connections_opened == 1


# --------------------------------------------------------------------------------------------------
# 4. close-delimited bodies


@pytest.mark.parametrize("connection_header", ["Connection: close\r\n", ""], ids=["connection-close", "no-header"])
async def test_close_delimited_body_is_read_whole_and_the_connection_not_reused(
    client: HttpClient, connection_header: str
) -> None:
    parts = [b'{"choices": [', b'{"text": "hi"}', b"]}"]

    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        if conn.index == 0:
            conn.send(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{connection_header}\r\n".encode())
            for part in parts:
                conn.send(part)
                await conn.drain()
                await asyncio.sleep(0.01)
        else:
            conn.send(http_response(b"second"))
        # returning closes the connection: that is the end of the first body

    async with RawServer(handler) as server:
        assert await fetch(client, server.url) == (200, b"".join(parts))
        assert await fetch(client, server.url) == (200, b"second")
        assert client.connections_opened == 2 and len(server.conns) == 2


async def test_close_delimited_body_through_iter_any(client: HttpClient) -> None:
    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc")
        await asyncio.sleep(0.02)
        conn.send(b"def")

    async with RawServer(handler) as server:
        resp = await within(client.post(server.url, body=b"{}", headers=JSON))
        async with resp:
            assert b"".join(await within(collect(resp))) == b"abcdef"


# --------------------------------------------------------------------------------------------------
# 5. error statuses


async def test_error_statuses_come_back_as_responses_with_readable_headers(client: HttpClient) -> None:
    async def reply(request: web.Request, body: bytes) -> web.Response:
        if request.path == "/429":
            return web.json_response(
                {"error": {"type": "rate_limit"}},
                status=429,
                headers={"Retry-After": "7", "X-RateLimit-Remaining": "0"},
            )
        return web.Response(status=503, text="upstream overloaded")

    async with serve_app(Recorder(reply=reply).app()) as port:
        resp = await within(client.post(f"http://127.0.0.1:{port}/429", body=b"{}", headers=JSON))
        async with resp:
            assert resp.status == 429
            assert resp.headers.get("retry-after") == "7" and resp.headers.get("Retry-After") == "7"
            assert resp.headers.get("x-ratelimit-remaining") == "0"
            assert resp.headers.get("x-missing") is None
            assert resp.headers.get("x-missing", "fallback") == "fallback"
            assert json.loads(await within(resp.read())) == {"error": {"type": "rate_limit"}}

        resp = await within(client.post(f"http://127.0.0.1:{port}/503", body=b"{}", headers=JSON))
        async with resp:
            assert resp.status == 503
            assert resp.headers.get("retry-after") is None
            assert resp.headers.get("content-type", "").startswith("text/plain")
            assert await within(resp.read()) == b"upstream overloaded"
    assert client.connections_opened == 1  # error answers with keep-alive do not cost a connection


@pytest.mark.parametrize(
    "interim",
    [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"],
    ids=["100", "103"],
)
async def test_interim_1xx_responses_are_skipped(client: HttpClient, interim: bytes) -> None:
    """RFC 9110 15.2: a client must parse 1xx responses it did not ask for and wait for the final one.
    Taking the 1xx as the answer would also leave the real answer to land on the pooled connection,
    where the next request would read it."""

    async def handler(conn: RawConn) -> None:
        while (request := await conn.read_request()) is not None:
            conn.send(interim)
            await conn.drain()
            await asyncio.sleep(0.02)
            conn.send(http_response(b"answer to " + request.body))

    async with RawServer(handler) as server:
        assert await fetch(client, server.url, body=b"1") == (200, b"answer to 1")
        assert await fetch(client, server.url, body=b"2") == (200, b"answer to 2")
    assert client.connections_opened == 1


# --------------------------------------------------------------------------------------------------
# 6. content encodings


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    "encoding, compress",
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", raw_deflate)],
    ids=["gzip", "deflate", "raw-deflate"],
)
async def test_encoded_body_is_decoded_by_read(
    client: HttpClient, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    original = json.dumps({"choices": [{"text": f"token {i}"} for i in range(20000)]}).encode()

    async def reply(request: web.Request, body: bytes) -> web.Response:
        return web.Response(
            body=compress(original), headers={"Content-Encoding": encoding, "Content-Type": "application/json"}
        )

    async with serve_app(Recorder(reply=reply).app()) as port:
        assert await fetch(client, f"http://127.0.0.1:{port}/") == (200, original)
        assert await fetch(client, f"http://127.0.0.1:{port}/") == (200, original)
    assert client.connections_opened == 1


async def test_gzip_stream_is_decoded_by_iter_any_as_it_arrives(client: HttpClient) -> None:
    send_rest = asyncio.Event()
    events = [b"data: %d\n\n" % i for i in range(50)]

    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        compressor = zlib.compressobj(wbits=31)  # gzip container
        conn.send(CHUNKED_HEAD.replace(b"\r\n\r\n", b"\r\nContent-Encoding: gzip\r\n\r\n"))
        conn.send(chunk(compressor.compress(events[0]) + compressor.flush(zlib.Z_SYNC_FLUSH)))
        await send_rest.wait()
        conn.send(chunk(compressor.compress(b"".join(events[1:])) + compressor.flush()) + LAST_CHUNK)
        await conn.wait_until_peer_closes()

    async with RawServer(handler) as server:
        resp = await within(client.post(server.url, body=b"{}", headers=JSON))
        async with resp:
            chunks = resp.iter_any()
            first = b""
            while len(first) < len(events[0]):
                first += await within(anext(chunks))
            assert first == events[0]
            send_rest.set()
            assert first + b"".join([c async for c in chunks]) == b"".join(events)
