"""A real sidecar in front of a hostile provider: whatever the provider answers, the app gets its own
API's shape (502 for the provider's garbage, the next backend tried first), later requests are
unharmed, and memory, fds and the event loop stay as they were."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.request
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adversarial.answers_helpers import (
    Answer,
    assert_openai_error,
    assert_stream_ends_with_error,
    call,
    chunk,
    completion,
    fd_count,
    good_stream,
    health_probe,
    messages,
    paced_sse,
    peak_rss_kb,
    pid_of,
    rss_kb,
)
from tests.adversarial.conftest import HOSTILE_KEY
from tests.adversarial.hostile import HostileProvider, Received, http, raw, sse
from tests.integration.sidecar import SidecarProcess

MiB = 1024 * 1024


def _rule(*backends: str, fallbacks: tuple[str, ...] = ()) -> dict[str, Any]:
    def backend(key: str) -> dict[str, str]:
        provider, model = key.split("/")
        return {"provider": provider, "model": model}

    return {
        "name": "default",
        "backends": [backend(b) for b in backends],
        "fallbacks": [backend(b) for b in fallbacks],
        "retry": {"attempts": 1},
        "timeouts": {"totalSeconds": 10},
    }


def _snapshot(base_url: str) -> dict[str, Any]:
    """`m`: one OpenAI backend; `fb`: the same, falling back to a second model; `gem`, `ant`: Gemini and
    Anthropic; all of them the hostile provider."""
    return {
        "providers": [
            {"name": "oai", "type": "openai", "baseUrl": base_url + "/v1", "apiKey": HOSTILE_KEY},
            {"name": "gem", "type": "gemini", "baseUrl": base_url, "apiKey": HOSTILE_KEY},
            {"name": "ant", "type": "anthropic", "baseUrl": base_url, "apiKey": HOSTILE_KEY},
        ],
        "routes": [
            {"name": "m", "model": "m", "rules": [_rule("oai/m-upstream")]},
            {"name": "fb", "model": "fb", "rules": [_rule("oai/m-upstream", fallbacks=("oai/m-fallback",))]},
            {"name": "gem", "model": "gem", "rules": [_rule("gem/g-upstream")]},
            {"name": "ant", "model": "ant", "rules": [_rule("ant/a-upstream")]},
        ],
    }


@pytest.fixture(scope="module")
def provider() -> Iterator[HostileProvider]:
    with HostileProvider() as hostile:
        yield hostile


@pytest.fixture(scope="module")
def sidecar(provider: HostileProvider) -> Iterator[SidecarProcess]:
    with SidecarProcess(_snapshot(provider.base_url)) as process:
        yield process


@pytest.fixture(autouse=True)
def _clean_script(provider: HostileProvider) -> Iterator[None]:
    provider._script.clear()
    yield
    provider._script.clear()


def _chat(sidecar: SidecarProcess, model: str = "m", *, stream: bool = False) -> Answer:
    return call(
        sidecar,
        "/v1/chat/completions",
        {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream},
    )


def _models_asked(provider: HostileProvider, since: int) -> list[str]:
    return [json.loads(r.body).get("model", "") for r in provider.received[since:]]


def _metric_lines(sidecar: SidecarProcess, name: str) -> list[str]:
    with urllib.request.urlopen(sidecar.admin_url + "/metrics", timeout=5) as resp:
        assert resp.status == 200
        return [line for line in resp.read().decode().splitlines() if line.startswith(name)]


# --- 1. one bad answer must not break the route ---------------------------------------------


def test_string_token_counts_are_a_bad_answer_and_the_route_keeps_working(
    provider: HostileProvider, sidecar: SidecarProcess
) -> None:
    """The first usage a route's metrics ever see has strings for counts: that answer is a 502 naming the
    field, and every later good answer on the route is a 200 (it was a 500, for good)."""
    bad = completion(usage={"prompt_tokens": "11", "completion_tokens": "2", "total_tokens": "13"})
    provider.script(http(200, bad))
    assert_openai_error(_chat(sidecar), 502, "prompt_tokens", "bad_response")
    for _ in range(3):
        provider.script(http(200, completion("again")))
        answer = _chat(sidecar)
        assert answer.status == 200 and answer.json()["choices"][0]["message"]["content"] == "again"
    provider.script(sse(good_stream()))
    assert _chat(sidecar, stream=True).events()[-1] == "[DONE]"
    tokens = _metric_lines(sidecar, "gen_ai_client_token_usage_sum")
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
    answer = _chat(sidecar, "fb")
    assert answer.status == 200 and answer.json()["choices"][0]["message"]["content"] == "from the fallback"
    assert _models_asked(provider, since) == ["m-upstream", "m-fallback"]


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
        assert_openai_error(_chat(sidecar), 502, "bad_response")
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
    answer = _chat(sidecar, stream=True)
    assert json.loads(answer.events()[0])["choices"][0]["delta"]["content"] == "partial"
    assert_stream_ends_with_error(answer)


@pytest.mark.parametrize("odd", ODD_CHUNKS, ids=range(len(ODD_CHUNKS)))
def test_odd_openai_stream_event_before_content_falls_back(
    provider: HostileProvider, sidecar: SidecarProcess, odd: bytes
) -> None:
    since = len(provider.received)
    provider.script(sse([odd, *good_stream()]), sse(good_stream()))
    answer = _chat(sidecar, "fb", stream=True)
    assert answer.status == 200 and answer.events()[-1] == "[DONE]"
    assert _models_asked(provider, since) == ["m-upstream", "m-fallback"]


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
    assert_openai_error(_chat(sidecar, "gem", stream=stream), 502, "bad_response")
    provider.script(http(200, _gemini()))
    assert _chat(sidecar, "gem").status == 200


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
    assert_openai_error(_chat(sidecar, "ant"), 502, "bad_response")
    provider.script(sse(_anthropic_events(start=fields)))
    if "content" in fields:
        assert _chat(sidecar, "ant", stream=True).status == 200  # content of message_start is not read
    else:
        assert_openai_error(_chat(sidecar, "ant", stream=True), 502, "bad_response")


def test_anthropic_mistyped_delta_mid_stream_ends_with_the_error_event(
    provider: HostileProvider, sidecar: SidecarProcess
) -> None:
    provider.script(paced_sse(_anthropic_events(delta={"type": "text_delta", "text": 5}), pause=0.02))
    assert_stream_ends_with_error(_chat(sidecar, "ant", stream=True), "text_delta")


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
    assert_openai_error(_chat(sidecar, stream=stream), 502, f"unexpected status {line.split()[0].decode()}")
    since = len(provider.received)
    provider.script(_status(line), sse(good_stream()) if stream else http(200, completion("fallback")))
    answer = _chat(sidecar, "fb", stream=stream)
    assert answer.status == 200 and _models_asked(provider, since) == ["m-upstream", "m-fallback"]


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
    assert_openai_error(_chat(sidecar), 502)
    assert time.monotonic() - started < 5  # not the total timeout
    since = len(provider.received)
    provider.script(raw(head), http(200, completion("fallback")))
    assert _chat(sidecar, "fb").status == 200 and _models_asked(provider, since) == ["m-upstream", "m-fallback"]


def test_the_sidecar_still_serves_after_all_of_it(provider: HostileProvider, sidecar: SidecarProcess) -> None:
    """Nothing above left the sidecar in a bad state: a plain answer, a stream, and /metrics."""
    provider.script(http(200, completion("still fine")), sse(good_stream()))
    assert _chat(sidecar).json()["choices"][0]["message"]["content"] == "still fine"
    assert _chat(sidecar, stream=True).events()[-1] == "[DONE]"
    assert _metric_lines(sidecar, "modelway_requests_total")
    assert "Traceback" not in sidecar.logs().split("could not handle the answer")[0]


# --- 6, 7. answers of unbounded size, and heads that would take quadratic time ----------------


def _bounded(sidecar: SidecarProcess, run: Any, *, peak_growth_mib: float) -> Answer:
    """Runs `run()` (the app's call) while /healthz is probed: the loop answers within 250 ms
    throughout, the peak RSS grows by less than `peak_growth_mib` and no fd is left behind. (A loop
    held by an inflating bomb or a quadratic parse is held for seconds; the margin is for a busy
    machine's scheduling, which alone has reached 0.2 s on 2 cores.)"""
    pid = pid_of(sidecar)
    fds, peak = fd_count(pid), peak_rss_kb(pid)
    with health_probe(sidecar) as probe:
        time.sleep(0.05)
        answer = run()
    assert probe.latencies and max(probe.latencies) < 0.25, sorted(probe.latencies)[-3:]
    growth = (peak_rss_kb(pid) - peak) / 1024
    assert growth < peak_growth_mib, f"peak RSS grew by {growth:.0f} MiB (now {rss_kb(pid) // 1024} MiB)"
    time.sleep(0.1)  # the closed connection's fd is released on the loop's next turn
    assert fd_count(pid) <= fds, (fds, fd_count(pid))
    return answer


def _big_body(size: int, *, chunked: bool) -> Any:
    async def answer(_: Received, writer: Any) -> None:
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        piece = b"x" * MiB
        if chunked:
            writer.write(head + b"transfer-encoding: chunked\r\n\r\n")
            for _ in range(size // MiB):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(head + b"content-length: %d\r\n\r\n" % size)
            for _ in range(size // MiB):
                writer.write(piece)
                await writer.drain()
        await writer.drain()

    return answer


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_100_mb_answer_is_a_502_without_buffering_it(
    provider: HostileProvider, sidecar: SidecarProcess, chunked: bool
) -> None:
    provider.script(_big_body(100 * MiB, chunked=chunked))
    answer = _bounded(sidecar, lambda: _chat(sidecar), peak_growth_mib=48)
    assert_openai_error(answer, 502, "larger than", str(32 * MiB))


def _gzip_bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MiB)
    return b"".join([compressor.compress(zeros) for _ in range(size // MiB)] + [compressor.flush()])


BOMB = _gzip_bomb(512 * MiB)  # ~500 KB that inflate to 512 MiB


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_a_gzip_bomb_is_a_502_without_inflating_it(
    provider: HostileProvider, sidecar: SidecarProcess, stream: bool
) -> None:
    content_type = b"text/event-stream" if stream else b"application/json"
    provider.script(
        raw(
            b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s"
            % (content_type, len(BOMB), BOMB)
        )
    )
    answer = _bounded(sidecar, lambda: _chat(sidecar, stream=stream), peak_growth_mib=48)
    # a stream of zeros has no event boundary: the event limit comes first
    assert_openai_error(answer, 502, "a stream event is longer than" if stream else "decompresses to more than")


def test_a_gzip_bomb_of_events_ends_the_stream_at_the_decompressed_limit(
    provider: HostileProvider, sidecar: SidecarProcess
) -> None:
    """Well-formed content events that inflate without end: relayed up to the limit, then the error event."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    events = chunk({"content": "x" * 4000}) * 256  # ~1 MiB of events, compressing ~1000:1
    bomb = b"".join([compressor.compress(events) for _ in range(100)] + [compressor.flush()])
    provider.script(
        raw(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: gzip\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(bomb), bomb)
        )
    )
    answer = _bounded(sidecar, lambda: _chat(sidecar, stream=True), peak_growth_mib=48)
    assert_stream_ends_with_error(answer, "decompresses to more than")
    assert 30 * MiB < len(answer.raw) < 34 * MiB


def test_endless_events_without_content_are_a_502(provider: HostileProvider, sidecar: SidecarProcess) -> None:
    """Nothing to relay yet, so the sidecar holds them: not without end."""
    provider.script(sse([b'data: {"choices": []}\n\n' * 1000] * 10 + good_stream()), http(200, completion()))
    answer = _bounded(sidecar, lambda: _chat(sidecar, stream=True), peak_growth_mib=24)
    assert_openai_error(answer, 502, "without content")


def test_a_gzipped_answer_within_the_limits_is_read(provider: HostileProvider, sidecar: SidecarProcess) -> None:
    body = zlib.compress(completion("zipped"), 6, wbits=31)
    provider.script(
        raw(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
    )
    assert _chat(sidecar).json()["choices"][0]["message"]["content"] == "zipped"


def _long_line(size: int, *, after_content: bool) -> Any:
    async def answer(_: Received, writer: Any) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")  # until close
        if after_content:
            writer.write(chunk({"role": "assistant", "content": "partial"}))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b'data: {"choices": [{"index": 0, "delta": {"content": "')
        piece = b"a" * (64 * 1024)
        for _ in range(size // len(piece)):
            writer.write(piece)
            await writer.drain()

    return answer


@pytest.mark.parametrize("after_content", [False, True], ids=["before-content", "mid-stream"])
def test_a_50_mb_sse_line_is_refused_at_the_event_limit(
    provider: HostileProvider, sidecar: SidecarProcess, after_content: bool
) -> None:
    provider.script(_long_line(50 * MiB, after_content=after_content))
    started = time.monotonic()
    answer = _bounded(sidecar, lambda: _chat(sidecar, stream=True), peak_growth_mib=24)
    assert time.monotonic() - started < 5
    if after_content:
        assert_stream_ends_with_error(answer, "longer than 1048576 bytes")
    else:
        assert_openai_error(answer, 502, "longer than 1048576 bytes")


def test_a_long_stream_of_small_events_is_relayed_whole(provider: HostileProvider, sidecar: SidecarProcess) -> None:
    """The event limit is per event: 5 MB of stream in small events, sent a few bytes at a time."""
    events = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": "x" * 500})] * 10_000
    stream = b"".join([*events, chunk(finish="stop"), b"data: [DONE]\n\n"])
    provider.script(sse([stream[i : i + 7_777] for i in range(0, len(stream), 7_777)]))
    answer = _chat(sidecar, stream=True)
    assert answer.events()[-1] == "[DONE]"
    assert (
        sum(
            len(json.loads(e)["choices"][0]["delta"].get("content") or "")
            for e in answer.events()[:-1]
            if json.loads(e)["choices"]
        )
        == 5_000_000
    )


def _headers(count: int, *, value: bytes = b"1") -> Any:
    body = completion()
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    return raw(head + b"".join(b"x-repeated: %s\r\n" % value for _ in range(count)) + b"\r\n" + body)


def test_20000_repeated_headers_are_a_502_at_once(provider: HostileProvider, sidecar: SidecarProcess) -> None:
    provider.script(_headers(20_000))
    started = time.monotonic()
    answer = _bounded(sidecar, lambda: _chat(sidecar), peak_growth_mib=16)
    assert time.monotonic() - started < 1
    assert_openai_error(answer, 502, "more than 100 headers")


def test_one_huge_header_is_a_502(provider: HostileProvider, sidecar: SidecarProcess) -> None:
    provider.script(_headers(1, value=b"v" * (8 * MiB)))
    answer = _bounded(sidecar, lambda: _chat(sidecar), peak_growth_mib=16)
    assert_openai_error(answer, 502, "head is larger than 65536 bytes")


def test_answers_with_many_but_not_too_many_headers_are_read(
    provider: HostileProvider, sidecar: SidecarProcess
) -> None:
    provider.script(_headers(90, value=b"v" * 500))
    assert _chat(sidecar).status == 200
    since = len(provider.received)
    provider.script(_headers(20_000), http(200, completion("fallback")))
    assert _chat(sidecar, "fb").status == 200 and _models_asked(provider, since) == ["m-upstream", "m-fallback"]


def test_an_error_answer_of_100_mb_is_read_only_for_its_message(
    provider: HostileProvider, sidecar: SidecarProcess
) -> None:
    async def answer(_: Received, writer: Any) -> None:
        writer.write(b"HTTP/1.1 500 Oops\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % (100 * MiB))
        writer.write(b'{"error": {"message": "')
        for _ in range(100):
            writer.write(b"x" * MiB)
            await writer.drain()

    provider.script(answer)
    assert_openai_error(_bounded(sidecar, lambda: _chat(sidecar), peak_growth_mib=16), 502, "5xx 500")
