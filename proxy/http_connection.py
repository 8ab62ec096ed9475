"""One connection to a provider and the answer in progress on it: an asyncio protocol fed to httptools.

`proxy.http_client` pools these and hands their answers out as `Response`s. An answer is untrusted
input, and this is where it is held to `AnswerLimits` (header count and size, interim answers, body
size after gzip/deflate decoding, inflated in steps) and where a violation closes the connection.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import httptools
import msgspec


class UpstreamDisconnected(ConnectionError):
    """The provider closed the connection before its answer was complete."""


class UpstreamProtocolViolation(UpstreamDisconnected):
    """The provider's answer is not HTTP/1.x."""


class AnswerTooLarge(UpstreamProtocolViolation):
    """The provider's answer goes past one of the client's `AnswerLimits` (the connection is closed)."""


class AnswerLimits(msgspec.Struct, frozen=True, kw_only=True):
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


class Connection(asyncio.Protocol):
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

    def rest(self) -> None:
        """Drops what the finished answer left behind, as the connection goes idle in the pool: its
        headers (the `Response` keeps its own reference) and its inflater (zlib's 32 KiB window), which
        every idle connection would otherwise hold until its next answer replaces them."""
        self.raw_headers.clear()
        self.headers = None
        self.decompress = None

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
        # The parser holds this protocol's bound methods: a cycle that would keep the connection, its
        # transport and buffers until the collector ran (rarely: see proxy.__main__._tune_gc). Nothing
        # is fed to it once the connection is gone, and a closed connection is never sent on again.
        del self.parser
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
