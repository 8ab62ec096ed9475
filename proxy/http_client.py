"""The sidecar's client for provider calls: HTTP/1.1 with keep-alive, over asyncio protocols.

Every request of every pod makes one provider call. aiohttp's ClientSession
spends ~120 µs of CPU on a plain call and ~145 µs on a streamed one on the
benchmark machine (cookie jar, trace hooks, multidicts, payload objects, timer
contexts); this client does only what the relay needs, with the response
parsed by httptools (llhttp, Node.js's parser, in C), in ~40 and ~80 µs
(`python -m bench.http_client`):

* ``post()`` sends the request in one write on a pooled connection (or a new
  one, within ``connect_timeout``) and returns once the headers are in;
* the body comes as ``read()`` or chunk by chunk from ``iter_any()``; reading
  pauses when the app reads slower than the provider writes;
* ``close()`` puts a connection whose answer was read to the end back in the
  pool; anything else (a stream cut short, a cancelled call) closes it, so
  the provider sees at once that nobody is listening.

An answer is untrusted input: its head is held to ``AnswerLimits`` (header
count and size, interim answers), ``read()`` to a body size checked against
Content-Length before a byte is read and while reading, and a gzip/deflate
body is inflated in steps that never go past the body limit, so a bomb fails
with ``AnswerTooLarge`` instead of growing memory. Each is a bad answer: the
connection is closed at once.

No cookies are kept and no proxy variables are read: a provider's cookies must
not leak from one app request to the next, and the pod talks to providers
directly. Only what the relay sends is supported: POST with a byte body.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httptools

from proxy.http_request import InvalidRequestHeader, Target, header_block, parse_target


class UpstreamDisconnected(ConnectionError):
    """The provider closed the connection before its answer was complete."""


class UpstreamProtocolViolation(UpstreamDisconnected):
    """The provider's answer is not HTTP/1.x."""


class AnswerTooLarge(UpstreamProtocolViolation):
    """The provider's answer goes past one of the client's `AnswerLimits` (the connection is closed)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerLimits:
    """How much of a provider's answer the sidecar will hold (defaults: far above any real answer)."""

    max_body_bytes: int = 32 * 1024 * 1024  # a whole (unary) body, after gzip/deflate decoding
    max_event_bytes: int = 1024 * 1024  # one server-sent event of a stream (applied by the stream decoders)
    max_header_count: int = 100
    max_header_bytes: int = 64 * 1024  # the whole head: status line and headers
    max_error_body_bytes: int = 64 * 1024  # of an error answer, read for its message (the rest is dropped)
    max_interim_answers: int = 8  # 1xx answers before the real one


