"""The controller's TLS connections (sidecar streams on wss, the API server) keep small read buffers.

asyncio zero-fills a 256 KiB read buffer per TLS connection: with thousands of sidecar streams
that was most of the controller's memory. The controller's entry point makes it a record's size;
messages far larger than the buffer still pass whole, both ways.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ssl
import tracemalloc
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from controller.__main__ import TLS_READ_BUFFER, use_small_tls_read_buffers
from tests.harness.certs import CertAuthority

STREAMS = 20
BIG = 300_000  # characters: many times the read buffer


async def _streams_and_traced_bytes(tmp_path: Path) -> tuple[int, list[str]]:
    ca = CertAuthority(tmp_path / "ca")
    serving = ca.issue("controller", common_name="modelway-controller", hosts=("127.0.0.1",), server=True)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(serving.cert, serving.key)
    echoed: list[str] = []

    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        async for message in ws:
            if message.data == "hello":
                await ws.send_str("s" * BIG)  # a snapshot far larger than the buffer
            else:
                echoed.append(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/v1/stream", stream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = runner.addresses[0][1]
    received: list[str] = []
    client_context = ssl.create_default_context(cafile=str(ca.cert))
    tracemalloc.start()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context, limit=0)) as session:
            sockets = [
                await session.ws_connect(f"https://127.0.0.1:{port}/v1/stream", max_msg_size=1 << 20)
                for _ in range(STREAMS)
            ]
            traced, _ = tracemalloc.get_traced_memory()
            for ws in sockets:
                await ws.send_str("hello")
                received.append((await ws.receive(timeout=10)).data)
                await ws.send_str("a" * BIG)  # and from the sidecar's side
            await asyncio.sleep(0.2)
            for ws in sockets:
                await ws.close()
    finally:
        tracemalloc.stop()
        await runner.cleanup()
    assert received == ["s" * BIG] * STREAMS
    return traced, echoed


async def test_tls_streams_keep_small_read_buffers_and_carry_large_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "max_size", asyncio.sslproto.SSLProtocol.max_size)
    use_small_tls_read_buffers()
    assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER
    traced, echoed = await _streams_and_traced_bytes(tmp_path)
    assert echoed == ["a" * BIG] * STREAMS
    # Both ends of each stream are in this process: 40 TLS connections, once 256 KiB of buffer each.
    per_connection = traced / (2 * STREAMS)
    assert per_connection < 64 * 1024, f"{per_connection / 1024:.0f} KiB traced per TLS connection"


@pytest.mark.parametrize("asked", [4096, 8192])
def test_a_smaller_buffer_already_set_is_kept(monkeypatch: pytest.MonkeyPatch, asked: int) -> None:
    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "max_size", asked)
    use_small_tls_read_buffers()
    assert asyncio.sslproto.SSLProtocol.max_size == asked
