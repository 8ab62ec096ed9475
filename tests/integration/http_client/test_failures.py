"""HttpClient failures and edge cases, against real sockets on 127.0.0.1:

- the server disconnects: cut mid-body (content-length and chunked, read() and iter_any()), closed
  before/within the headers, garbage instead of HTTP -- no retry of a fresh connection;
- stale pooled connections: the one retry of a connection closed while idle or on receiving the next
  request, and no retry once a response byte arrived;
- early close / cancellation: a response closed before its end, a task cancelled in iter_any(),
  read() or post() -- the connection is dropped (the server sees it closed) and never reused;
- connect refused / connect timeout;
- TLS with a trusted self-signed certificate and with the default (failing) verification;
- a slow reader gets 2 MiB intact and in order, with bounded buffering.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import socket
import ssl
import struct
import time
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from proxy.http_client import HttpClient, Response, UpstreamDisconnected
from tests.integration.http_client.servers import (
    CHUNKED_HEAD,
    JSON,
    LAST_CHUNK,
    RawConn,
    RawServer,
    Recorder,
    answer_every_request,
    chunk,
    fetch,
    http_response,
    pattern,
    serve_app,
    wait_for,
    within,
)

pytestmark = pytest.mark.timeout(10)


# --------------------------------------------------------------------------------------------------
# 1. the server disconnects


def cut_mid_body(framing: str) -> Callable[[RawConn], Awaitable[None]]:
    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        if framing == "content-length":
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        else:
            conn.send(CHUNKED_HEAD + chunk(b"0123456789") + b"20\r\nonly part of th")
        await conn.drain()
        await asyncio.sleep(0.02)  # let the client get the headers and the first bytes, then cut

    return handler


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_cut_mid_body_raises_upstream_disconnected_from_read(client: HttpClient, framing: str) -> None:
    async with RawServer(cut_mid_body(framing)) as server:
        resp = await within(client.post(server.url, body=b"{}", headers=JSON))
        async with resp:
            assert resp.status == 200
            with pytest.raises(UpstreamDisconnected):
                await within(resp.read())
        assert client.connections_opened == 1  # no retry of the post


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_cut_mid_body_raises_upstream_disconnected_from_iter_any(client: HttpClient, framing: str) -> None:
    async with RawServer(cut_mid_body(framing)) as server:
        resp = await within(client.post(server.url, body=b"{}", headers=JSON))
        received = b""
        async with resp:
            with pytest.raises(UpstreamDisconnected):
                async for data in resp.iter_any():
                    received += data
        assert b"0123456789only part of th".startswith(received)


@pytest.mark.parametrize(
    "sent, then_close",
    [
        (b"", True),
        (b"HTTP/1.1 200 OK\r\nContent-Le", True),
        (b"SSH-2.0-OpenSSH_9.6\r\n", False),  # not HTTP: must fail at once, not wait for the close
        (b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n", False),
    ],
    ids=["nothing", "half-headers", "garbage", "bad-content-length"],
)
async def test_no_valid_headers_raises_upstream_disconnected_from_post_without_retry(
    client: HttpClient, sent: bytes, then_close: bool
) -> None:
    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        conn.send(sent)
        if not then_close:
            await conn.wait_until_peer_closes()

    async with RawServer(handler) as server:
        with pytest.raises(UpstreamDisconnected) as caught:
            await within(client.post(server.url, body=b"{}", headers=JSON))
        assert isinstance(caught.value, ConnectionError)
        # a fresh connection that got the request is not retried: the POST may have been processed
        assert client.connections_opened == 1 and len(server.conns) == 1
        if not then_close:
            await within(server.conns[0].peer_closed.wait())  # and the broken connection is closed


# --------------------------------------------------------------------------------------------------
# 2. stale pooled connections


async def test_pooled_connection_closed_by_the_server_while_idle_does_not_fail_the_next_post(
    client: HttpClient,
) -> None:
    async def handler(conn: RawConn) -> None:  # keep-alive in name only: closes right after answering
        await conn.read_request()
        conn.send(http_response(json.dumps({"conn": conn.index}).encode()))
        await conn.drain()

    async with RawServer(handler) as server:
        assert await fetch(client, server.url) == (200, b'{"conn": 0}')
        await asyncio.sleep(0.05)  # the server's FIN has reached the idle pooled connection
        assert await fetch(client, server.url) == (200, b'{"conn": 1}')
        assert client.connections_opened == 2


@pytest.mark.parametrize("how", ["fin", "reset"])
async def test_pooled_connection_closed_on_receiving_the_next_request_is_retried_once_on_a_new_one(
    client: HttpClient, how: str
) -> None:
    async def handler(conn: RawConn) -> None:
        if conn.index == 0:  # answers once, then drops the connection on the next request, unanswered
            await conn.read_request()
            conn.send(http_response(b"first"))
            await conn.drain()
            if how == "fin":
                await conn.read_request()
            else:  # an abortive close (RST), as a server that times out an idle connection may do
                await conn.reader.read(1)
                conn.writer.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                conn.writer.transport.abort()
            return
        await answer_every_request(conn)

    async with RawServer(handler) as server:
        assert await fetch(client, server.url) == (200, b"first")
        assert await fetch(client, server.url, body=b'{"n": 2}') == (200, b'{"conn": 1}')
        assert client.connections_opened == 2
        assert [r.body for r in server.conns[1].requests] == [b'{"n": 2}']


async def test_pooled_connection_that_dies_after_a_response_byte_is_not_retried(client: HttpClient) -> None:
    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        conn.send(http_response(b"first"))
        await conn.read_request()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-")  # then the connection is cut

    async with RawServer(handler) as server:
        assert await fetch(client, server.url) == (200, b"first")
        with pytest.raises(UpstreamDisconnected):
            await within(client.post(server.url, body=b"{}", headers=JSON))
        assert client.connections_opened == 1 and len(server.conns) == 1


@pytest.mark.parametrize("when", ["with-the-answer", "while-idle"])
async def test_an_answer_nobody_asked_for_is_never_handed_to_the_next_caller(client: HttpClient, when: str) -> None:
    async def handler(conn: RawConn) -> None:
        if conn.index > 0:
            return await answer_every_request(conn)
        await conn.read_request()
        extra = http_response(b"unasked")
        if when == "with-the-answer":
            conn.send(http_response(b"first") + extra)
        else:
            conn.send(http_response(b"first"))
            await asyncio.sleep(0.05)
            conn.send(extra)
        await answer_every_request(conn)

    async with RawServer(handler) as server:
        assert await fetch(client, server.url) == (200, b"first")
        await asyncio.sleep(0.1)
        assert await fetch(client, server.url) == (200, b'{"conn": 1}')  # not b"unasked"
        assert client.connections_opened == 2  # the first connection was dropped, not reused


# --------------------------------------------------------------------------------------------------
# 3. responses released before their end


@pytest.mark.parametrize("read_first", [False, True], ids=["nothing-read", "one-chunk-read"])
async def test_response_closed_before_its_end_is_not_reused_and_nothing_hangs(
    client: HttpClient, read_first: bool
) -> None:
    big = pattern(1024 * 1024)

    async def handler(conn: RawConn) -> None:
        if conn.index == 0:
            await conn.read_request()
            conn.send(http_response(big))
            await conn.wait_until_peer_closes()
        else:
            await answer_every_request(conn)

    async with RawServer(handler) as server:
        resp = await within(client.post(server.url, body=b"{}", headers=JSON))
        if read_first:
            first = await within(anext(resp.iter_any()))
            assert big.startswith(first)
        resp.close()
        assert await fetch(client, server.url) == (200, b'{"conn": 1}')
        assert client.connections_opened == 2
        await within(server.conns[0].peer_closed.wait())


async def test_a_connection_closed_mid_answer_is_freed_at_once_not_left_to_the_collector(client: HttpClient) -> None:
    """The sidecar runs its collector rarely; a cancelled stream's connection, transport and buffers
    must not wait for it."""

    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        conn.send(http_response(pattern(1024 * 1024)))
        await conn.wait_until_peer_closes()

    gc.collect()
    gc.disable()
    try:
        async with RawServer(handler) as server:
            resp = await within(client.post(server.url, body=b"{}", headers=JSON))
            connection = weakref.ref(resp._connection)  # type: ignore[arg-type]
            await within(anext(resp.iter_any()))
            resp.close()
            await within(server.conns[0].peer_closed.wait())
            await asyncio.sleep(0.01)  # connection_lost has run
            assert connection() is None
    finally:
        gc.enable()


# --------------------------------------------------------------------------------------------------
# 4. connect errors


async def test_connect_refused_raises_oserror(client: HttpClient) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OSError) as caught:
        await within(client.post(f"http://127.0.0.1:{port}/", body=b"{}", headers=JSON, connect_timeout=1.0))
    assert isinstance(caught.value, ConnectionRefusedError), repr(caught.value)
    assert not isinstance(caught.value, UpstreamDisconnected)  # nothing was sent: safe to fail over


async def test_connect_timeout_raises_timeout_error(client: HttpClient) -> None:
    """A listener with a full accept queue that never accepts: Linux drops further SYNs, so the connect
    hangs until connect_timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):  # fill the accept queue until a probe connect no longer completes
            probe = socket.socket()
            probe.settimeout(0.1)
            try:
                probe.connect(("127.0.0.1", port))
            except (TimeoutError, BlockingIOError):
                probe.close()
                break
            fillers.append(probe)
        else:
            pytest.skip("could not fill the accept queue: connects to a full listener are not dropped here")
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await within(client.post(f"http://127.0.0.1:{port}/", body=b"{}", headers=JSON, connect_timeout=0.2))
        assert 0.15 < time.monotonic() - started < 1.0
    finally:
        for sock in fillers:
            sock.close()
        listener.close()