class Headers:
    """Response headers, looked up case-insensitively (repeated ones joined with ", ")."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._values.get(name.lower(), default)

    def __repr__(self) -> str:
        return f"Headers({self._values!r})"


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the answer in progress on it."""

    def __init__(self, key: tuple[str, int, bool], buffer_limit: int, limits: AnswerLimits) -> None:
        self.key = key
        self.buffer_limit = buffer_limit
        self.limits = limits
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._start_answer(None)

    def _start_answer(self, headers_ready: asyncio.Future[None] | None) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers_ready = headers_ready
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers: Headers | None = None
        self.status = 0
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None
        self.complete = False
        self.keep_alive = False
        self.until_close = False  # no length given: the body ends when the connection does
        self.error: BaseException | None = None
        self.got_bytes = False
        self.decompress: Any = None
        self.decoded = 0  # bytes a compressed body inflated to so far
        self.compressed: list[bytes] = []  # compressed bytes not yet inflated (see _inflate_step)
        self.ended = False  # the message is complete, but compressed bytes still wait to be inflated
        self.interim = False  # a 1xx answer (100 Continue, 103 Early Hints): the real one follows
        self.interims = 0
        self.head_bytes = 0  # bytes received while the head is incomplete
        self.header_bytes = 0  # the headers' own size
        self.violation: UpstreamProtocolViolation | None = None  # why a parser callback refused the answer

    # -- sending

    def send(self, data: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        self._start_answer(loop.create_future())
        assert self.transport is not None
        self.transport.write(data)
        return self.headers_ready  # type: ignore[return-value]

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._violate(
                self.violation or UpstreamProtocolViolation(f"the provider's answer is not valid HTTP/1.1: {exc}")
            )
            return
        except httptools.HttpParserUpgrade:  # a 101 is refused before this; any other upgrade too
            self._violate(UpstreamProtocolViolation("the provider's answer switches protocols unasked"))
            return
        if self.headers is None and not self.complete:
            # Still in the head: the parser keeps a header's pieces until it ends, so bound it here.
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_header_bytes:
                self._violate(
                    AnswerTooLarge(f"the provider's answer head is larger than {self.limits.max_header_bytes} bytes")
                )

    def _violate(self, error: UpstreamProtocolViolation) -> None:
        self.keep_alive = False  # whatever the answer said: this connection is done
        self._fail(error)
        self.transport.close()  # type: ignore[union-attr]

    def _refuse(self, error: UpstreamProtocolViolation) -> None:
        """From a parser callback: stop parsing (the parser raises) and fail with `error`."""
        self.violation = error
        raise error

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete or self.headers_ready is None:
            return
        if self.headers is not None and self.until_close and self.error is None:
            try:
                self._finish()
            except UpstreamProtocolViolation as error:  # the inflated tail went past the limit
                self._fail(error)
        else:
            self._fail(UpstreamDisconnected("the provider closed the connection before its answer was complete"))

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:  # bytes after the answer, or on an idle connection: nothing was asked
            self._refuse(UpstreamProtocolViolation("the provider sent an answer nobody asked for"))

    def on_header(self, name: bytes, value: bytes) -> None:
        raw_headers = self.raw_headers
        if len(raw_headers) >= self.limits.max_header_count:
            self._refuse(AnswerTooLarge(f"the provider's answer has more than {self.limits.max_header_count} headers"))
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.limits.max_header_bytes:  # a head that came whole in one read
            self._refuse(
                AnswerTooLarge(f"the provider's answer head is larger than {self.limits.max_header_bytes} bytes")
            )
        raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:  # nothing asked to switch protocols
                self._refuse(UpstreamProtocolViolation("the provider switched protocols (101) unasked"))
            self.interims += 1
            if self.interims > self.limits.max_interim_answers:
                self._refuse(
                    UpstreamProtocolViolation(
                        f"the provider sent more than {self.limits.max_interim_answers} interim (1xx) answers"
                    )
                )
            self.interim = True
            self.raw_headers.clear()
            self.header_bytes = 0
            return
        values: dict[str, str] = {}
        for raw_name, raw_value in self.raw_headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            values[name] = f"{values[name]}, {value}" if name in values else value
        self.headers = Headers(values)
        self.status = status
        self.until_close = "content-length" not in values and "chunked" not in values.get("transfer-encoding", "")
        encoding = values.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            # wbits 47: gzip or zlib by the header; raw deflate is handled by _inflate_step's retry
            self.decompress = zlib.decompressobj(47)
        ready = self.headers_ready
        if ready is not None and not ready.done():
            ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.decompress is not None:
            self.compressed.append(body)
            if len(self.compressed) == 1:  # else inflating is behind: take() catches up
                self._inflate_step()
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > self.buffer_limit and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()  # the app reads slower than the provider writes
        self._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.keep_alive = self.parser.should_keep_alive()
        self._finish()

    # -- state changes

    def _inflate_step(self) -> None:
        """Inflates one step (at most the read buffer limit, never past the body limit) of the compressed
        bytes waiting; while more wait, reading is paused and the next step comes with the next
        take(). So a gzip bomb costs the loop one small step at a time and fails at the limit."""
        compressed = self.compressed
        data = compressed[0] if len(compressed) == 1 else b"".join(compressed)
        compressed.clear()
        step = min(self.limits.max_body_bytes - self.decoded + 1, self.buffer_limit)
        try:
            try:
                piece = self.decompress.decompress(data, step)
            except zlib.error:
                if self.decoded or self.decompress.unused_data:
                    raise
                # "deflate" sent as a raw stream (no zlib header), as some servers do
                self.decompress = zlib.decompressobj(-zlib.MAX_WBITS)
                piece = self.decompress.decompress(data, step)
        except zlib.error:
            self._refuse(UpstreamProtocolViolation("the provider's answer has a corrupt gzip/deflate body"))
        self._count_decoded(len(piece))
        tail = self.decompress.unconsumed_tail
        if tail or len(piece) == step:  # more input waits, or zlib holds output back (then tail is b"")
            compressed.append(tail)
            if not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
        if piece:
            self.chunks.append(piece)
            self.buffered += len(piece)
            self._wake()

    def _count_decoded(self, size: int) -> None:
        self.decoded += size
        if self.decoded > self.limits.max_body_bytes:
            self._refuse(
                AnswerTooLarge(f"the provider's answer decompresses to more than {self.limits.max_body_bytes} bytes")
            )

    def _finish(self) -> None:
        if self.decompress is not None:
            if self.compressed:  # complete once take() has inflated the rest
                self.ended = True
                self._wake()
                return
            # bounded: all input was inflated and zlib held nothing back, so only its last bytes remain
            tail = self.decompress.flush()
            if tail:
                self._count_decoded(len(tail))
                self.chunks.append(tail)
        self.complete = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        ready = self.headers_ready
        if ready is not None and not ready.done():
            ready.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> bytes:
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks) if chunks else b""
        chunks.clear()
        self.buffered = 0
        if self.compressed:
            try:
                self._inflate_step()
                if not self.compressed and self.ended:
                    self._finish()
            except UpstreamProtocolViolation as error:
                self._violate(error)
                raise
        if self.paused and not self.compressed and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data


