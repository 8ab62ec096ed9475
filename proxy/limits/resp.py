"""A lean Redis client for the limiter: one pipelined connection, RESP2, only what the limiter sends.

A limit check is on the path of every request it binds, so its client's own cost counts. redis-py's
asyncio client spends about 100 µs of CPU per command on this machine (connection pool, retry and
health-check machinery, a parser in Python that reads line by line); the script's reply is a handful
of integers. This client writes each command in one `write`, keeps the replies' futures in a FIFO
(Redis answers in order, so any number of checks share one connection without waiting on each
other) and parses replies straight from the bytes received.

What it speaks: redis://, rediss:// and unix:// URLs, with AUTH (password, or user and password)
and SELECT. Sentinel and Cluster URLs use redis-py (`proxy.limits.redis_store.connect`, through
`shared.redis_client`).

Failures: a command whose reply does not come within the caller's timeout closes the connection
and fails every command waiting on it (their replies could no longer be told apart); the next
command connects again. An error reply raises `ReplyError` (`NoScript` for -NOSCRIPT), a broken
connection `ConnectionError`, a reply that is not RESP `ProtocolError`: each one either fails one
command or closes the connection, never a hang.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec

from proxy.system_trust import system_trust_context

MAX_REPLY_BYTES = 1024 * 1024  # far above any reply of the limiter's scripts (a few dozen integers)


class ReplyError(Exception):
    """Redis answered the command with an error (-ERR ...)."""


class NoScript(ReplyError):
    """-NOSCRIPT: the script is not loaded (a restarted or flushed Redis)."""


class ProtocolError(ConnectionError):
    """The bytes received are not a RESP reply (or one past MAX_REPLY_BYTES)."""


class Address(msgspec.Struct, frozen=True):
    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0

    @classmethod
    def from_url(cls, url: str) -> Address:
        """redis://[[user]:password@]host[:port][/db], rediss://..., unix://[[user]:password@]/path[?db=N]."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a redis://, rediss:// or unix:// URL (scheme {parts.scheme!r})")
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        query = dict(p.partition("=")[::2] for p in parts.query.split("&") if p)
        if parts.scheme == "unix":
            return cls(path=parts.path, username=username, password=password, db=int(query.get("db", "0")))
        path = parts.path.strip("/")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            tls=parts.scheme == "rediss",
            username=username,
            password=password,
            db=int(path or query.get("db", "0")),
        )


def encode(args: tuple[str | int | float | bytes, ...]) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


_INCOMPLETE = object()


