"""A guarded listening port: header, body and idle timeouts and a connection cap.

aiohttp closes idle keep-alive connections (after an hour by default) but has no
deadline for a request head that arrives a byte at a time, or for a body that never
ends, and no limit on connections. `GuardedSite` is a `TCPSite` whose protocol factory
wraps aiohttp's: each connection is tracked in one dict, a sweep every fraction of the
shortest timeout closes the ones past their deadline, and a connection past the cap
sheds the oldest one that is not being served (half-sent heads first, by age) or, when
every connection is serving a request, is refused with a 503.

Per request this costs a call in `data_received`, a wrapper coroutine around the
handler and two clock reads; no timer is armed per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.web_request import BaseRequest

log = logging.getLogger("modelway.listener")

_INF = math.inf
# connection states
_HEAD, _IDLE, _BUSY, _DOOMED = 0, 1, 2, 3

# Both API shapes at once: OpenAI reads error.message/type/code, Anthropic type/error.type/message.
_BODY = '{"type":"error","error":{"message":"%s","type":"invalid_request_error","param":null,"code":"%s"}}'


def _raw_response(status: str, message: str, code: str) -> bytes:
    body = (_BODY % (message, code)).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n"
    ).encode() + body


_HEAD_TIMEOUT = _raw_response("408 Request Timeout", "the request head did not arrive in time", "request_timeout")
_OVER_CAP = _raw_response("503 Service Unavailable", "too many connections; retry shortly", "overloaded")


class ListenerSettings(msgspec.Struct, frozen=True, kw_only=True):
    header_timeout: float = 10.0  # a request head, from accept or from its first byte after idling
    body_timeout: float = 60.0  # a request body, from the end of its head
    idle_timeout: float = 75.0  # a keep-alive connection between requests
    max_connections: int = 1024
    # The kernel's queue of connections not yet accepted: aiohttp's 128 overflows under a burst of
    # connects, and a dropped SYN costs a 1 s retransmit, longer than a kubelet probe waits.
    backlog: int = 1024

    def __post_init__(self) -> None:
        if min(self.header_timeout, self.body_timeout, self.idle_timeout) <= 0 or self.max_connections < 1:
            raise ValueError("listener timeouts must be above 0 and max_connections at least 1")


class RateLimitedWarning:
    """One WARNING per `every` seconds at most, with how many were held back."""

    def __init__(self, logger: logging.Logger, every: float = 10.0) -> None:
        self._log, self._every = logger, every
        self._next = 0.0
        self._held = 0

    def __call__(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return
        held, self._held, self._next = self._held, 0, now + self._every
        self._log.warning(message + (f" ({held} more since the last such warning)" if held else ""), *args)


class _Conn(asyncio.Protocol):
    """Stands between the transport and aiohttp's protocol, tracking where the connection is."""

    __slots__ = ("busy", "deadline", "got_bytes", "guard", "inner", "payload", "state", "transport")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.inner, self.guard = inner, guard
        self.transport: asyncio.Transport | None = None
        self.state, self.deadline, self.got_bytes, self.busy = _HEAD, _INF, False, 0
        self.payload: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.deadline = self.guard.loop.time() + self.guard.settings.header_timeout
        self.inner.connection_made(transport)
        self.guard.admit(self)

    def data_received(self, data: bytes) -> None:
        if self.state == _IDLE:  # the next request's head starts: its own deadline
            self.state, self.got_bytes = _HEAD, True
            self.deadline = self.guard.loop.time() + self.guard.settings.header_timeout
        elif not self.got_bytes:
            self.got_bytes = True
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.conns.pop(self.inner, None)
        self.payload = None
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def close(self, data: bytes = b"") -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if data:
                transport.write(data)
                transport.close()
            else:
                transport.abort()


