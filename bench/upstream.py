"""A fast, fixed-cost fake OpenAI upstream for benchmarks.

`POST /v1/chat/completions` answers one fixed `chat.completion`, or, when the
body asks for `"stream": true`, a fixed SSE stream: five `chat.completion.chunk`
events, a usage chunk and `data: [DONE]`, each event written on its own as a
provider would. Nothing is parsed beyond a substring test on the body, and
every answer is built once at import, so its cost per request is constant and
small next to the proxies it feeds.

    python -m bench.upstream --port 18000
"""

from __future__ import annotations

import argparse
import json

import uvloop
from aiohttp import web

from bench.serving import serve_until_stopped

MODEL = "bench-upstream-model"
_ID = "chatcmpl-bench0000000000000000000000"
_CREATED = 1_700_000_000
_WORDS = ("Hello", " from", " the", " bench", " upstream.")

COMPLETION = json.dumps(
    {
        "id": _ID,
        "object": "chat.completion",
        "created": _CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(_WORDS), "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    },
    separators=(",", ":"),
).encode()


def _chunk(delta: dict, finish_reason: str | None = None) -> dict:
    return {
        "id": _ID,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def _stream_events() -> tuple[bytes, ...]:
    chunks = [_chunk({"role": "assistant", "content": _WORDS[0]})]
    chunks += [_chunk({"content": word}) for word in _WORDS[1:-1]]
    chunks.append(_chunk({"content": _WORDS[-1]}, finish_reason="stop"))
    usage = {
        "id": _ID,
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }
    events = [b"data: " + json.dumps(c, separators=(",", ":")).encode() + b"\n\n" for c in (*chunks, usage)]
    events.append(b"data: [DONE]\n\n")
    return tuple(events)


STREAM_EVENTS = _stream_events()
_STREAM_MARKERS = (b'"stream": true', b'"stream":true')
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if _STREAM_MARKERS[0] in body or _STREAM_MARKERS[1] in body:
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        for event in STREAM_EVENTS:
            await response.write(event)
        await response.write_eof()
        return response
    return web.Response(body=COMPLETION, content_type="application/json")


def build_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    return app


async def serve(host: str, port: int, name: str) -> None:
    await serve_until_stopped(
        build_app(), host=host, port=port, banner=f"{name} listening on http://{host}:{port}", backlog=1024
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvloop.run(serve(args.host, args.port, "bench upstream"))


if __name__ == "__main__":
    main()