def parse(buffer: bytes | bytearray, pos: int) -> tuple[Any, int]:
    """One reply from `buffer` at `pos`: (value, the position after it), or (_INCOMPLETE, pos)."""
    end = buffer.find(b"\r\n", pos)
    if end < 0:
        return _INCOMPLETE, pos
    kind, line = buffer[pos : pos + 1], bytes(buffer[pos + 1 : end])
    after = end + 2
    try:
        if kind == b":":
            return int(line), after
        if kind == b"+":
            return line.decode(), after
        if kind == b"-":
            text = line.decode(errors="replace")
            return (NoScript(text) if text.startswith("NOSCRIPT") else ReplyError(text)), after
        if kind == b"$":
            size = int(line)
            if size < 0:
                return None, after
            if size > MAX_REPLY_BYTES:
                raise ProtocolError(f"a reply of {size} bytes is past the limit of {MAX_REPLY_BYTES}")
            if len(buffer) < after + size + 2:
                return _INCOMPLETE, pos
            return bytes(buffer[after : after + size]), after + size + 2
        if kind == b"*":
            count = int(line)
            if count < 0:
                return None, after
            if count > MAX_REPLY_BYTES // 4:
                raise ProtocolError(f"an array of {count} items is past the reply limit")
            items = []
            for _ in range(count):
                item, after = parse(buffer, after)
                if item is _INCOMPLETE:
                    return _INCOMPLETE, pos
                items.append(item)
            return items, after
    except ValueError:
        raise ProtocolError(f"not a RESP reply: {bytes(buffer[pos : pos + 32])!r}") from None
    raise ProtocolError(f"not a RESP reply: {bytes(buffer[pos : pos + 32])!r}")


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.buffer = bytearray()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        pos = 0
        try:
            while self.waiting:
                value, pos_after = parse(buffer, pos)
                if value is _INCOMPLETE:
                    break
                pos = pos_after
                future = self.waiting.popleft()
                if not future.done():  # (one whose caller gave up closed the connection: see RespClient)
                    if isinstance(value, ReplyError):
                        future.set_exception(value)
                    else:
                        future.set_result(value)
        except ProtocolError as exc:
            self.fail(exc)
            return
        del buffer[:pos]
        if len(buffer) > MAX_REPLY_BYTES + 64 or (buffer and not self.waiting):
            self.fail(ProtocolError("bytes from Redis that answer no command"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_waiting(ConnectionError(f"the connection to Redis closed ({type(exc).__name__ if exc else 'EOF'})"))

    def fail(self, exc: Exception) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self._fail_waiting(exc)

    def _fail_waiting(self, exc: Exception) -> None:
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)


class RespClient:
    """`execute` a command; `evalsha` and `eval` as redis-py names them, for `RedisLimiter`."""

    def __init__(self, address: Address, *, timeout: float) -> None:
        self._address = address
        self._timeout = timeout
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        # made here, at start-up: listing the CA directory (or parsing a bundle) is too slow for the loop
        self._ssl = system_trust_context() if address.tls else None

    @classmethod
    def from_url(cls, url: str, *, timeout: float) -> RespClient:
        return cls(Address.from_url(url), timeout=timeout)

    async def execute(self, *args: str | int | float | bytes) -> Any:
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connect()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        connection.waiting.append(future)
        assert connection.transport is not None
        connection.transport.write(encode(args))
        try:
            return await future
        except asyncio.CancelledError:
            # The caller gave up (its timeout): the reply may still come, and the replies after it
            # could no longer be matched to their commands. Start again on a new connection.
            if not future.done() or future.cancelled():
                connection.fail(ConnectionError("a command to Redis was abandoned; connecting again"))
            raise

    async def evalsha(self, sha: str, numkeys: int, *args: str | int | float) -> Any:
        return await self.execute("EVALSHA", sha, numkeys, *args)

    async def eval(self, script: str, numkeys: int, *args: str | int | float) -> Any:
        return await self.execute("EVAL", script, numkeys, *args)

    async def ping(self) -> Any:
        return await self.execute("PING")

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.fail(ConnectionError("the client was closed"))

    async def _connect(self) -> _Connection:
        """One connection at a time: concurrent commands wait for the same one."""
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            connection = await self._open(loop)
        except BaseException as exc:
            self._connecting.set_exception(exc if isinstance(exc, Exception) else ConnectionError("cancelled"))
            self._connecting.exception()  # (retrieved: no "never retrieved" warning when nobody else waited)
            self._connecting = None
            raise
        self._connection = connection
        self._connecting.set_result(connection)
        self._connecting = None
        return connection

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        address = self._address
        async with asyncio.timeout(self._timeout):
            if address.path is not None:
                _, connection = await loop.create_unix_connection(_Connection, address.path)
            else:
                _, connection = await loop.create_connection(
                    _Connection,
                    address.host,
                    address.port,
                    ssl=self._ssl,
                    server_hostname=address.host if self._ssl is not None else None,
                )
        self._connection = connection
        try:
            async with asyncio.timeout(self._timeout):
                if address.password is not None:
                    auth = (address.username, address.password) if address.username else (address.password,)
                    await self._send(connection, "AUTH", *auth)
                if address.db:
                    await self._send(connection, "SELECT", address.db)
        except BaseException:
            connection.fail(ConnectionError("Redis refused the connection's set-up"))
            self._connection = None
            raise
        return connection

    @staticmethod
    async def _send(connection: _Connection, *args: str | int) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        connection.waiting.append(future)
        assert connection.transport is not None
        connection.transport.write(encode(args))
        return await future
