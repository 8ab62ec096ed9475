"""Light sidecar clients for `python -m bench.controller`: N WebSocket streams in one process.

Each client does what a sidecar's sync loop does on the wire and nothing
more: connect to the controller's stream with its pod-bound token, send
`{"type": "hello", "version": ""}`, and answer every snapshot at once with
`{"type": "ack", "version": v}`, recording (receive time, ack time, version)
on the monotonic clock. A real sidecar also validates the snapshot and builds
a runtime before it ACKs; the light client skips that so what is measured is
the controller, not 1,000 sidecars' CPU on two cores. It reads the version
from the message's fixed prefix (the controller writes `type` then
`version` first) and only parses the whole JSON when the prefix does not
match. Like the real sidecar (`proxy/sync.py`), it lets aiohttp negotiate
permessage-deflate and sends heartbeats every 20 s.

Runs as its own process, so the benchmark driver (which runs kubectl) never
delays a receive. CLOCK_MONOTONIC is system-wide on Linux: the driver's t0
and these times are on one clock. The driver talks to it with JSON lines:

  stdin (commands)                       stdout (events)
                                         {"event": "progress", "connected": k, "total": n}
                                         {"event": "ready", "connected": n, "seconds": s, "retries": r,
                                          "snapshot_bytes": [min, max], "compression": [...]}
  {"cmd": "mark", "id": i}               {"event": "marked", "id": i, "extra": e}
  {"cmd": "wait", "id": i, "timeout": t} {"event": "done", "id": i, "acks": [[recv, ack, version], ...]}
                                         {"event": "timeout", "id": i, "have": k, "missing": m, "sample": [...]}
  {"cmd": "quit"}                        {"event": "bye"}
                                         {"event": "error", "message": "..."}   (a client broke)

`mark` starts a change: from then on, each client's first new snapshot is its
answer to it. `extra` counts snapshots that arrived after a client's first
answer to the previous change (a change pushed twice, or a straggler).

    python -m bench.controller_clients --url ws://127.0.0.1:PORT/v1/stream --tokens FILE [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

STREAM_PATH = "/v1/stream"  # proxy.snapshot.STREAM_PATH; not imported so this process stays light
HELLO = json.dumps({"type": "hello", "version": ""})
HEARTBEAT_SECONDS = 20.0  # the sidecar's default (proxy/sync.py)
CONNECT_ATTEMPTS = 4
FIRST_SNAPSHOT_TIMEOUT = 60.0
_PREFIX = re.compile(r'\{"type": ?"snapshot", ?"version": ?"([^"\\]*)"')


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def snapshot_version(data: str) -> str | None:
    """The version of a snapshot message, or None when the message is not a snapshot."""
    match = _PREFIX.match(data)
    if match:
        return match.group(1)
    try:
        message = json.loads(data)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("type") != "snapshot":
        return None
    return str(message.get("version", ""))


class Client:
    __slots__ = ("answered", "events", "index", "mark", "token")

    def __init__(self, index: int, token: str) -> None:
        self.index = index
        self.token = token
        self.events: list[tuple[float, float, str]] = []  # (received, acked, version)
        self.mark = 0  # len(events) when the current change started
        self.answered = True  # has an event since the mark


class Fleet:
    def __init__(self, url: str, tokens: list[str], concurrency: int) -> None:
        self.url = url
        self.clients = [Client(i, t) for i, t in enumerate(tokens)]
        self.concurrency = concurrency
        self.pending = 0  # clients without an answer since the mark
        self.all_answered = asyncio.Event()
        self.first_snapshots = 0
        self.first_done = asyncio.Event()
        self.retries = 0
        self.sizes: list[int] = []  # bytes of each client's first snapshot message
        self.broken: asyncio.Future[str] | None = None
        self._sockets: list[aiohttp.ClientWebSocketResponse] = []

    # --- per client -----------------------------------------------------------------

    def _record(self, client: Client, received: float, acked: float, version: str) -> None:
        client.events.append((received, acked, version))
        if not client.answered:
            client.answered = True
            self.pending -= 1
            if self.pending == 0:
                self.all_answered.set()

    async def _connect(self, session: aiohttp.ClientSession, client: Client) -> aiohttp.ClientWebSocketResponse:
        delay = 0.2
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            try:
                return await session.ws_connect(
                    self.url,
                    headers={"authorization": "Bearer " + client.token},
                    heartbeat=HEARTBEAT_SECONDS,
                    max_msg_size=16 << 20,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5),
                )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                if attempt == CONNECT_ATTEMPTS:
                    raise RuntimeError(
                        f"client {client.index}: could not connect after {attempt} attempts: "
                        f"{type(exc).__name__}: {exc}"
                    ) from None
                self.retries += 1
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _run_client(self, session: aiohttp.ClientSession, client: Client, gate: asyncio.Semaphore) -> None:
        async with gate:  # at most `concurrency` clients between connect and their first snapshot
            ws = await self._connect(session, client)
            self._sockets.append(ws)
            await ws.send_str(HELLO)
            message = await ws.receive(timeout=FIRST_SNAPSHOT_TIMEOUT)
            if message.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(
                    f"client {client.index}: expected a first snapshot, got {message.type.name} "
                    f"{message.data!r} {ws.close_code}"
                )
            await self._handle(ws, client, message.data)
            self.sizes.append(len(message.data))
        self.first_snapshots += 1
        if self.first_snapshots % max(1, len(self.clients) // 10) == 0 or self.first_snapshots == len(self.clients):
            emit({"event": "progress", "connected": self.first_snapshots, "total": len(self.clients)})
        if self.first_snapshots == len(self.clients):
            self.first_done.set()
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await self._handle(ws, client, message.data)
            elif message.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                break
        raise RuntimeError(
            f"client {client.index}: the controller closed the stream (code {ws.close_code}, {ws.exception()!r})"
        )

    async def _handle(self, ws: aiohttp.ClientWebSocketResponse, client: Client, data: str) -> None:
        received = time.monotonic()
        version = snapshot_version(data)
        if version is None:
            raise RuntimeError(f"client {client.index}: unexpected message {data[:200]!r}")
        await ws.send_str('{"type":"ack","version":' + json.dumps(version) + "}")
        self._record(client, received, time.monotonic(), version)

    # --- the fleet ------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.broken = loop.create_future()
        gate = asyncio.Semaphore(self.concurrency)
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = [asyncio.create_task(self._run_client(session, c, gate)) for c in self.clients]
            for task in tasks:
                task.add_done_callback(self._task_done)
            started = time.monotonic()
            first = asyncio.ensure_future(self.first_done.wait())
            await asyncio.wait([first, self.broken], return_when=asyncio.FIRST_COMPLETED)
            if self.broken.done():
                first.cancel()
                emit({"event": "error", "message": self.broken.result()})
                return await self._shutdown(tasks)
            emit(
                {
                    "event": "ready",
                    "connected": len(self.clients),
                    "seconds": round(time.monotonic() - started, 3),
                    "retries": self.retries,
                    "snapshot_bytes": [min(self.sizes), max(self.sizes)],
                    "compression": sorted({ws.compress for ws in self._sockets}),
                }
            )
            try:
                await self._serve_commands()
            finally:
                await self._shutdown(tasks)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.broken is None or self.broken.done():
            return
        exc = task.exception()
        self.broken.set_result(f"{type(exc).__name__}: {exc}" if exc else "a client ended")

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in self._sockets), return_exceptions=True)

    async def _serve_commands(self) -> None:
        assert self.broken is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            read = asyncio.ensure_future(reader.readline())
            await asyncio.wait([read, self.broken], return_when=asyncio.FIRST_COMPLETED)
            if self.broken.done():
                read.cancel()
                emit({"event": "error", "message": self.broken.result()})
                return
            line = read.result()
            if not line:
                return  # the driver went away
            command = json.loads(line)
            cmd = command.get("cmd")
            if cmd == "mark":
                emit({"event": "marked", "id": command.get("id"), "extra": self._mark()})
            elif cmd == "wait":
                emit(await self._wait(command.get("id"), float(command.get("timeout", 30))))
            elif cmd == "quit":
                emit({"event": "bye"})
                return
            else:
                emit({"event": "error", "message": f"unknown command {command!r}"})

    def _mark(self) -> int:
        extra = 0
        for client in self.clients:
            if len(client.events) > client.mark + 1:
                extra += len(client.events) - client.mark - 1
            client.mark = len(client.events)
            client.answered = False
        self.pending = len(self.clients)
        self.all_answered.clear()
        return extra

    async def _wait(self, change_id: Any, timeout: float) -> dict[str, Any]:
        assert self.broken is not None
        waiter = asyncio.ensure_future(self.all_answered.wait())
        done, _ = await asyncio.wait([waiter, self.broken], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            missing = [c.index for c in self.clients if not c.answered]
            return {
                "event": "timeout",
                "id": change_id,
                "have": len(self.clients) - len(missing),
                "missing": len(missing),
                "sample": missing[:10],
                "broken": self.broken.result() if self.broken.done() else None,
            }
        return {
            "event": "done",
            "id": change_id,
            "acks": [[round(r, 6), round(a, 6), v] for r, a, v in (c.events[c.mark] for c in self.clients)],
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.controller_clients", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help=f"the controller's stream URL (ws://HOST:PORT{STREAM_PATH})")
    parser.add_argument("--tokens", type=Path, required=True, help="a file with one pod-bound token per line")
    parser.add_argument("--concurrency", type=int, default=50, help="clients connecting at once (default: 50)")
    args = parser.parse_args(argv)
    tokens = [line.strip() for line in args.tokens.read_text().splitlines() if line.strip()]
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
        print("uvloop not available: using asyncio's default loop", file=sys.stderr)
    else:
        runner = uvloop.run
    try:
        runner(Fleet(args.url, tokens, args.concurrency).run())
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
