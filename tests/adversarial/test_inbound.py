"""Hostile apps against the real sidecar: deep JSON, mistyped fields, huge echoed values.

Every answer must be an error in the API's own JSON shape with a 4xx status that names the
field at fault, whichever provider type the route leads to (OpenAI, Azure, Anthropic and
Gemini fakes), and never aiohttp's text/plain 500.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.integration.sidecar import SidecarProcess
from tests.integration.snapshots import build_snapshot

CHAT_ROUTES = ["gpt", "azure", "claude", "gemini"]  # openai, azure-openai, anthropic, gemini backends
CAPTURE_ENV = {
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
    # content is captured on recording spans only; nothing listens there, export just fails
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
    "OTEL_EXPORTER_OTLP_TIMEOUT": "300",
}


@pytest.fixture(scope="module")
def snapshot(fake_openai_process: Any, fake_anthropic_process: Any, fake_gemini_process: Any) -> dict[str, Any]:
    return build_snapshot(fake_openai_process.base_url, fake_anthropic_process.base_url, fake_gemini_process.base_url)


@pytest.fixture(scope="module")
def sidecar(snapshot: dict[str, Any]) -> Iterator[SidecarProcess]:
    with SidecarProcess(snapshot) as process:
        yield process


@pytest.fixture(scope="module")
def capturing_sidecar(snapshot: dict[str, Any]) -> Iterator[SidecarProcess]:
    with SidecarProcess(snapshot, env=CAPTURE_ENV) as process:
        yield process


def post(
    sidecar: SidecarProcess, path: str, body: bytes | Any, headers: dict[str, str] | None = None
) -> tuple[int, str, bytes]:
    """Raw POST (the body as given, even when no SDK could serialise it): status, content type, body."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", sidecar.port, timeout=20)
    try:
        conn.request("POST", path, body=data, headers={"content-type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type") or "", resp.read()
    finally:
        conn.close()


def openai_error(status: int, content_type: str, body: bytes) -> dict[str, Any]:
    assert content_type.startswith("application/json"), (status, content_type, body[:300])
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


def anthropic_error(status: int, content_type: str, body: bytes) -> dict[str, Any]:
    assert content_type.startswith("application/json"), (status, content_type, body[:300])
    data = json.loads(body)
    assert data["type"] == "error" and set(data["error"]) == {"type", "message"}, data
    return data["error"]


# --- deep JSON -------------------------------------------------------------------------------------------


def nested(depth: int) -> bytes:
    """JSON arrays nested `depth` levels: `[[[...]]]`."""
    return b"[" * depth + b"]" * depth


def openai_deep(route: str, depth: int) -> bytes:
    """A valid chat request whose first tool's parameters nest so the whole body is `depth` deep.
    body{ tools[ {tool function{ parameters{ "x": ... -> 5 levels before the arrays."""
    head = (
        b'{"model":"' + route.encode() + b'","messages":[{"role":"user","content":"hi"}],'
        b'"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","x":'
    )
    return head + nested(depth - 5) + b"}}}]}"


def anthropic_deep(route: str, depth: int) -> bytes:
    """body{ tools[ {tool input_schema{ "x": ... -> 4 levels before the arrays."""
    head = (
        b'{"model":"' + route.encode() + b'","max_tokens":10,"messages":[{"role":"user","content":"hi"}],'
        b'"tools":[{"name":"f","input_schema":{"type":"object","x":'
    )
    return head + nested(depth - 4) + b"}}]}"


DEEP = [129, 253, 254, 255, 1023, 1024, 1025, 5000]


@pytest.mark.parametrize("depth", DEEP)
@pytest.mark.parametrize("route", CHAT_ROUTES)
def test_deep_openai_bodies_are_refused_with_a_400(sidecar: SidecarProcess, route: str, depth: int) -> None:
    status, content_type, body = post(sidecar, "/v1/chat/completions", openai_deep(route, depth))
    error = openai_error(status, content_type, body)
    assert status == 400, error
    assert error["code"] == "json_too_deep" and "128 levels deep" in error["message"]


@pytest.mark.parametrize("depth", DEEP)
@pytest.mark.parametrize("route", CHAT_ROUTES)
def test_deep_anthropic_bodies_are_refused_with_a_400(sidecar: SidecarProcess, route: str, depth: int) -> None:
    status, content_type, body = post(sidecar, "/v1/messages", anthropic_deep(route, depth))
    error = anthropic_error(status, content_type, body)
    assert status == 400 and error["type"] == "invalid_request_error", error
    assert "128 levels deep" in error["message"]


@pytest.mark.parametrize("route", CHAT_ROUTES)
def test_bodies_at_the_depth_limit_are_served(sidecar: SidecarProcess, route: str) -> None:
    status, _, body = post(sidecar, "/v1/chat/completions", openai_deep(route, 128))
    assert status == 200, body[:500]
    status, _, body = post(sidecar, "/v1/messages", anthropic_deep(route, 128))
    assert status == 200, body[:500]


def test_deep_top_level_values_and_embeddings(sidecar: SidecarProcess) -> None:
    for depth in (255, 1024, 5000):
        status, content_type, body = post(sidecar, "/v1/chat/completions", nested(depth))
        assert status == 400 and openai_error(status, content_type, body)["code"] == "json_too_deep"
        deep_input = b'{"model":"embed","input":[' + nested(depth - 2) + b"]}"
        status, content_type, body = post(sidecar, "/v1/embeddings", deep_input)
        assert status == 400 and openai_error(status, content_type, body)["code"] == "json_too_deep"


# --- mistyped fields --------------------------------------------------------------------------------------

USER = {"role": "user", "content": "hi"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}

# (fields merged into a valid request, the param the 400 must name)
OPENAI_MISTYPED: list[tuple[dict[str, Any], str]] = [
    ({"messages": "hi"}, "messages"),
    ({"messages": [5]}, "messages[0]"),
    ({"messages": [{"role": ["user"], "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [5]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content[0].text"),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": 5}]}]},
        "messages[0].content[0].image_url",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": [1]}}]}]},
        "messages[0].content[0].image_url.url",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": 1}}]}]},
        "messages[0].content[0].input_audio.data",
    ),
    ({"messages": [{"role": "user", "content": [{"type": "file", "file": "x"}]}]}, "messages[0].content[0].file"),
    ({"messages": [USER, {"role": "assistant", "content": None, "tool_calls": 5}]}, "messages[1].tool_calls"),
    (
        {
            "messages": [
                USER,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {"a": 1}}}],
                },
            ]
        },
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        {"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [{**CALL, "id": 7}]}]},
        "messages[1].tool_calls[0].id",
    ),
    ({"messages": [USER, {"role": "user", "name": 5, "content": "x"}]}, "messages[1].name"),
    ({"stop": 5}, "stop"),
    ({"stop": [1, 2]}, "stop"),
    ({"stop": {"a": 1}}, "stop"),
    ({"tools": 5}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": 5}}]}, "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "description": 5}}]}, "tools[0].function.description"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": 5}, "tool_choice"),
    (
        {
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": "f"},
        },
        "tool_choice.function",
    ),
    ({"response_format": 5}, "response_format.type"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}},
        "response_format.json_schema.schema",
    ),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"max_completion_tokens": 1.5}, "max_completion_tokens"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": [1]}, "top_p"),
    ({"n": "2"}, "n"),
    ({"seed": 1.5}, "seed"),
    ({"user": 5}, "user"),
    ({"stream": "yes"}, "stream"),
    ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    ({"parallel_tool_calls": "no"}, "parallel_tool_calls"),
]