# --------------------------------------------------------------------------------------------------
# 5. TLS


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for IP 127.0.0.1 (and localhost); returns (cert file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_file), str(key_file)


@pytest.fixture
def tls_server_context(tls_cert: tuple[str, str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_cert)
    return context


async def test_https_with_a_context_trusting_the_certificate(
    make_client: Callable[..., HttpClient], tls_cert: tuple[str, str], tls_server_context: ssl.SSLContext
) -> None:
    client = make_client(ssl_context=ssl.create_default_context(cafile=tls_cert[0]))
    recorder = Recorder()
    async with serve_app(recorder.app(), ssl_context=tls_server_context) as port:
        for _ in range(3):
            status, data = await fetch(client, f"https://127.0.0.1:{port}/v1/messages", body=b'{"a": 1}')
            assert (status, json.loads(data)) == (200, {"path": "/v1/messages", "bytes": 8})
    assert client.connections_opened == 1
    assert recorder.seen[0].headers["Host"] == f"127.0.0.1:{port}"
    assert [s.body for s in recorder.seen] == [b'{"a": 1}'] * 3


async def test_https_with_the_default_context_rejects_a_self_signed_certificate(
    client: HttpClient, tls_server_context: ssl.SSLContext
) -> None:
    async with serve_app(Recorder().app(), ssl_context=tls_server_context) as port:
        with pytest.raises(ssl.SSLError) as caught:
            await within(client.post(f"https://127.0.0.1:{port}/", body=b"{}", headers=JSON))
    assert isinstance(caught.value, ssl.SSLCertVerificationError), repr(caught.value)


# --------------------------------------------------------------------------------------------------
# 6. a slow reader


def serve_big(data: bytes, framing: str) -> Callable[[RawConn], Awaitable[None]]:
    async def handler(conn: RawConn) -> None:
        await conn.read_request()
        if framing == "content-length":
            conn.send(http_response(data))
        else:
            conn.send(CHUNKED_HEAD)
            for i in range(0, len(data), 16 * 1024):
                conn.send(chunk(data[i : i + 16 * 1024]))
            conn.send(LAST_CHUNK)
        await conn.drain()
        await conn.wait_until_peer_closes()

    return handler


async def read_slowly(resp: Response) -> list[bytes]:
    chunks = []
    async for data in resp.iter_any():
        assert data
        chunks.append(data)
        await asyncio.sleep(0.005)
    return chunks


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_slow_reader_gets_every_byte_in_order(make_client: Callable[..., HttpClient], framing: str) -> None:
    client = make_client(read_buffer_limit=64 * 1024)
    data = pattern(2 * 1024 * 1024)
    async with RawServer(serve_big(data, framing)) as server:
        resp = await within(client.post(server.url, body=b"{}", headers=JSON))
        async with resp:
            chunks = await within(read_slowly(resp), 5)
        assert len(b"".join(chunks)) == len(data)
        assert b"".join(chunks) == data


async def test_slow_reader_buffering_stays_bounded_by_read_buffer_limit(make_client: Callable[..., HttpClient]) -> None:
    """With reading paused past read_buffer_limit, one yield can hold at most the limit plus what one
    socket read brings in (256 KiB for asyncio's transports); without backpressure the whole 2 MiB
    would pile up in the client while the reader sleeps."""
    limit = 64 * 1024
    client = make_client(read_buffer_limit=limit)
    data = pattern(2 * 1024 * 1024)
    async with RawServer(serve_big(data, "content-length")) as server:
        resp = await within(client.post(server.url, body=b"{}", headers=JSON))
        async with resp:
            await asyncio.sleep(0.2)  # the server has written everything it can by now
            chunks = await within(read_slowly(resp), 5)
    assert b"".join(chunks) == data
    assert max(map(len, chunks)) <= limit + 512 * 1024, sorted(map(len, chunks))[-5:]


# --------------------------------------------------------------------------------------------------
# 7. cancellation


def stream_then_hold(first: bytes) -> Callable[[RawConn], Awaitable[None]]:
    """Connection 0: headers and one chunk, then nothing until the client closes; others: answer normally."""

    async def handler(conn: RawConn) -> None:
        if conn.index == 0:
            await conn.read_request()
            conn.send(CHUNKED_HEAD + chunk(first))
            await conn.wait_until_peer_closes()
        else:
            await answer_every_request(conn)

    return handler


@pytest.mark.parametrize("how", ["iter_any", "read"])
async def test_cancelled_body_read_closes_the_connection(client: HttpClient, how: str) -> None:
    got_first = asyncio.Event()

    async def consume() -> None:
        resp = await client.post(server.url, body=b"{}", headers=JSON)
        async with resp:
            if how == "iter_any":
                async for _ in resp.iter_any():
                    got_first.set()
            else:
                got_first.set()
                await resp.read()

    async with RawServer(stream_then_hold(b"data: one\n\n")) as server:
        task = asyncio.create_task(consume())
        await within(got_first.wait())
        await asyncio.sleep(0.02)  # the task is now waiting for more body bytes
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await within(task)
        await within(server.conns[0].peer_closed.wait())
        assert await fetch(client, server.url) == (200, b'{"conn": 1}')
        assert client.connections_opened == 2


async def test_cancelled_post_waiting_for_headers_closes_the_connection(client: HttpClient) -> None:
    async def handler(conn: RawConn) -> None:
        if conn.index == 0:  # takes the request and never answers
            await conn.read_request()
            await conn.wait_until_peer_closes()
        else:
            await answer_every_request(conn)

    async with RawServer(handler) as server:
        with pytest.raises(TimeoutError):  # the way the sidecar bounds a call
            await asyncio.wait_for(client.post(server.url, body=b"{}", headers=JSON), 0.1)
        await within(wait_for(lambda: bool(server.conns)))
        await within(server.conns[0].peer_closed.wait())
        assert await fetch(client, server.url) == (200, b'{"conn": 1}')
        assert client.connections_opened == 2
