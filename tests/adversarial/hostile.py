"""A hostile provider: a raw TCP server that answers each connection with bytes a test scripts.

Real providers are well-behaved most of the time; this one is not. Each accepted
connection reads one HTTP request (head and Content-Length body), records it, then
runs the next scripted answer: a function of the request that writes whatever it
likes to the socket (garbage, a 100 MB body, 20,000 headers, a gzip bomb, a stall,
an echo of the Authorization header). It runs on its own event loop in a thread,
so the sidecar under test (a real process) talks to it over real sockets.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

HEAD_LIMIT = 1 << 20


@dataclass
class Received:
    """One request as the provider saw it."""

    head: bytes
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        lines = self.head.decode("latin-1").split("\r\n")[1:]
        out: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            if name:
                out[name.strip().lower()] = value.strip()
        return out


# An answer: given the request, write to the writer (the harness closes it afterwards).
Answer = Callable[[Received, asyncio.StreamWriter], Awaitable[None]]


def raw(data: bytes) -> Answer:
    """Writes `data` as is, then closes."""

    async def answer(_: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()

    return answer


def http(
    status: int, body: bytes, *, content_type: str = "application/json", headers: list[tuple[str, str]] | None = None
) -> Answer:
    """A well-framed HTTP/1.1 answer with the given status, body and extra headers."""
    lines = [f"HTTP/1.1 {status} X", f"content-type: {content_type}", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    return raw(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def sse(events: list[bytes], *, content_type: str = "text/event-stream") -> Answer:
    """A chunked SSE answer: each item goes out as its own chunk."""

    async def answer(_: Received, writer: asyncio.StreamWriter) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n".encode())
        for event in events:
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    return answer


@dataclass
class HostileProvider:
    """Start with `with HostileProvider() as hp:`; `hp.base_url` is http://127.0.0.1:<port>.

    `hp.script(answer, ...)` queues answers for the next requests; with the queue empty
    the `default` answer is used. `hp.received` holds every request seen."""

    default: Answer = field(default_factory=lambda: http(500, b'{"error": {"message": "unscripted"}}'))
    received: list[Received] = field(default_factory=list)
    _script: deque[Answer] = field(default_factory=deque)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.AbstractServer | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *answers: Answer) -> None:
        self._script.extend(answers)

    def __enter__(self) -> HostileProvider:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0, limit=HEAD_LIMIT)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True, name="hostile-provider")
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def stop() -> None:
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # One answer per connection: the sidecar's pool sees the close and connects anew.
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            request = Received(head=head, body=body)
            self.received.append(request)
            answer = self._script.popleft() if self._script else self.default
            await answer(request, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
