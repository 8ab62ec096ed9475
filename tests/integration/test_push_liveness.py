"""Stream liveness on a real WebSocket: a silent sidecar is pinged, one that never answers is let go.

The controller sweeps all its streams on one timer instead of aiohttp's per-connection heartbeat; what a
sidecar notices must not change: answering pings (aiohttp's client does by itself) keeps the stream, and
a peer that stops answering is disconnected (and stops counting as a connected sidecar).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import WSMsgType, web

from controller.auth import Identity, StaticAuthenticator
from controller.core import Controller
from controller.push import build_push_app
from controller.store import ResourceStore
from proxy.snapshot import STREAM_PATH

TOKEN = "liveness-test-token"
HEARTBEAT = 1.5  # pinged after 1.5 s of silence, closed 0.75 s after an unanswered ping; swept every 0.75 s


async def _scenario() -> None:
    controller = Controller(store=ResourceStore(), quiet_seconds=0.01)
    await controller.recompute()
    auth = StaticAuthenticator(token=TOKEN, identity=Identity(namespace="team-a", service_account="app"))
    runner = web.AppRunner(build_push_app(controller=controller, authenticator=auth, heartbeat=HEARTBEAT))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}{STREAM_PATH}"
    headers = {"authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession() as session:
            alive = await session.ws_connect(url, headers=headers)  # answers pings itself (autoping)
            mute = await session.ws_connect(url, headers=headers, autoping=False)  # never answers
            for ws in (alive, mute):
                await ws.send_json({"type": "hello", "version": ""})
                assert (await asyncio.wait_for(ws.receive_json(), 10))["type"] == "snapshot"
            assert len(controller.sidecars) == 2

            # The live one reads all along (its pongs are sent from inside receive, as in the sidecar).
            async def read_alive() -> None:
                message = await alive.receive()
                raise AssertionError(f"the live stream got {message.type}: {message.data!r}")

            reader = asyncio.ensure_future(read_alive())

            # The mute one sees a ping, does not answer, and is closed by the controller.
            started = time.monotonic()
            kinds = []
            while True:
                message = await asyncio.wait_for(mute.receive(), 10)
                kinds.append(message.type)
                if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                    break
            assert WSMsgType.PING in kinds, kinds
            assert time.monotonic() - started < 5 * HEARTBEAT
            for _ in range(50):
                if len(controller.sidecars) == 1:
                    break
                await asyncio.sleep(0.05)
            assert len(controller.sidecars) == 1

            # The one that answers stays through many heartbeats, with nothing but pings sent to it.
            await asyncio.sleep(6 * HEARTBEAT)
            assert not reader.done() and not alive.closed
            reader.cancel()
            assert len(controller.sidecars) == 1
            await alive.close()
    finally:
        await runner.cleanup()


def test_a_sidecar_that_stops_answering_is_disconnected_and_one_that_answers_stays():
    asyncio.run(_scenario())
