"""Servers and helpers for the HttpClient tests, on 127.0.0.1 and a free port.

Well-formed servers are aiohttp.web apps (serve_app, with Recorder to record each request and pick
the answer); servers that must send exact bytes (hand-made chunked framing, close-delimited bodies,
cut connections, garbage, idle keep-alive closes) are asyncio.start_server "raw" servers (RawServer,
one RawConn per accepted connection, with http_response/chunk/LAST_CHUNK/CHUNKED_HEAD to build the
bytes). Also: within (await with a deadline), collect/fetch (client-side shortcuts), pattern
(order-revealing test data) and wait_for (poll a condition).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from proxy.http_client import HttpClient, Response

JSON = {"content-type": "application/json"}


async def within(aw: Awaitable[Any], seconds: float = 2.0) -> Any:
    """Await with a deadline, so a hang fails the test with a TimeoutError instead of stalling it."""
    return await asyncio.wait_for(aw, seconds)


async def collect(resp: Response) -> list[bytes]:
    """Every iter_any() yield, each checked to be non-empty bytes."""
    chunks = []
    async for chunk in resp.iter_any():
        assert isinstance(chunk, bytes) and chunk, f"iter_any yielded {chunk!r}"
        chunks.append(chunk)
    return chunks


async def fetch(client: HttpClient, url: str, body: bytes = b"{}") -> tuple[int, bytes]:
    """One whole exchange: post, read everything, release."""
    resp = await within(client.post(url, body=body, headers=JSON))
    async with resp:
        return resp.status, await within(resp.read())


# --------------------------------------------------------------------------------------------------
# aiohttp servers


@asynccontextmanager
async def serve_app(app: web.Application, *, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """Run `app` on 127.0.0.1 on a free port; yields the port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@dataclass
class Seen:
    method: str
    path: str
    headers: CIMultiDict[str]
    body: bytes
    peer: tuple[str, int]


@dataclass
class Recorder:
    """An aiohttp app that records each request and answers via `reply` (default: 200 with a JSON echo)."""

    reply: Callable[[web.Request, bytes], Awaitable[web.StreamResponse]] | None = None
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path_qs,
                request.headers.copy(),
                body,
                request.transport.get_extra_info("peername"),
            )
        )
        if self.reply is not None:
            return await self.reply(request, body)
        return web.json_response({"path": request.path, "bytes": len(body)})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    @property
    def peers(self) -> set[tuple[str, int]]:
        return {s.peer for s in self.seen}


# --------------------------------------------------------------------------------------------------
# raw servers


@dataclass
class RawRequest:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes


class RawConn:
    """One accepted connection of a RawServer, with helpers to read requests and write exact bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
        self.reader, self.writer, self.index = reader, writer, index
        self.requests: list[RawRequest] = []
        self.peer_closed = asyncio.Event()  # set once the client's EOF/reset was seen

    async def read_request(self) -> RawRequest | None:
        """The next request, or None if the client closed the connection instead."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                raise
            self.peer_closed.set()
            return None
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                body += (await self.reader.readexactly(size + 2))[:-2]
            while await self.reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
        else:
            body = b""
        self.requests.append(RawRequest(method, target, headers, body))
        return self.requests[-1]

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    async def wait_until_peer_closes(self) -> None:
        """Discard whatever the client sends until it closes the connection."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.peer_closed.set()


class RawServer:
    """asyncio.start_server on 127.0.0.1:0 running `handler(conn)` for each connection; the server
    closes the connection when the handler returns."""

    def __init__(self, handler: Callable[[RawConn], Awaitable[None]]) -> None:
        self.handler = handler
        self.conns: list[RawConn] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = RawConn(reader, writer, len(self.conns))
        self.conns.append(conn)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # our own teardown; swallowed so asyncio does not log the callback
            pass
        finally:
            self._tasks.discard(task)
            writer.close()


def http_response(body: bytes = b'{"ok":true}', *, status: str = "200 OK", headers: str = "") -> bytes:
    """A content-length framed HTTP/1.1 response; `headers` is extra raw header lines ending in CRLF."""
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


async def answer_every_request(conn: RawConn) -> None:
    """Keep-alive server: a small 200 per request, tagged with the connection index, until the client closes."""
    while (await conn.read_request()) is not None:
        conn.send(http_response(json.dumps({"conn": conn.index}).encode()))


def pattern(size: int) -> bytes:
    """Bytes where every 4-byte word is its own index: any loss, duplication or reordering shows."""
    return b"".join(i.to_bytes(4, "big") for i in range(size // 4))


async def wait_for(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.005)
