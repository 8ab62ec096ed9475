"""The benchmark's baseline: a bare aiohttp pass-through proxy, nothing else.

It reads the request body, forwards it unchanged to the upstream with one
shared ClientSession (the same connector settings as the sidecar), and sends
the answer back: as one `web.Response` for plain answers, chunk by chunk with
`StreamResponse.prepare/write` for event streams. Same event loop (uvloop)
and the same AppRunner options as the sidecar, so the difference measured is
the sidecar's own work: parsing, routing, translation, tracing.

    python -m bench.baseline --port 18001 --upstream http://127.0.0.1:18000/v1
"""

from __future__ import annotations

import argparse

import aiohttp
import uvloop
from aiohttp import web

from bench.serving import serve_until_stopped

SESSION = web.AppKey("session", aiohttp.ClientSession)
TARGET = web.AppKey("target", str)
HEADERS = web.AppKey("headers", dict)

_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    app = request.app
    async with app[SESSION].post(app[TARGET], data=body, headers=app[HEADERS]) as upstream:
        if upstream.content_type == "text/event-stream":
            response = web.StreamResponse(status=upstream.status, headers=_SSE_HEADERS)
            try:
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionResetError:  # the client left (wrk does at the end of a run)
                pass
            return response
        data = await upstream.read()
        return web.Response(body=data, status=upstream.status, content_type=upstream.content_type)


def build_app(*, upstream: str, api_key: str) -> web.Application:
    app = web.Application()
    app[TARGET] = upstream.rstrip("/") + "/chat/completions"
    app[HEADERS] = {"content-type": "application/json", "authorization": f"Bearer {api_key}"}

    async def client_session(app: web.Application):  # type: ignore[no-untyped-def]
        # The sidecar's connector settings (proxy/server.py), so pooling behaves the same.
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        app[SESSION] = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(client_session)
    app.router.add_post("/v1/chat/completions", chat_completions)
    return app


async def serve(args: argparse.Namespace) -> None:
    await serve_until_stopped(
        build_app(upstream=args.upstream, api_key=args.api_key),
        host=args.host,
        port=args.port,
        banner=f"bench baseline listening on http://{args.host}:{args.port} -> {args.upstream}",
        handler_cancellation=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="upstream base URL, e.g. http://127.0.0.1:18000/v1")
    parser.add_argument("--api-key", default="sk-bench")
    args = parser.parse_args(argv)
    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
