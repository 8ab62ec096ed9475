"""The access log of a real sidecar process: one JSON line per request on stdout, with what an
operator needs to find a call (route, backend, status, error type, tokens, cost, time to first
token, trace id), never the prompt or a key; off and sampled by flag."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.fakes.server import DEFAULT_KEYS
from tests.integration.sidecar import SidecarProcess

APP_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = {"traceparent": f"00-{APP_TRACE}-00f067aa0ba902b7-01"}
CANARY = "zebra-canary-words"  # prompt text that must never reach the log
FIELDS = {
    "time",
    "workload",
    "operation",
    "model",
    "stream",
    "route",
    "rule",
    "decision",
    "backend",
    "status",
    "error_type",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_usd",
    "duration_ms",
    "ttft_ms",
    "data_class",
    "attempts",
    "trace_id",
    "redacted",  # counts by kind of what was masked (null: nothing)
}
# Traced (so the lines carry the trace id), to a collector that is not there.
TRACED = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_TIMEOUT": "200"}


def _sidecar(snapshot: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> Iterator[SidecarProcess]:
    with SidecarProcess(snapshot, extra_args=list(args), env=env) as process:
        yield process


@pytest.fixture(scope="module")
def logged(snapshot_data: dict[str, Any]) -> Iterator[SidecarProcess]:
    yield from _sidecar(snapshot_data, env=TRACED)


@pytest.fixture(scope="module")
def unlogged(snapshot_data: dict[str, Any]) -> Iterator[SidecarProcess]:
    yield from _sidecar(snapshot_data, "--access-log=off")


@pytest.fixture(scope="module")
def failures_only(snapshot_data: dict[str, Any]) -> Iterator[SidecarProcess]:
    yield from _sidecar(snapshot_data, "--access-log-sample=0")


def _access_lines(sidecar: SidecarProcess) -> list[dict[str, Any]]:
    lines = []
    for line in sidecar.logs().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)  # every line that looks like JSON must be JSON
            lines.append(entry)
    return lines


def _new_lines(sidecar: SidecarProcess, before: int, *, expect: int) -> list[dict[str, Any]]:
    """The access lines after the first `before`, once `expect` of them are there (a stream's line
    can follow its last byte by a moment); then a little longer, so a second line would be seen."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(_access_lines(sidecar)) < before + expect:
        time.sleep(0.02)
    time.sleep(0.3)
    return _access_lines(sidecar)[before:]


def _client(sidecar: SidecarProcess) -> openai.OpenAI:
    return sidecar.openai_client()


def _chat(sidecar: SidecarProcess, **kwargs: Any) -> Any:
    return _client(sidecar).chat.completions.create(
        messages=[{"role": "user", "content": f"please repeat {CANARY}"}], extra_headers=TRACEPARENT, **kwargs
    )