@pytest.mark.parametrize("route", CHAT_ROUTES)
@pytest.mark.parametrize(("fields", "param"), OPENAI_MISTYPED, ids=[p for _, p in OPENAI_MISTYPED])
def test_mistyped_openai_fields_are_400s_naming_the_field(
    sidecar: SidecarProcess, route: str, fields: dict[str, Any], param: str
) -> None:
    status, content_type, body = post(sidecar, "/v1/chat/completions", {"model": route, "messages": [USER], **fields})
    error = openai_error(status, content_type, body)
    assert status == 400, error
    assert error["param"] == param and error["type"] == "invalid_request_error", error


ANTHROPIC_MISTYPED: list[tuple[dict[str, Any], str]] = [
    ({"messages": 5}, "messages"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": 5}]}]}, "messages.0.content.0.source"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": ["x"]}]}]}, "messages.0.content.0.text"),
    (
        {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "x"}]}]},
        "messages.0.content.0.input",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": 5}]}]},
        "messages.0.content.0.content",
    ),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"stop_sequences": [1]}, "stop_sequences"),
    ({"temperature": "x"}, "temperature"),
    ({"system": 5}, "system"),
    ({"metadata": 5}, "metadata"),
    ({"tools": 5}, "tools"),
    ({"tools": [{"name": "f", "input_schema": 5}]}, "tools.0.input_schema"),
    ({"tools": [{"name": "f", "input_schema": {}}], "tool_choice": 5}, "tool_choice"),
    ({"output_config": {"format": 5}}, "output_config.format"),
    ({"top_k": "x"}, "top_k"),
    ({"stream": 1}, "stream"),
]


