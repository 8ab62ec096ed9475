"""A real sidecar in front of a hostile provider that answers garbage: whatever it answers, the app
gets its own API's shape (502 for the provider's garbage, the next backend tried first, never a
500; mid-stream, the error event), and later requests are unharmed."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from tests.adversarial.answers_helpers import (
    assert_openai_error,
    assert_stream_ends_with_error,
    call,
    chat,
    chunk,
    completion,
    good_stream,
    messages,
    metric_lines,
    models_asked,
    paced_sse,
)
from tests.adversarial.hostile import HostileProvider, http, raw, sse
from tests.integration.sidecar import SidecarProcess

# --- 1. one bad answer must not break the route ---------------------------------------------


def test_string_token_counts_are_a_bad_answer_and_the_route_keeps_working(
    provider: HostileProvider, sidecar: SidecarProcess
) -> None:
    """The first usage a route's metrics ever see has strings for counts: that answer is a 502 naming the
    field, and every later good answer on the route is a 200 (it was a 500, for good)."""
    bad = completion(usage={"prompt_tokens": "11", "completion_tokens": "2", "total_tokens": "13"})
    provider.script(http(200, bad))
    assert_openai_error(chat(sidecar), 502, "prompt_tokens", "bad_response")
    for _ in range(3):
        provider.script(http(200, completion("again")))
        answer = chat(sidecar)
        assert answer.status == 200 and answer.json()["choices"][0]["message"]["content"] == "again"
    provider.script(sse(good_stream()))
    assert chat(sidecar, stream=True).events()[-1] == "[DONE]"
    tokens = metric_lines(sidecar, "gen_ai_client_token_usage_sum")
    assert any('modelway_route="m"' in line and 'gen_ai_token_type="input"' in line for line in tokens), tokens


BAD_USAGES = [
    {"prompt_tokens": -1, "completion_tokens": 2},
    {"prompt_tokens": 1.5, "completion_tokens": 2},
    {"prompt_tokens": 10**30, "completion_tokens": 2},
    {"prompt_tokens": True, "completion_tokens": 2},
    {"prompt_tokens": 1, "completion_tokens": [2]},
    {"prompt_tokens": 1, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": "x"}},
    ["prompt_tokens", 1],
]


@pytest.mark.parametrize("usage", BAD_USAGES, ids=range(len(BAD_USAGES)))
def test_mistyped_usage_falls_back_to_the_next_backend(
    provider: HostileProvider, sidecar: SidecarProcess, usage: Any
) -> None:
    since = len(provider.received)
    provider.script(http(200, completion(usage=usage)), http(200, completion("from the fallback")))
    answer = chat(sidecar, "fb")
    assert answer.status == 200 and answer.json()["choices"][0]["message"]["content"] == "from the fallback"
    assert models_asked(provider, since) == ["m-upstream", "m-fallback"]


BAD_FIELDS = [
    {"model": 5},
    {"model": "m" * 100_000},
    {"id": {"x": 1}},
    {"choices": [5]},
    {"choices": "x"},
    {"choices": [{"index": 0, "message": "hello", "finish_reason": "stop"}]},
    {"choices": [{"index": 0, "message": {"content": 5}, "finish_reason": "stop"}]},
    {"choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": ["stop"]}]},
    {"choices": [{"index": "0", "message": {"content": "x"}, "finish_reason": "stop"}]},
    {"choices": [{"index": 0, "message": {"content": None, "tool_calls": [{"id": 1}]}, "finish_reason": "stop"}]},
    {"choices": [{"index": 0, "message": {"content": [{"type": "text", "text": 5}]}, "finish_reason": "stop"}]},
]


@pytest.mark.parametrize("fields", BAD_FIELDS, ids=range(len(BAD_FIELDS)))
@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_mistyped_completion_fields_are_a_502_in_the_apps_api(
    provider: HostileProvider, sidecar: SidecarProcess, fields: dict[str, Any], api: str
) -> None:
    provider.script(http(200, completion(**fields)))
    if api == "openai":
        assert_openai_error(chat(sidecar), 502, "bad_response")
        return
    answer = call(
        sidecar, "/v1/messages", {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert answer.status == 502 and answer.json()["type"] == "error", answer
    assert answer.json()["error"]["type"] == "api_error" and "bad_response" in answer.json()["error"]["message"]


# --- 2. malformed answers: 502, never 500; mid-stream: the error event ------------------------


ODD_CHUNKS = [
    b'data: {"choices": [5]}\n\n',
    b'data: {"choices": [{"index": 0, "delta": "x"}]}\n\n',
    b'data: {"choices": [{"index": 0, "delta": {"content": 5}}]}\n\n',
    b'data: {"choices": [{"index": 0, "delta": {"tool_calls": 7}}]}\n\n',
    b'data: {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": "a"}]}}]}\n\n',
    b'data: {"choices": [{"index": 0, "delta": {}}], "usage": {"prompt_tokens": "11"}}\n\n',
    b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": {"a": 1}}]}\n\n',
    b'data: {"choices": [], "model": 12}\n\n',
    b'data: {"error": {"message": [[[[1]]]]}}\n\n',
]


@pytest.mark.parametrize("odd", ODD_CHUNKS, ids=range(len(ODD_CHUNKS)))
def test_odd_openai_stream_event_mid_stream_ends_with_the_error_event(
    provider: HostileProvider, sidecar: SidecarProcess, odd: bytes
) -> None:
    """Content already went out: the stream must end with the API's error event, not be cut short."""
    provider.script(paced_sse([chunk({"role": "assistant", "content": "partial"}), odd, *good_stream()]))
    answer = chat(sidecar, stream=True)
    assert json.loads(answer.events()[0])["choices"][0]["delta"]["content"] == "partial"
    assert_stream_ends_with_error(answer)