def test_an_answered_request_is_one_line_with_its_route_backend_tokens_cost_and_trace(logged: SidecarProcess) -> None:
    before = len(_access_lines(logged))
    usage = _chat(logged, model="gpt").usage
    [line] = _new_lines(logged, before, expect=1)
    assert set(line) == FIELDS
    assert {k: line[k] for k in ("operation", "model", "stream", "route", "rule", "decision", "backend")} == {
        "operation": "chat",
        "model": "gpt",
        "stream": False,
        "route": "gpt",
        "rule": "default",
        "decision": "allow",
        "backend": "oai/gpt-4o",
    }
    assert line["status"] == 200 and line["error_type"] is None and line["attempts"] == 1
    assert (line["input_tokens"], line["output_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    # oai prices gpt-4o at 2.5 / 10 USD per million tokens
    assert line["cost_usd"] == pytest.approx((usage.prompt_tokens * 2.5 + usage.completion_tokens * 10) / 1e6)
    assert line["trace_id"] == APP_TRACE and line["data_class"] == "internal"
    assert line["duration_ms"] > 0 and line["ttft_ms"] is None
    assert abs(time.time() - _epoch(line["time"])) < 30


def test_a_failed_request_carries_its_error_type_and_attempts(
    logged: SidecarProcess, fake_openai: Any, fake_anthropic: Any
) -> None:
    fake_openai.script([{"status": 500}])
    fake_anthropic.script([{"status": 500}])
    before = len(_access_lines(logged))
    with pytest.raises(openai.APIStatusError):
        _chat(logged, model="doomed")
    [line] = _new_lines(logged, before, expect=1)
    assert (line["route"], line["status"], line["error_type"]) == ("doomed", 502, "all_backends_failed")
    assert line["attempts"] == 2 and line["backend"] is None and line["cost_usd"] is None


def test_a_request_no_route_takes_is_logged_too(logged: SidecarProcess) -> None:
    before = len(_access_lines(logged))
    with pytest.raises(openai.NotFoundError):
        _chat(logged, model="no-such-model")
    [line] = _new_lines(logged, before, expect=1)
    assert (line["model"], line["route"], line["status"], line["attempts"]) == ("no-such-model", None, 404, 0)
    assert line["error_type"] == "model_not_found"


def test_a_stream_carries_its_time_to_first_token(logged: SidecarProcess) -> None:
    before = len(_access_lines(logged))
    stream = _chat(logged, model="gpt", stream=True, stream_options={"include_usage": True})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    [line] = _new_lines(logged, before, expect=1)
    assert line["stream"] is True and line["status"] == 200 and line["error_type"] is None
    assert 0 < line["ttft_ms"] <= line["duration_ms"]
    assert line["input_tokens"] is not None and line["output_tokens"] is not None


def test_no_prompt_text_and_no_key_in_the_access_log(logged: SidecarProcess) -> None:
    key_shaped = "sk-live-" + "a1b2c3d4e5f6" * 3
    before = len(_access_lines(logged))
    _chat(logged, model="gpt")
    with pytest.raises(openai.NotFoundError):
        _chat(logged, model=key_shaped)  # a model no route serves is the app's text: scrubbed
    lines = _new_lines(logged, before, expect=2)
    assert len(lines) == 2
    text = json.dumps(lines)
    assert CANARY not in text and "please repeat" not in text
    assert key_shaped not in text
    assert not [key for key in DEFAULT_KEYS.values() if key in text]


def test_off_writes_no_line(unlogged: SidecarProcess) -> None:
    _chat(unlogged, model="gpt")
    with pytest.raises(openai.NotFoundError):
        _chat(unlogged, model="no-such-model")
    time.sleep(0.3)
    assert _access_lines(unlogged) == []


def test_sampling_keeps_every_failure(failures_only: SidecarProcess) -> None:
    for _ in range(3):
        _chat(failures_only, model="gpt")
    with pytest.raises(openai.NotFoundError):
        _chat(failures_only, model="no-such-model")
    lines = _new_lines(failures_only, 0, expect=1)
    assert [(line["status"], line["error_type"]) for line in lines] == [(404, "model_not_found")]


def test_a_bad_sample_fraction_is_refused_at_start() -> None:
    sidecar = SidecarProcess({"providers": [], "routes": []}, extra_args=["--access-log-sample=2"])
    with pytest.raises(RuntimeError, match="access-log-sample"):
        sidecar.start()


def _epoch(stamp: str) -> float:
    assert stamp.endswith("Z") and len(stamp) == len("2026-01-01T00:00:00.000Z"), stamp
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone + int(stamp[20:23]) / 1000


def _raw_post(sidecar: SidecarProcess, body: bytes) -> int:
    request = urllib.request.Request(
        sidecar.base_url + "/v1/chat/completions", data=body, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_request_that_is_not_json_is_logged_without_its_body(logged: SidecarProcess) -> None:
    before = len(_access_lines(logged))
    assert _raw_post(logged, b"{not json " + CANARY.encode()) == 400
    [line] = _new_lines(logged, before, expect=1)
    assert (line["status"], line["route"], line["model"]) == (400, None, None)
    assert CANARY not in json.dumps(line)


def test_a_streamed_responses_call_is_accounted_like_a_chat(logged: SidecarProcess) -> None:
    before = len(_access_lines(logged))
    events = list(
        _client(logged).responses.create(
            model="gpt", input=f"please repeat {CANARY}", stream=True, extra_headers=TRACEPARENT
        )
    )
    usage = events[-1].response.usage
    [line] = _new_lines(logged, before, expect=1)
    assert (line["operation"], line["route"], line["backend"], line["stream"]) == ("chat", "gpt", "oai/gpt-4o", True)
    assert line["status"] == 200 and line["ttft_ms"] is not None
    assert (line["input_tokens"], line["output_tokens"]) == (usage.input_tokens, usage.output_tokens)
    # oai prices gpt-4o at 2.5 / 10 USD per million tokens
    assert line["cost_usd"] == pytest.approx((usage.input_tokens * 2.5 + usage.output_tokens * 10) / 1e6)
    assert CANARY not in json.dumps(line)


def test_count_tokens_is_one_line_that_costs_nothing(logged: SidecarProcess) -> None:
    before = len(_access_lines(logged))
    client = anthropic.Anthropic(base_url=logged.base_url, api_key="placeholder", max_retries=0, timeout=20)
    client.messages.count_tokens(model="claude", messages=[{"role": "user", "content": f"count {CANARY}"}])
    [line] = _new_lines(logged, before, expect=1)
    assert (line["operation"], line["route"], line["status"]) == ("count_tokens", "claude", 200)
    assert (line["input_tokens"], line["output_tokens"]) == (0, 0) and not line["cost_usd"]  # (claude: no price)
