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
connection is closed at once. The connection and its answer's parsing are
`proxy.http_connection`'s; the pool and the answer's reading are here.

No cookies are kept: a provider's cookies must not leak from one app request
to the next. The proxy variables are read once at start-up into
`proxy.egress.EgressSettings`: through HTTPS_PROXY an https provider is reached
in a CONNECT tunnel (TLS to the provider inside it, pooled like a direct
connection), through HTTP_PROXY an http one gets its request line in absolute
form; NO_PROXY hosts are called directly. Only what the relay sends is
supported: POST with a byte body.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from urllib.parse import urlsplit

from proxy.egress import EgressSettings, ProxyTunnelFailed, connect_to, open_tunnel
from proxy.http_connection import (
    AnswerLimits,
    AnswerTooLarge,
    Connection,
    Headers,
    UpstreamDisconnected,
    UpstreamProtocolViolation,
)
from proxy.http_request import InvalidRequestHeader, Target, header_block, parse_target
from proxy.system_trust import system_trust_context


class Response:
    """A provider's answer: status and headers now, the body as it comes."""

    __slots__ = ("_client", "_connection", "headers", "status")

    def __init__(self, connection: Connection, client: HttpClient) -> None:
        self._connection: Connection | None = connection
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
        limits: AnswerLimits | None = None,
        egress: EgressSettings | None = None,
        tls_for: Callable[[str, int], ssl.SSLContext | None] | None = None,
    ) -> None:
        """`tls_for(host, port)`: the context of a provider with its own CA bundle (None: the default
        one); asked only when a connection is opened."""
        # One context for every https provider, made when the first one is called: the CA bundle takes
        # ~0.7 MiB, which a sidecar calling only in-cluster http models never needs.
        self._ssl_context = ssl_context
        self._ssl_loading: asyncio.Future[ssl.SSLContext] | None = None
        self._max_idle = max_idle_per_host
        self._idle_seconds = idle_seconds  # below the usual server keep-alive timeouts
        self._user_agent = user_agent
        self._buffer_limit = read_buffer_limit
        self.limits = limits or AnswerLimits()
        self._idle: dict[tuple[str, int, bool], collections.deque[Connection]] = {}
        self._targets: dict[str, Target] = {}
        self._egress = egress or EgressSettings()
        self._tls_for = tls_for
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

    async def _exchange(self, connection: Connection, data: bytes, loop: asyncio.AbstractEventLoop) -> Response:
        try:
            await connection.send(data, loop)
        except BaseException:  # failed or cancelled: this connection is in an unknown state
            if connection.transport is not None:
                connection.transport.close()
            raise
        return Response(connection, self)

    def _pooled(self, key: tuple[str, int, bool], now: float) -> Connection | None:
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

    async def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            if self._ssl_loading is None:
                # listing the CA directory (or parsing a bundle, ~10 ms) is too slow for the event loop: a thread, once
                self._ssl_loading = asyncio.ensure_future(asyncio.to_thread(system_trust_context))
            # shielded: a cancelled first request leaves the context to the next one
            self._ssl_context = await asyncio.shield(self._ssl_loading)
        return self._ssl_context

    async def _connect(self, target: Target, timeout: float | None, loop: asyncio.AbstractEventLoop) -> Connection:
        context = None
        if target.tls:
            context = self._tls_for(target.host, target.port) if self._tls_for is not None else None
            context = context or self._ssl_context or await self._tls_context()
        key, limit, limits = target.key, self._buffer_limit, self.limits
        proxy = self._egress.proxy_for(target.host, target.port, tls=target.tls)
        async with asyncio.timeout(timeout):
            if proxy is None:
                _, connection = await loop.create_connection(
                    lambda: Connection(key, limit, limits),
                    target.host,
                    target.port,
                    ssl=context,
                    server_hostname=target.host if context is not None else None,
                )
            else:
                sock = await (
                    open_tunnel(proxy, target.host, target.port, loop) if target.tls else connect_to(proxy, loop)
                )
                try:
                    _, connection = await loop.create_connection(
                        lambda: Connection(key, limit, limits),
                        sock=sock,
                        ssl=context,
                        server_hostname=target.host if context is not None else None,
                    )
                except BaseException:
                    sock.close()
                    raise
        self.connections_opened += 1
        return connection

    def _release(self, connection: Connection) -> None:
        idle = self._idle.setdefault(connection.key, collections.deque())
        if len(idle) >= self._max_idle:
            connection.transport.close()  # type: ignore[union-attr]
            return
        connection.rest()
        connection.idle_since = asyncio.get_running_loop().time()
        idle.append(connection)

    def _target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= 1024:
                self._targets.clear()
            target = parse_target(url, self._user_agent)
            proxy = None if target.tls else self._egress.proxy_for(target.host, target.port, tls=False)
            if proxy is not None:
                target = _absolute_form(target, url, proxy.authorization)
            self._targets[url] = target
        return target

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                if connection.transport is not None:
                    connection.transport.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing


def _absolute_form(target: Target, url: str, authorization: str | None) -> Target:
    """The request as an HTTP proxy takes it: the whole URL on the request line (RFC 9112 3.2.2)."""
    method, _, rest = target.head.partition(b" ")
    path, _, headers = rest.partition(b" ")
    origin = urlsplit(url).netloc.rsplit("@", 1)[-1]
    line = b"%s http://%s%s %s" % (method, origin.encode("ascii"), path, headers)
    if authorization is not None:
        line += f"proxy-authorization: {authorization}\r\n".encode("ascii")
    return Target(key=target.key, host=target.host, port=target.port, tls=False, head=line)


__all__ = [
    "AnswerLimits",
    "AnswerTooLarge",
    "Headers",
    "HttpClient",
    "InvalidRequestHeader",
    "ProxyTunnelFailed",
    "Response",
    "UpstreamDisconnected",
    "UpstreamProtocolViolation",
]