@pytest.mark.parametrize("odd", ODD_CHUNKS, ids=range(len(ODD_CHUNKS)))
def test_odd_openai_stream_event_before_content_falls_back(
    provider: HostileProvider, sidecar: SidecarProcess, odd: bytes
) -> None:
    since = len(provider.received)
    provider.script(sse([odd, *good_stream()]), sse(good_stream()))
    answer = chat(sidecar, "fb", stream=True)
    assert answer.status == 200 and answer.events()[-1] == "[DONE]"
    assert models_asked(provider, since) == ["m-upstream", "m-fallback"]


def test_odd_openai_stream_event_mid_stream_in_the_anthropic_api(
    provider: HostileProvider, sidecar: SidecarProcess
) -> None:
    provider.script(paced_sse([chunk({"role": "assistant", "content": "partial"}), ODD_CHUNKS[1]]))
    answer = messages(sidecar, stream=True)
    assert answer.status == 200
    last = answer.raw.decode().strip().split("\n\n")[-1]
    assert last.startswith("event: error\n"), last
    assert json.loads(last.split("data: ", 1)[1])["error"]["type"] == "api_error"


def _gemini(**fields: Any) -> bytes:
    answer = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4},
        "modelVersion": "g-upstream",
        "responseId": "r1",
    }
    return json.dumps({**answer, **fields}).encode()


GEMINI_BAD = [
    {"responseId": 5},
    {"responseId": ["a"]},
    {"modelVersion": {"v": 1}},
    {"usageMetadata": {"promptTokenCount": "3"}},
    {"usageMetadata": [3]},
    {"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": -1}},
    {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "id": 5}}]}, "index": 0}]},
    {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": [1]}}]}}]},
    {"candidates": [{"content": {"parts": [{"text": "x"}]}, "index": "0"}]},
]


@pytest.mark.parametrize("fields", GEMINI_BAD, ids=range(len(GEMINI_BAD)))
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_gemini_usage_or_ids_of_the_wrong_type_are_a_502(
    provider: HostileProvider, sidecar: SidecarProcess, fields: dict[str, Any], stream: bool
) -> None:
    provider.script(sse([b"data: " + _gemini(**fields) + b"\n\n"]) if stream else http(200, _gemini(**fields)))
    assert_openai_error(chat(sidecar, "gem", stream=stream), 502, "bad_response")
    provider.script(http(200, _gemini()))
    assert chat(sidecar, "gem").status == 200


@pytest.mark.parametrize("values", [["a", 1.0], [None], [[0.1]], [1e39], [{"x": 1}]], ids=range(5))
@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embeddings_over_non_float_vectors_are_a_502(
    provider: HostileProvider, sidecar: SidecarProcess, values: list[Any], encoding: str
) -> None:
    body = {"model": "gem", "input": "hi", "encoding_format": encoding}
    provider.script(http(200, json.dumps({"embedding": {"values": values}}).encode()))
    assert_openai_error(call(sidecar, "/v1/embeddings", body), 502, "bad_response")
    provider.script(
        http(
            200,
            json.dumps(
                {
                    "data": [{"object": "embedding", "index": 0, "embedding": values}],
                    "model": "m",
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                }
            ).encode(),
        )
    )
    assert_openai_error(call(sidecar, "/v1/embeddings", {**body, "model": "m"}), 502, "bad_response")
    provider.script(http(200, json.dumps({"embedding": {"values": [0.5, -0.25]}}).encode()))
    answer = call(sidecar, "/v1/embeddings", body)
    assert answer.status == 200
    vector = answer.json()["data"][0]["embedding"]
    assert vector == [0.5, -0.25] if encoding == "float" else base64.b64decode(vector) == b"\0\0\0?\0\0\x80\xbe"


