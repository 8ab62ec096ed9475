"""The shared snapshot frame on a real WebSocket: with and without permessage-deflate, message after message.

The controller writes each snapshot's frame, built once, to every connection; aiohttp clients (what the
sidecar uses) must read every message intact, whether they negotiated compression (with its context
kept across messages) or not.
"""

from __future__ import annotations

import asyncio
import json
import zlib

import aiohttp
from aiohttp import web

from controller.auth import Identity, StaticAuthenticator
from controller.core import Controller
from controller.push import build_push_app, text_frame
from controller.store import ResourceStore
from proxy.snapshot import STREAM_PATH
from tests.unit.test_compile import provider, route, secret

TOKEN = "frames-test-token"


def test_a_deflated_frame_decodes_on_its_own_and_after_other_messages():
    message = json.dumps({"type": "snapshot", "payload": "x" * 5000 + "y" * 70000})
    frame = text_frame(message, compress=15)
    assert frame[0] == 0x81 | 0x40  # FIN, RSV1 (deflated), text
    assert frame[1] == 126 and len(frame) - 4 == int.from_bytes(frame[2:4], "big")
    inflate = zlib.decompressobj(-15)  # a receiver that keeps its context across messages
    for _ in range(3):
        assert inflate.decompress(frame[4:] + b"\x00\x00\xff\xff").decode() == message
    plain = text_frame(message)
    assert plain[0] == 0x81 and plain[1] == 127 and plain[10:] == message.encode()


async def _scenario() -> None:
    store = ResourceStore()
    controller = Controller(store=store, quiet_seconds=0.01)
    for item in (
        secret(apiKey="sk-1"),
        provider("openai"),
        route("chat", "chat", [{"provider": "openai", "model": "m0"}]),
    ):
        store.apply(item)
    await controller.recompute()
    auth = StaticAuthenticator(token=TOKEN, identity=Identity(namespace="team-a", service_account="app"))
    runner = web.AppRunner(build_push_app(controller=controller, authenticator=auth))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            sockets = []
            for compress in (15, 0, 15):
                ws = await session.ws_connect(
                    f"http://127.0.0.1:{port}{STREAM_PATH}",
                    compress=compress,
                    headers={"authorization": f"Bearer {TOKEN}"},
                )
                assert ws.compress == compress
                await ws.send_json({"type": "hello", "version": ""})
                sockets.append(ws)

            async def model_of_next(ws: aiohttp.ClientWebSocketResponse) -> str:
                message = await asyncio.wait_for(ws.receive_json(), 10)
                return message["snapshot"]["routes"][0]["rules"][0]["backends"][0]["model"]

            assert [await model_of_next(ws) for ws in sockets] == ["m0"] * 3
            for revision in range(1, 4):
                model = f"m{revision}" * 400  # big enough for deflate to matter
                store.apply(route("chat", "chat", [{"provider": "openai", "model": model}], generation=revision + 1))
                await controller.recompute()
                assert [await model_of_next(ws) for ws in sockets] == [model] * 3
            for ws in sockets:
                await ws.close()
        assert controller.pushes == 12
    finally:
        await runner.cleanup()


def test_every_client_reads_every_shared_snapshot_frame():
    asyncio.run(_scenario())