class ConnectionGuard:
    """Tracks one port's connections and enforces `ListenerSettings` on them."""

    def __init__(self, settings: ListenerSettings, *, name: str, group: list[ConnectionGuard] | None = None) -> None:
        self.settings, self.name = settings, name
        # the process's other ports: fds are shared, so a port short of them may close their idle ones
        self.group = group if group is not None else []
        self.group.append(self)
        self.loop = asyncio.get_running_loop()
        self.conns: dict[Any, _Conn] = {}  # by aiohttp's protocol, in accept order
        self._warn_cap = RateLimitedWarning(log)
        self._warn_fds = RateLimitedWarning(log)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self._fd_soft = soft if soft != resource.RLIM_INFINITY else 1 << 62
        # An event loop accepts every queued connection in one go, and closes shed ones only on its
        # next turn; so the queue is kept to an eighth of the fds, and twice that is kept free.
        self.backlog = max(16, min(settings.backlog, self._fd_soft // 8))
        self._fd_base = _open_fds()
        self._sweeper: asyncio.Task[None] | None = None
        self.shed = self.refused = self.timed_out = 0

    def protocol_factory(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        def make() -> asyncio.Protocol:
            return _Conn(self, factory())

        return make

    def wrap_handler(
        self, handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]]
    ) -> Callable[[BaseRequest], Awaitable[web.StreamResponse]]:
        conns, loop, settings = self.conns, self.loop, self.settings

        async def guarded(request: BaseRequest) -> web.StreamResponse:
            conn = conns.get(request.protocol)
            if conn is None:
                return await handler(request)
            conn.busy += 1
            conn.state = _BUSY
            payload = request.content
            if payload.is_eof():  # the whole body came with the head: the usual case
                conn.deadline, conn.payload = _INF, None
            else:
                conn.deadline, conn.payload = loop.time() + settings.body_timeout, payload
            try:
                return await handler(request)
            finally:
                conn.busy -= 1
                if conn.busy == 0 and conn.state == _BUSY:
                    conn.state, conn.got_bytes, conn.payload = _IDLE, False, None
                    conn.deadline = loop.time() + settings.idle_timeout

        return guarded

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name=f"listener-sweep-{self.name}")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    # -- the cap ------------------------------------------------------------------------

    def admit(self, conn: _Conn) -> None:
        conns = self.conns
        over = len(conns) >= self.settings.max_connections
        short = self._fds_short(conn)
        if over or short:
            owner, victim = self, self._victim()
            if victim is None and short:
                owner, victim = next(((g, v) for g in self.group if g is not self and (v := g._victim())), (self, None))
            if victim is None:
                self.refused += 1
                self._warn_cap(
                    "%s port: %d connections, all serving requests; refusing new ones with 503%s",
                    self.name,
                    len(conns),
                    " (file descriptors running short)" if short else "",
                )
                conn.state = _DOOMED
                conn.close(_OVER_CAP)
                return
            self.shed += 1
            self._warn_cap(
                "%s port: %s; closing the oldest connections that are idle or still sending their request (%d so far)",
                self.name,
                f"connection cap of {self.settings.max_connections} reached"
                if over
                else "file descriptors running short",
                self.shed,
            )
            owner.conns.pop(victim.inner, None)
            victim.close()
        conns[conn.inner] = conn

    def _victim(self) -> _Conn | None:
        fallback = None
        for conn in self.conns.values():
            if conn.state in (_HEAD, _IDLE, _DOOMED):
                return conn
            if fallback is None and conn.payload is not None and not conn.payload.is_eof():
                fallback = conn  # still sending its body: next in line after the idle ones
        return fallback

    def _fds_short(self, conn: _Conn) -> bool:
        transport = conn.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        try:
            fd = sock.fileno() if sock is not None else -1
        except OSError:
            return False
        limit = self._fd_soft - 64 - 2 * sum(g.backlog for g in self.group)
        # fds are handed out lowest first, so a new one's number is about how many are open (this sees
        # provider connections too); closed ones leave holes below it, which the count of ours sees
        held = self._fd_base + sum(len(g.conns) for g in self.group)
        if fd >= limit or held >= limit:
            self._warn_fds(
                "%s port: file descriptors running short (%d open of a limit of %d); closing idle "
                "connections to keep room (raise the limit with ulimit -n)",
                self.name,
                max(fd, held),
                self._fd_soft,
            )
            return True
        return False

    # -- the timeouts -------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        s = self.settings
        tick = min(1.0, max(0.05, min(s.header_timeout, s.body_timeout, s.idle_timeout) / 4))
        while True:
            await asyncio.sleep(tick)
            try:
                self.sweep(self.loop.time())
            except Exception:  # never let the sweeper die: log and go on
                log.exception("%s port: connection sweep failed", self.name)

    def sweep(self, now: float) -> None:
        expired = [c for c in self.conns.values() if c.deadline <= now]
        for conn in expired:
            state = conn.state
            if state == _BUSY:
                payload = conn.payload
                if payload is None or payload.is_eof():
                    conn.deadline, conn.payload = _INF, None
                    continue
                self.timed_out += 1
                payload.set_exception(_body_timeout())  # the handler's read raises it: a 408 answer
                conn.state, conn.deadline = _DOOMED, now + 1.0  # and if nothing reads, close soon after
                continue
            self.conns.pop(conn.inner, None)
            if state == _HEAD:
                self.timed_out += 1
                conn.close(_HEAD_TIMEOUT if conn.got_bytes else b"")
            else:  # idle keep-alive, or doomed
                conn.close()


class BodyTimeout(web.HTTPRequestTimeout, asyncio.TimeoutError):
    """Raised by the body's read: aiohttp answers it as the 408 it is, and its lingering read
    after the answer takes it as the timeout it is (no "Unhandled exception")."""


def _body_timeout() -> BodyTimeout:
    exc = BodyTimeout(
        text=_BODY % ("the request body did not arrive in time", "request_timeout"), content_type="application/json"
    )
    exc.force_close()
    return exc


class GuardedSite(web.TCPSite):
    """`web.TCPSite` whose connections are watched by a `ConnectionGuard`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        settings: ListenerSettings,
        name: str,
        group: list[ConnectionGuard] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.guard = ConnectionGuard(settings, name=name, group=group)

    async def start(self) -> None:
        server = self._runner.server
        assert server is not None
        server.request_handler = self.guard.wrap_handler(server.request_handler)
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.guard.protocol_factory(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self.guard.backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        self.guard.start()

    async def stop(self) -> None:
        await self.guard.stop()
        await super().stop()


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: a guess at what a process holds before its connections
        return 64


def raise_fd_limit(needed: int) -> tuple[int, int]:
    """Raises the soft RLIMIT_NOFILE towards the hard one (as Go does at start-up) when `needed`
    connections would not fit; returns (soft, hard) afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, max(needed, soft))
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft, hard


def install_fd_exhaustion_logging(loop: asyncio.AbstractEventLoop) -> None:
    """asyncio reports accept() failing for want of fds through the loop's exception handler,
    once a second per port, with a traceback; say it once in a while, plainly."""
    warn = RateLimitedWarning(log)
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            warn(
                "out of file descriptors or socket buffers (%s): new connections wait; raise `ulimit -n` "
                "or lower --max-connections",
                errno.errorcode.get(exc.errno or 0, exc.errno),
            )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
