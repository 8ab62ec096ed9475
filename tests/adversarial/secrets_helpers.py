"""For the key-leak tests: a provider that echoes the key it was sent, and an OTLP sink that keeps
every payload's bytes."""

from __future__ import annotations

import asyncio
import http.server as http_server
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tests.adversarial.hostile import Answer, Received, http

# One key per provider type, each as that provider issues them; Azure's (32 hex characters)
# has no shape a pattern could know, so only the snapshot's own keys can catch it.
KEYS = {
    "openai": "sk-proj-Q7f2LmX9vTq4ZbR1nWc8KpY3sHd6JgA0eUo5iVt2MxBz",
    "azure-openai": "7c1e9a4f2b8d06e3a5f4c2b19d7e8a60",
    "anthropic": "sk-ant-api03-Zr4Wq8Xn2Lp6Tv1Ks9Jd3Hf7Gb5Nm0Ye4Uc8Ro2Ia6Qw-Ab1CdEfGhAA",
    "gemini": "AIzaSyD4rT8pQ2mX7vK1nL9wZ3bH6jF0cY5eG8u",
}


def leaked_forms(key: str) -> re.Pattern[bytes]:
    """What of `key` must never appear: the key, every 8 characters in a row of it, and the visible
    head and tail providers leave when they mask it (or a cut leaves). A head or tail shorter than 8
    counts only standing apart (`sk-...8a60`, `****8a60`): inside a longer run of letters and digits
    it is chance, e.g. a hex key's last four characters inside a random hex trace id."""
    pieces = {key[i : i + 8] for i in range(len(key) - 7)}
    alone = {key[:6], key[-4:], key[-6:]}
    return re.compile(
        b"|".join(
            [re.escape(p.encode()) for p in sorted(pieces)]
            + [b"(?<![0-9A-Za-z])" + re.escape(p.encode()) + b"(?![0-9A-Za-z])" for p in sorted(alone)]
        )
    )


def snapshot(base_url: str) -> dict[str, Any]:
    """A route per provider type (model = the type's name), each to the echoing provider with its key."""
    providers, routes = [], []
    for kind, key in KEYS.items():
        name = kind.replace("-openai", "")
        provider: dict[str, Any] = {
            "name": name,
            "type": kind,
            "apiKey": key,
            "baseUrl": base_url + ("/v1" if kind == "openai" else ""),
        }
        if kind == "azure-openai":
            provider["apiVersion"] = "2024-10-21"
        providers.append(provider)
        routes.append(
            {
                "name": name,
                "model": kind,
                "rules": [
                    {
                        "name": "default",
                        "backends": [{"provider": name, "model": "m-upstream"}],
                        "retry": {"attempts": 1},
                        "timeouts": {"totalSeconds": 5},
                    }
                ],
            }
        )
    return {"providers": providers, "routes": routes}


def key_sent(request: Received) -> str:
    """The key as the provider received it, from whichever header its type uses."""
    headers = request.headers
    for name in ("x-api-key", "x-goog-api-key", "api-key"):
        if name in headers:
            return headers[name]
    return headers["authorization"].removeprefix("Bearer ")


def echo(make: Callable[[str], Answer]) -> Answer:
    """An answer built from the key of the request it answers."""

    async def answer(request: Received, writer: asyncio.StreamWriter) -> None:
        await make(key_sent(request))(request, writer)

    return answer


def error_body(message: str) -> bytes:
    """One error body every provider type reads its message from (OpenAI, Anthropic, Gemini shapes)."""
    return json.dumps(
        {
            "type": "error",
            "error": {"type": "authentication_error", "code": 401, "status": "UNAUTHENTICATED", "message": message},
        }
    ).encode()


# Ways a provider echoes a key: whole, masked in the middle (as OpenAI does), in a raw text body, in a
# 400 (whose message goes to the app as the reason), in a 200 body that is not JSON (quoted, cut at 80
# bytes: a part of the key is left) and in one cut so that only the key's first 6 characters remain.
ECHOES: dict[str, Callable[[str], Answer]] = {
    "full": lambda key: http(401, error_body(f"Incorrect API key provided: {key}. Find yours at example.com")),
    "masked-stars": lambda key: http(401, error_body(f"Incorrect API key provided: {key[:8]}{'*' * 24}{key[-4:]}.")),
    "masked-dots": lambda key: http(403, error_body(f"key {key[:10]}...{key[-6:]} is not allowed")),
    "masked-ellipsis": lambda key: http(401, error_body(f"invalid key \u201c{key[:6]}\u2026{key[-4:]}\u201d")),
    # (an error that is a string, not an object: the message is the body itself)
    "json-500": lambda key: http(500, json.dumps({"error": f"denied; api_key={key}"}).encode()),
    "text-503": lambda key: http(503, f"upstream auth with Bearer {key} failed".encode(), content_type="text/plain"),
    "client-400": lambda key: http(400, error_body(f"bad request for key={key}")),
    "garbage-200": lambda key: http(200, f"<html>{'x' * 50} {key}</html>".encode(), content_type="text/html"),
    "garbage-200-cut": lambda key: http(200, f"<p>{'y' * 70} {key}".encode(), content_type="text/html"),
}


def stream_events(kind: str, key: str, *, content_first: bool) -> list[bytes]:
    """A stream in `kind`'s wire format that fails with an error event quoting `key`, after some
    content (the error reaches the app mid-stream) or before any (the attempt fails)."""
    message = f"stream aborted: credential {key} revoked"
    if kind == "anthropic":
        start = [
            b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
            b'"role":"assistant","model":"m-upstream","content":[],"usage":{"input_tokens":3,'
            b'"output_tokens":0}}}\n\n',
            b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
            b'"content_block":{"type":"text","text":""}}\n\n',
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":"Hello"}}\n\n',
        ]
        error = (
            b"event: error\ndata: "
            + json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": message}}).encode()
            + b"\n\n"
        )
        return (start if content_first else start[:1]) + [error]
    if kind == "gemini":
        content = b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hello"}]},"index":0}]}\n\n'
        error = b"data: " + json.dumps({"error": {"code": 500, "message": message, "status": "INTERNAL"}}).encode()
        return ([content] if content_first else []) + [error + b"\n\n"]
    content = (
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m-upstream","choices":'
        b'[{"index":0,"delta":{"role":"assistant","content":"Hello"},"finish_reason":null}]}\n\n'
    )
    error = b"data: " + json.dumps({"error": {"message": message, "type": "server_error"}}).encode() + b"\n\n"
    return ([content] if content_first else []) + [error]


def stream_echo(kind: str, *, content_first: bool) -> Answer:
    """The stream of `stream_events`; the error event comes a moment after the content, so the
    sidecar has sent the content on (committed) when it reads the error."""

    def make(key: str) -> Answer:
        *first, error = stream_events(kind, key, content_first=content_first)

        async def answer(request: Received, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            for event in first:
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(0.05 if content_first else 0)
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(error), error))
            await writer.drain()

        return answer

    return echo(make)


class _Sink(http_server.BaseHTTPRequestHandler):
    payloads: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.payloads.append((self.path, body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def otlp_sink() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """An OTLP/HTTP receiver on a free port: (its base URL, the (path, body) of every export)."""
    server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    server.payloads = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="otlp-sink")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.payloads  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
