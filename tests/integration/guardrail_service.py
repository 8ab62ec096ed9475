"""A guardrail service for tests and the bench: a real aiohttp server on loopback, in a thread.

Its behaviour is chosen by the path the policy's `url` names:

    /allow                 modelway: allow
    /words                 modelway: deny a request holding "blocked", an answer holding "forbidden";
                           replace "secret" in a request, "hidden" in an answer, by "[removed]"
    /slow                  modelway: allow after 2 s (a guardrail past its timeout)
    /error                 HTTP 500
    /v1/moderations        openai-moderation: flags every input holding "violence"

Every request's JSON is kept (`received`), so a test can see what a guardrail was asked.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web

from tests.integration.sidecar import free_port


class GuardrailService:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> GuardrailService:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def reset(self) -> None:
        self.received.clear()

    def asked(self, path: str, phase: str | None = None) -> list[dict[str, Any]]:
        return [body for p, body in list(self.received) if p == path and (phase is None or body.get("phase") == phase)]

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/allow", self._allow)
        app.router.add_post("/words", self._words)
        app.router.add_post("/slow", self._slow)
        app.router.add_post("/error", self._error)
        app.router.add_post("/v1/moderations", self._moderations)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _body(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        self.received.append((request.path, body))
        return body

    async def _allow(self, request: web.Request) -> web.Response:
        await self._body(request)
        return web.json_response({"decision": "allow"})

    async def _words(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        texts: list[str] = body["texts"]
        word = "blocked" if body["phase"] == "request" else "forbidden"
        if any(word in text for text in texts):
            return web.json_response({"decision": "deny", "reason": f"mentions {word} things"})
        secret = "secret" if body["phase"] == "request" else "hidden"
        if any(secret in text for text in texts):
            replaced = [text.replace(secret, "[removed]") for text in texts]
            return web.json_response({"decision": "replace", "reason": "secrets removed", "texts": replaced})
        return web.json_response({"decision": "allow"})

    async def _slow(self, request: web.Request) -> web.Response:
        await self._body(request)
        await asyncio.sleep(2)
        return web.json_response({"decision": "allow"})

    async def _error(self, request: web.Request) -> web.Response:
        await self._body(request)
        return web.json_response({"error": "broken"}, status=500)

    async def _moderations(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        results = [
            {
                "flagged": "violence" in text,
                "categories": {"violence": "violence" in text, "hate": False},
                "category_scores": {"violence": 0.99 if "violence" in text else 0.01, "hate": 0.0},
            }
            for text in body["input"]
        ]
        return web.json_response({"id": "modr-test", "model": "omni-moderation-latest", "results": results})
