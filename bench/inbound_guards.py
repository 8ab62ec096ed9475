"""What the inbound guards cost per request: the JSON depth check and the last-resort handler wrap.

    python -m bench.inbound_guards

Depth: orjson.loads of three bodies (small chat, tool-heavy, 1.2 MB conversation) against
`too_deep` on the parsed body, and against two `bytes.count` scans alone. Wrap: a trivial
handler called through aiohttp's `Application._handle`, plain, wrapped at registration
(`proxy.server._guarded`), and behind an equivalent `@web.middleware`; best of 15 rounds.
"""

from __future__ import annotations

import asyncio
import time
import timeit
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from proxy.json_limits import too_deep
from proxy.server import _guarded

_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather",
        "parameters": {
            "type": "object",
            "additionalProperties": False,
            "required": ["city"],
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["c", "f"]},
                "days": {"type": "array", "items": {"type": "object", "properties": {"d": {"type": "integer"}}}},
            },
        },
    },
}
BODIES = {
    "small chat": {
        "model": "gpt",
        "max_tokens": 100,
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Hello there. " * 40},
        ],
    },
    "20 tools": {"model": "gpt", "messages": [{"role": "user", "content": "hi " * 300}] * 10, "tools": [_TOOL] * 20},
    "1.2 MB chat": {"model": "gpt", "messages": [{"role": "user", "content": "lorem ipsum " * 1000}] * 100},
}


def _per_call(fn: Any, seconds: float = 0.3) -> float:
    number = max(1, int(seconds / max(timeit.timeit(fn, number=1), 1e-7)))
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def depth_check() -> None:
    for name, data in BODIES.items():
        raw = orjson.dumps(data)
        body = orjson.loads(raw)
        loads = _per_call(lambda raw=raw: orjson.loads(raw))
        check = _per_call(lambda raw=raw, body=body: too_deep(raw, body))
        scan = _per_call(lambda raw=raw: raw.count(b"[") + raw.count(b"{"))
        print(
            f"depth  {name:12} {len(raw):>9} B: orjson.loads {loads:8.2f} us, too_deep {check:6.2f} us "
            f"({check / loads:4.0%}), two bytes.count {scan:7.2f} us"
        )


async def handler_wrap() -> None:
    response = web.Response(body=b"{}", content_type="application/json")

    async def handler(request: web.Request) -> web.StreamResponse:
        return response

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception:
            return web.Response(status=500)

    apps = {}
    for kind in ("plain", "wrapped", "middleware"):
        app = web.Application(middlewares=[middleware] if kind == "middleware" else [])
        app.router.add_get("/v1/models", _guarded(handler) if kind == "wrapped" else handler)
        app.freeze()
        apps[kind] = (app, make_mocked_request("GET", "/v1/models", app=app))
    best: dict[str, float] = {}
    for _ in range(15):
        for kind, (app, request) in apps.items():
            n = 20_000
            started = time.perf_counter()
            for _ in range(n):
                await app._handle(request)
            best[kind] = min(best.get(kind, 1e9), (time.perf_counter() - started) / n * 1e6)
    for kind, micros in best.items():
        print(f"wrap   {kind:10}: {micros:5.2f} us per request through Application._handle")


if __name__ == "__main__":
    depth_check()
    asyncio.run(handler_wrap())