@pytest.mark.parametrize("route", CHAT_ROUTES)
@pytest.mark.parametrize(("fields", "param"), ANTHROPIC_MISTYPED, ids=[p for _, p in ANTHROPIC_MISTYPED])
def test_mistyped_anthropic_fields_are_400s_naming_the_field(
    sidecar: SidecarProcess, route: str, fields: dict[str, Any], param: str
) -> None:
    status, content_type, body = post(
        sidecar, "/v1/messages", {"model": route, "max_tokens": 10, "messages": [USER], **fields}
    )
    error = anthropic_error(status, content_type, body)
    assert status == 400 and error["type"] == "invalid_request_error", error
    assert error["message"].startswith(param + ":"), error


EMBEDDINGS_MISTYPED: list[tuple[dict[str, Any], str]] = [
    ({"input": 5}, "input"),
    ({"input": [{"a": 1}]}, "input"),
    ({"input": ["a", 1.5]}, "input"),
    ({"input": [True]}, "input"),
    ({"input": [[1, "a"]]}, "input"),
    ({"dimensions": "8"}, "dimensions"),
    ({"encoding_format": 5}, "encoding_format"),
    ({"user": [1]}, "user"),
]


@pytest.mark.parametrize("route", ["embed", "embed-gemini"])
@pytest.mark.parametrize(("fields", "param"), EMBEDDINGS_MISTYPED, ids=[p for _, p in EMBEDDINGS_MISTYPED])
def test_mistyped_embeddings_fields_are_400s(
    sidecar: SidecarProcess, route: str, fields: dict[str, Any], param: str
) -> None:
    status, content_type, body = post(sidecar, "/v1/embeddings", {"model": route, "input": "hi", **fields})
    error = openai_error(status, content_type, body)
    assert status == 400 and error["param"] == param, error


def test_the_sdks_see_bad_request_errors_with_the_param(sidecar: SidecarProcess) -> None:
    client = sidecar.openai_client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gemini", messages=[USER], stop=5)  # type: ignore[arg-type]
    assert caught.value.param == "stop"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": [{"type": "image_url", "image_url": 5}]}]
        )  # type: ignore[list-item]
    assert caught.value.param == "messages[0].content[0].image_url"
    claude = sidecar.anthropic_client()
    with pytest.raises(anthropic.BadRequestError) as caught_anthropic:
        claude.messages.create(model="gemini", max_tokens=10, messages=[USER], stop_sequences=[1])  # type: ignore[list-item]
    assert "stop_sequences" in caught_anthropic.value.message


# --- what errors echo -------------------------------------------------------------------------------------


def test_unknown_model_404_quotes_a_huge_name_briefly(sidecar: SidecarProcess) -> None:
    model = "m" * 100_000
    status, content_type, body = post(sidecar, "/v1/chat/completions", {"model": model, "messages": [USER]})
    error = openai_error(status, content_type, body)
    assert status == 404 and error["code"] == "model_not_found"
    assert len(body) < 2000 and "m" * 100 + "…" in error["message"] and "m" * 101 not in error["message"]
    status, content_type, body = post(sidecar, "/v1/messages", {"model": model, "max_tokens": 5, "messages": [USER]})
    assert (
        status == 404 and len(body) < 2000 and "m" * 101 not in anthropic_error(status, content_type, body)["message"]
    )