def _anthropic_message(**fields: Any) -> bytes:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "a-upstream",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    return json.dumps({**message, **fields}).encode()


def _anthropic_events(*, start: dict[str, Any] | None = None, delta: Any = None) -> list[bytes]:
    def event(kind: str, data: dict[str, Any]) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "a-upstream",
        "content": [],
        "usage": {"input_tokens": 3, "output_tokens": 0},
        **(start or {}),
    }
    return [
        event("message_start", {"message": message}),
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "hello"}}),
        event("content_block_delta", {"index": 0, "delta": delta or {"type": "text_delta", "text": "!"}}),
        event("content_block_stop", {"index": 0}),
        event("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
        event("message_stop", {}),
    ]


ANTHROPIC_BAD = [
    {"id": 5},
    {"model": ["x"]},
    {"usage": {"input_tokens": "3", "output_tokens": 1}},
    {"usage": {"input_tokens": 3, "output_tokens": 2**40}},
    {"content": [{"type": "tool_use", "id": "t", "name": "f", "input": 5}]},
]


@pytest.mark.parametrize("fields", ANTHROPIC_BAD, ids=range(len(ANTHROPIC_BAD)))
def test_anthropic_mistyped_answers_are_a_502(
    provider: HostileProvider, sidecar: SidecarProcess, fields: dict[str, Any]
) -> None:
    provider.script(http(200, _anthropic_message(**fields)))
    assert_openai_error(chat(sidecar, "ant"), 502, "bad_response")
    provider.script(sse(_anthropic_events(start=fields)))
    if "content" in fields:
        assert chat(sidecar, "ant", stream=True).status == 200  # content of message_start is not read
    else:
        assert_openai_error(chat(sidecar, "ant", stream=True), 502, "bad_response")


def test_anthropic_mistyped_delta_mid_stream_ends_with_the_error_event(
    provider: HostileProvider, sidecar: SidecarProcess
) -> None:
    provider.script(paced_sse(_anthropic_events(delta={"type": "text_delta", "text": 5}), pause=0.02))
    assert_stream_ends_with_error(chat(sidecar, "ant", stream=True), "text_delta")


ODD_STATUSES = [
    b"201 Created",
    b"202 Accepted",
    b"203 Non-Authoritative",
    b"204 No Content",
    b"206 Partial",
    b"299 Whatever",
    b"301 Moved",
    b"302 Found",
    b"304 Not Modified",
    b"307 Temporary",
    b"308 Permanent",
    b"399 Odd",
    b"600 Past",
    b"999 Past",
]


def _status(line: bytes) -> Any:
    body = completion()
    return raw(
        b"HTTP/1.1 " + line + b"\r\nlocation: http://127.0.0.1:9/elsewhere\r\ncontent-type: "
        b"application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )


@pytest.mark.parametrize("line", ODD_STATUSES, ids=[s.split()[0].decode() for s in ODD_STATUSES])
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_odd_statuses_are_bad_responses_and_fall_back(
    provider: HostileProvider, sidecar: SidecarProcess, line: bytes, stream: bool
) -> None:
    provider.script(_status(line))
    assert_openai_error(chat(sidecar, stream=stream), 502, f"unexpected status {line.split()[0].decode()}")
    since = len(provider.received)
    provider.script(_status(line), sse(good_stream()) if stream else http(200, completion("fallback")))
    answer = chat(sidecar, "fb", stream=stream)
    assert answer.status == 200 and models_asked(provider, since) == ["m-upstream", "m-fallback"]


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\n\r\n" * 50,
    ],
    ids=["100-then-close", "101-upgrade", "101-bare", "103-flood"],
)
def test_interim_answers_with_no_final_one_are_a_502(
    provider: HostileProvider, sidecar: SidecarProcess, head: bytes
) -> None:
    provider.script(raw(head))
    started = time.monotonic()
    assert_openai_error(chat(sidecar), 502)
    assert time.monotonic() - started < 5  # not the total timeout
    since = len(provider.received)
    provider.script(raw(head), http(200, completion("fallback")))
    assert chat(sidecar, "fb").status == 200 and models_asked(provider, since) == ["m-upstream", "m-fallback"]


def test_the_sidecar_still_serves_after_all_of_it(provider: HostileProvider, sidecar: SidecarProcess) -> None:
    """Nothing above left the sidecar in a bad state: a plain answer, a stream, and /metrics."""
    provider.script(http(200, completion("still fine")), sse(good_stream()))
    assert chat(sidecar).json()["choices"][0]["message"]["content"] == "still fine"
    assert chat(sidecar, stream=True).events()[-1] == "[DONE]"
    assert metric_lines(sidecar, "modelway_requests_total")
    assert "Traceback" not in sidecar.logs().split("could not handle the answer")[0]