class Response:
    """A provider's answer: status and headers now, the body as it comes."""

    __slots__ = ("_client", "_connection", "headers", "status")

    def __init__(self, connection: _Connection, client: HttpClient) -> None:
        self._connection: _Connection | None = connection
        self._client = client
        self.status = connection.status
        self.headers: Headers = connection.headers  # type: ignore[assignment]

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body in pieces, each everything that arrived since the last one."""
        connection = self._connection
        if connection is None:
            return
        loop = asyncio.get_running_loop()
        while True:
            if connection.chunks or connection.compressed:
                inflating = bool(connection.compressed)
                data = connection.take()
                if data:
                    yield data
                if inflating:
                    await asyncio.sleep(0)  # one inflate step per turn of the loop: the others get theirs
            elif connection.complete:
                return
            elif connection.error is not None:
                raise connection.error
            else:
                connection.waiter = loop.create_future()
                try:
                    await connection.waiter
                finally:
                    connection.waiter = None

    async def read(self, limit: int | None = None, *, truncate: bool = False) -> bytes:
        """The whole body, at most `limit` bytes (default: the client's `max_body_bytes`).

        Past the limit the connection is closed and AnswerTooLarge raised, or with `truncate`
        the first `limit` bytes returned (enough to read an error's message)."""
        connection = self._connection
        if limit is None:
            limit = self._client.limits.max_body_bytes
        if connection is not None and connection.complete and connection.buffered <= limit:
            return connection.take()
        declared = self.headers.get("content-length") if connection is not None else None
        if declared is not None and declared.strip().isdigit() and int(declared) > limit and not truncate:
            self._too_large(limit)
        chunks, size = [], 0
        async for chunk in self.iter_any():
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                if not truncate:
                    self._too_large(limit)
                self.close()  # the rest is not wanted: the connection cannot be reused
                return b"".join(chunks)[:limit]
        return b"".join(chunks)

    def _too_large(self, limit: int) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and connection.transport is not None:
            connection.transport.close()  # never pooled: nothing about this answer is trusted
        raise AnswerTooLarge(f"the provider's answer is larger than the sidecar's limit of {limit} bytes")

    def close(self) -> None:
        """Back to the pool when the answer was read to its end, else the connection is closed."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if connection.complete and connection.keep_alive and not connection.closed and not connection.chunks:
            self._client._release(connection)
        elif connection.transport is not None:
            connection.transport.close()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class HttpClient:
    """Pooled HTTP/1.1 connections to providers, one pool per host, port and scheme."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_idle_per_host: int = 256,
        idle_seconds: float = 15.0,
        user_agent: str = "modelway-proxy",
        read_buffer_limit: int = 256 * 1024,
        limits: AnswerLimits = AnswerLimits(),
    ) -> None:
        # Made here, at start-up: loading the CA bundle takes ~10 ms, too long for the event loop.
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._max_idle = max_idle_per_host
        self._idle_seconds = idle_seconds  # below the usual server keep-alive timeouts
        self._user_agent = user_agent
        self._buffer_limit = read_buffer_limit
        self.limits = limits
        self._idle: dict[tuple[str, int, bool], collections.deque[_Connection]] = {}
        self._targets: dict[str, Target] = {}
        self.connections_opened = 0

    async def post(
        self, url: str, *, body: bytes, headers: Mapping[str, str], connect_timeout: float | None = None
    ) -> Response:
        """Sends the request; returns once the status and headers are in.

        A pooled connection the provider closed while it sat idle is retried once on a new
        one, when not a byte of an answer came back on it."""
        target = self._target(url)
        data = b"".join((target.head, header_block(headers), b"content-length: %d\r\n\r\n" % len(body), body))
        loop = asyncio.get_running_loop()
        connection = self._pooled(target.key, loop.time())
        if connection is not None:
            try:
                return await self._exchange(connection, data, loop)
            except UpstreamDisconnected:
                if connection.got_bytes:
                    raise
        connection = await self._connect(target, connect_timeout, loop)
        return await self._exchange(connection, data, loop)

    async def _exchange(self, connection: _Connection, data: bytes, loop: asyncio.AbstractEventLoop) -> Response:
        try:
            await connection.send(data, loop)
        except BaseException:  # failed or cancelled: this connection is in an unknown state
            if connection.transport is not None:
                connection.transport.close()
            raise
        return Response(connection, self)

    def _pooled(self, key: tuple[str, int, bool], now: float) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()  # the most recent: the least likely to have been closed
            if connection.closed or connection.transport.is_closing():  # type: ignore[union-attr]
                continue
            if now - connection.idle_since > self._idle_seconds:
                connection.transport.close()  # type: ignore[union-attr]
                continue
            return connection
        return None

    async def _connect(self, target: Target, timeout: float | None, loop: asyncio.AbstractEventLoop) -> _Connection:
        context = self._ssl_context if target.tls else None
        key, limit, limits = target.key, self._buffer_limit, self.limits
        async with asyncio.timeout(timeout):
            _, connection = await loop.create_connection(
                lambda: _Connection(key, limit, limits),
                target.host,
                target.port,
                ssl=context,
                server_hostname=target.host if context is not None else None,
            )
        self.connections_opened += 1
        return connection

    def _release(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection.key, collections.deque())
        if len(idle) >= self._max_idle:
            connection.transport.close()  # type: ignore[union-attr]
            return
        connection.idle_since = asyncio.get_running_loop().time()
        idle.append(connection)

    def _target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= 1024:
                self._targets.clear()
            target = self._targets[url] = parse_target(url, self._user_agent)
        return target

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                if connection.transport is not None:
                    connection.transport.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing


__all__ = [
    "AnswerLimits",
    "AnswerTooLarge",
    "Headers",
    "HttpClient",
    "InvalidRequestHeader",
    "Response",
    "UpstreamDisconnected",
    "UpstreamProtocolViolation",
]
