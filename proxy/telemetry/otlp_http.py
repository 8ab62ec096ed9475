"""One kept-alive HTTP/1.1 connection to an OTLP collector: a POST written in one `sendall`, its answer
read by hand.

`http.client` spends ~350 Python calls on each post (header validation per header, two writes, the
answer's headers parsed through the `email` package); on a quiet pod the export thread posts every
second for a few spans, so that fixed cost is most of what telemetry costs there. Here the request's
head is built once (only its Content-Length changes) and the answer is read as the collector sends it:
the status line, the headers (names lowercased), and a body by Content-Length, chunked, or up to the
close. Failures raise what `http.client` would (`RemoteDisconnected` for a kept-alive connection the
collector closed, `BadStatusLine`, `IncompleteRead`, `HTTPException`) or `OSError`.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterator, Mapping, Sequence

MAX_HEAD_BYTES = 64 * 1024  # the answer's status line and headers
MAX_BODY_BYTES = 4 * 1024 * 1024  # an ExportTraceServiceResponse is a few bytes; a proxy's page more
# sendmsg's limit on buffers (IOV_MAX, 1024 on Linux): a request in more parts is written in pieces instead
_MAX_IOVECS = 1024
_RECV = 65536
_JOINED_BYTES = 16 * 1024  # parts up to this size are joined to be written together (a TLS record each)

Buffer = bytes | bytearray | memoryview


def request_head(*, path: str, host: str, port: int, default_port: int, headers: Mapping[str, str]) -> bytes:
    """A POST's head up to its Content-Length value (the caller appends the length, CRLF CRLF, the body).
    Raises ValueError for a header that would split the head (CR, LF or NUL in it)."""
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address
    lines = [f"POST {path} HTTP/1.1", f"Host: {shown if port == default_port else f'{shown}:{port}'}"]
    for name, value in headers.items():
        if any(c in name + value for c in "\r\n\0") or not name or ":" in name:
            raise ValueError(f"invalid OTLP header {name!r}")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")


class Connection:
    __slots__ = ("_buffer", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = b""

    @classmethod
    def open(cls, host: str, port: int, *, timeout: float, context: ssl.SSLContext | None) -> Connection:
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    def post(self, head: bytes, body: Buffer | Sequence[Buffer]) -> tuple[int, str, dict[str, str], bytes, bool]:
        """(status, reason, headers, body, whether the collector closes the connection after it); the
        body is bytes, or its parts in order (sent as they are, not joined)."""
        self._buffer = b""  # (nothing is left over from a previous answer that was read whole)
        parts = (body,) if isinstance(body, (bytes, bytearray, memoryview)) else tuple(body)
        self._send((head, str(sum(map(len, parts))).encode(), b"\r\n\r\n", *parts))
        while True:
            status, reason, headers, http10 = self._head()
            if not 100 <= status < 200:  # 1xx answers are interim: the real one follows
                break
        connection = headers.get("connection", "").lower()
        closes = "close" in connection or (http10 and "keep-alive" not in connection)
        if status in (204, 304):
            return status, reason, headers, b"", closes
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return status, reason, headers, self._chunked(), closes
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit() or int(length) > MAX_BODY_BYTES:
                raise http.client.HTTPException(f"bad Content-Length {length[:40]!r}")
            return status, reason, headers, self._exactly(int(length)), closes
        return status, reason, headers, self._to_close(), True

    def _send(self, parts: tuple[Buffer, ...]) -> None:
        """The parts in one system call, gathered by the kernel (a batch of spans is not copied again to
        be joined to its head); a TLS socket, or a send cut short, gets the rest written part by part,
        small parts joined (never the batch: a joined copy of it would double its memory)."""
        sock = self.sock
        sent = 0
        if not isinstance(sock, ssl.SSLSocket) and len(parts) <= _MAX_IOVECS:
            sent = sock.sendmsg(parts)
            if sent == sum(map(len, parts)):
                return
        for piece in _pieces(parts, sent):
            sock.sendall(piece)

    # -- reading

    def _recv(self) -> bytes:
        data = self.sock.recv(_RECV)
        self._buffer += data
        return data

    def _head(self) -> tuple[int, str, dict[str, str], bool]:
        end = self._buffer.find(b"\r\n\r\n")
        while end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise http.client.HTTPException("the collector's answer head is too long")
            if not self._recv():
                if not self._buffer:
                    raise http.client.RemoteDisconnected("Remote end closed connection without response")
                raise http.client.BadStatusLine(repr(self._buffer[:80]))
            end = self._buffer.find(b"\r\n\r\n", max(0, len(self._buffer) - _RECV - 3))
        head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
        status_line, *lines = head.decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
            raise http.client.BadStatusLine(status_line[:80])
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        return int(code), reason.strip(), headers, version == "HTTP/1.0"

    def _exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if not self._recv():
                raise http.client.IncompleteRead(self._buffer, n - len(self._buffer))
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _line(self) -> bytes:
        end = self._buffer.find(b"\r\n")
        while end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise http.client.HTTPException("a chunk line is too long")
            if not self._recv():
                raise http.client.IncompleteRead(self._buffer)
            end = self._buffer.find(b"\r\n")
        line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
        return line

    def _chunked(self) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            text = self._line().split(b";", 1)[0].strip()
            try:
                chunk = int(text, 16)
            except ValueError:
                raise http.client.HTTPException(f"bad chunk size {text[:20]!r}") from None
            if chunk == 0:
                while self._line():  # the trailer, up to its blank line
                    pass
                return b"".join(parts)
            size += chunk
            if size > MAX_BODY_BYTES:
                raise http.client.HTTPException("the collector's answer is too long")
            parts.append(self._exactly(chunk))
            self._exactly(2)  # the chunk's CRLF

    def _to_close(self) -> bytes:
        while self._recv():
            if len(self._buffer) > MAX_BODY_BYTES:
                raise http.client.HTTPException("the collector's answer is too long")
        data, self._buffer = self._buffer, b""
        return data


def _pieces(parts: Sequence[Buffer], skip: int) -> Iterator[Buffer]:
    """`parts` from byte `skip` on, to be written in turn: small ones joined, large ones as they are."""
    small: list[Buffer] = []
    joined = 0
    for part in parts:
        n = len(part)
        if skip:
            if skip >= n:
                skip -= n
                continue
            part, n, skip = memoryview(part)[skip:], n - skip, 0
        if n <= _JOINED_BYTES:
            small.append(part)
            joined += n
            if joined < _JOINED_BYTES:
                continue
        if small:
            yield b"".join(small)
            small, joined = [], 0
        if n > _JOINED_BYTES:
            yield part
    if small:
        yield b"".join(small)
