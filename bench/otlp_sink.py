"""A tiny OTLP/HTTP sink: accepts `POST /v1/traces` and `/v1/metrics`, answers 200 with an empty body.

It does not decode the protobuf; it counts export requests and their bytes,
which `GET /stats` returns as JSON, so the benchmark can show that the
sidecar really exported its spans.

    python -m bench.otlp_sink --port 4318
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web

from bench.serving import serve_until_stopped

STATS = web.AppKey("stats", dict)


async def traces(request: web.Request) -> web.Response:
    body = await request.read()
    stats = request.app[STATS]
    stats["requests"] += 1
    stats["bytes"] += len(body)
    if request.path == "/v1/metrics":
        stats["metric_requests"] += 1
    # An empty ExportTraceServiceResponse is an empty protobuf message.
    return web.Response(status=200, body=b"", content_type="application/x-protobuf")


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS])


def build_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATS] = {"requests": 0, "bytes": 0, "metric_requests": 0}
    app.router.add_post("/v1/traces", traces)
    app.router.add_post("/v1/metrics", traces)  # an empty ExportMetricsServiceResponse is empty too
    app.router.add_get("/stats", get_stats)
    return app


async def serve(host: str, port: int) -> None:
    await serve_until_stopped(
        build_app(), host=host, port=port, banner=f"bench OTLP sink listening on http://{host}:{port}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.otlp_sink", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
