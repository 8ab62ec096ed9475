"""A forward proxy on 127.0.0.1 for the egress tests: CONNECT tunnels and absolute-form HTTP requests.

It records what it was asked (the CONNECT targets, the request lines, the Proxy-Authorization
headers) and resolves names through ``hosts`` (so a provider called ``provider.example`` is only
reachable through it). ``refuse`` makes it answer every CONNECT with that status (e.g. 407);
``hang_up`` makes it close each connection without a word.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.fakes.threaded import LoopThread


class ConnectProxy(LoopThread):
    what = "the proxy"

    def __init__(
        self, *, hosts: dict[str, str] | None = None, refuse: int | None = None, hang_up: bool = False
    ) -> None:
        super().__init__()
        self.hosts = hosts or {}
        self.refuse = refuse
        self.hang_up = hang_up
        self.connects: list[str] = []  # "host:port" of each CONNECT
        self.request_lines: list[str] = []  # the first line of each request, CONNECT or not
        self.authorizations: list[str | None] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
        # tunnels still open (pooled by the client): ended here, before the loop closes
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            self.request_lines.append(lines[0])
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            self.authorizations.append(headers.get("proxy-authorization"))
            method, target, _ = lines[0].split(" ", 2)
            if self.hang_up:
                return
            if method == "CONNECT":
                self.connects.append(target)
                if self.refuse is not None:
                    writer.write(b"HTTP/1.1 %d Refused\r\ncontent-length: 0\r\n\r\n" % self.refuse)
                    await writer.drain()
                    return
                host, _, port = target.rpartition(":")
                up_reader, up_writer = await asyncio.open_connection(self.hosts.get(host, host), int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            else:  # absolute form: http://host:port/path
                rest = target.split("://", 1)[1]
                authority, slash, path = rest.partition("/")
                host, _, port = authority.rpartition(":")
                up_reader, up_writer = await asyncio.open_connection(self.hosts.get(host, host), int(port or 80))
                kept = [line for line in lines[1:] if not line.lower().startswith("proxy-authorization")]
                up_writer.write("\r\n".join([f"{method} {slash}{path} HTTP/1.1", *kept]).encode("latin-1"))
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()