def test_errors_quote_huge_field_values_briefly(sidecar: SidecarProcess) -> None:
    huge = "r" * 100_000
    cases = [
        ("/v1/chat/completions", {"model": "gpt", "messages": [{"role": huge, "content": "x"}]}),
        (
            "/v1/chat/completions",
            {
                "model": "gemini",
                "messages": [USER],
                "tool_choice": huge,
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
        ),
        ("/v1/messages", {"model": "gpt", "max_tokens": 5, "messages": [{"role": huge, "content": "x"}]}),
        (
            "/v1/messages",
            {"model": "gpt", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": huge}]}]},
        ),
    ]
    for path, request in cases:
        status, _, body = post(sidecar, path, request)
        assert status == 400 and len(body) < 1000, (path, body[:300])
    status, _, body = post(sidecar, "/v1/chat/completions", b"{}", headers={"content-type": "text/" + "x" * 5000})
    assert status == 415 and len(body) < 1000


# --- content capture --------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", CHAT_ROUTES)
def test_content_capture_survives_mistyped_tool_calls(capturing_sidecar: SidecarProcess, route: str) -> None:
    for calls in (5, [5], [{"id": "c", "function": 5}], [{"id": "c", "function": {"name": "f", "arguments": {}}}]):
        request = {"model": route, "messages": [USER, {"role": "assistant", "content": None, "tool_calls": calls}]}
        status, content_type, body = post(capturing_sidecar, "/v1/chat/completions", request)
        assert status == 400 and openai_error(status, content_type, body)["param"].startswith("messages[1].tool_calls")
    for content in (5, [5], [{"type": "text", "text": 5}]):
        request = {
            "model": route,
            "messages": [
                USER,
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": content},
            ],
        }
        status, content_type, body = post(capturing_sidecar, "/v1/chat/completions", request)
        assert status == 400 and openai_error(status, content_type, body)["param"].startswith("messages[2].content")


@pytest.mark.parametrize("route", CHAT_ROUTES)
def test_content_capture_still_serves_tool_turns(capturing_sidecar: SidecarProcess, route: str) -> None:
    request = {
        "model": route,
        "messages": [
            USER,
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": '{"ok": 1}'}]},
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    status, _, body = post(capturing_sidecar, "/v1/chat/completions", request)
    assert status == 200, body[:500]
    assert "Traceback" not in capturing_sidecar.logs()


# --- the last resort --------------------------------------------------------------------------------------


async def test_an_unexpected_exception_is_a_json_500_in_the_callers_shape(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug anywhere in a handler: JSON 500 in the right API's shape, a generic message (the
    exception text may hold input or secrets), and the traceback in the log at ERROR."""
    from aiohttp.test_utils import TestClient, TestServer

    from proxy import server
    from proxy.frontends.anthropic_messages import AnthropicFrontend
    from proxy.runtime import RuntimeHolder
    from proxy.telemetry.facade import Telemetry

    secret = "sk-live-0123456789abcdef0123"

    def bug(body: Any) -> Any:
        raise RuntimeError(f"a bug that quotes {secret}")

    monkeypatch.setattr(server.OPENAI, "parse_chat", bug)
    monkeypatch.setattr(AnthropicFrontend, "parse_chat", lambda self, body: bug(body))  # (loaded by its request)
    app = server.build_app(holder=RuntimeHolder(), telemetry=Telemetry(), settings=server.ServerSettings())
    async with TestClient(TestServer(app)) as client:
        resp = await client.post(
            "/v1/chat/completions", json={"model": "m", "messages": [USER]}, headers={"accept": "text/html"}
        )
        text = await resp.text()
        assert resp.status == 500 and resp.content_type == "application/json", text
        assert json.loads(text)["error"]["code"] == "internal_error" and secret not in text
        resp = await client.post("/v1/messages", json={"model": "m", "max_tokens": 5, "messages": [USER]})
        text = await resp.text()
        assert resp.status == 500 and json.loads(text)["error"]["type"] == "api_error" and secret not in text
    errors = [r for r in caplog.records if r.levelname == "ERROR" and r.name == "modelway.server"]
    assert len(errors) == 2 and all(r.exc_info for r in errors)


PROTOCOL_ERRORS = {
    "bad request line": b"GARBAGE\r\n\r\n",
    "invalid method": b"G@T /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
    "header too large": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
    "bad chunked body": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n"
    ),
    "bad version": b"GET /v1/models HTTP/9.9\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("name", PROTOCOL_ERRORS)
def test_http_level_errors_are_json_400s(sidecar: SidecarProcess, name: str) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=5) as sock:
        sock.sendall(PROTOCOL_ERRORS[name])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", answer[:300]
    assert b"content-type: application/json" in head.lower(), head
    error = json.loads(body)["error"]
    assert error["code"] == "bad_http_request" and len(error["message"]) < 200, error


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/embeddings"])
def test_bodies_that_do_not_decode_are_400s(sidecar: SidecarProcess, encoding: str, path: str) -> None:
    status, content_type, body = post(sidecar, path, b"not compressed at all", headers={"content-encoding": encoding})
    assert status == 400, body
    parse = anthropic_error if path == "/v1/messages" else openai_error
    assert "could not be read" in parse(status, content_type, body)["message"]
