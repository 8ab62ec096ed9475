"""Spans per the GenAI semantic conventions, from a sidecar app run in-process
with an in-memory exporter (the sidecar's HTTP stack and the fakes are real)."""

from __future__ import annotations

import json

import openai
import pytest
from opentelemetry.trace import SpanKind

from proxy.runtime import Runtime, RuntimeHolder
from proxy.server import ServerSettings, build_app
from proxy.snapshot import parse_snapshot
from proxy.telemetry.facade import Telemetry
from tests.integration.in_process import recorded_spans, serving

APP_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
APP_PARENT = "00f067aa0ba902b7"


@pytest.fixture
async def traced(snapshot_data):
    exporter, provider = recorded_spans()
    holder = RuntimeHolder()
    holder.swap(Runtime.build(parse_snapshot(snapshot_data)))
    app = build_app(holder=holder, telemetry=Telemetry(tracer=provider.get_tracer("test")), settings=ServerSettings())
    async with serving(app, handler_cancellation=True) as client:
        yield client, exporter


def _by_kind(exporter, kind):
    return [s for s in exporter.get_finished_spans() if s.kind == kind]


async def test_server_and_client_spans_continue_the_apps_trace(traced, fake_openai):
    client, exporter = traced
    await client.chat.completions.create(
        model="gpt",
        messages=[{"role": "user", "content": "secret prompt words"}],
        max_tokens=50,
        extra_headers={"traceparent": f"00-{APP_TRACE}-{APP_PARENT}-01"},
    )
    [server] = _by_kind(exporter, SpanKind.SERVER)
    [attempt] = _by_kind(exporter, SpanKind.CLIENT)
    assert server.name == "chat gpt" and attempt.name == "chat gpt-4o"
    assert format(server.context.trace_id, "032x") == APP_TRACE
    assert format(server.parent.span_id, "016x") == APP_PARENT
    assert attempt.parent.span_id == server.context.span_id
    assert server.attributes["modelway.route"] == "gpt" and server.attributes["modelway.rule"] == "default"
    assert server.attributes["modelway.backend"] == "oai/gpt-4o"
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 4,
        "server.address": "127.0.0.1",
        "modelway.backend": "oai/gpt-4o",
    }
    assert {k: attempt.attributes[k] for k in expected} == expected
    # the provider saw the attempt span as its parent, in the app's trace
    sent = {k.lower(): v for k, v in fake_openai.requests()[-1]["headers"].items()}
    assert sent["traceparent"] == f"00-{APP_TRACE}-{format(attempt.context.span_id, '016x')}-01"
    # no prompt or completion text in any span
    dumped = json.dumps([dict(s.attributes) for s in exporter.get_finished_spans()])
    assert "secret" not in dumped and "echo" not in dumped


async def test_fallback_is_an_event_and_each_attempt_a_span(traced, fake_openai):
    client, exporter = traced
    fake_openai.script([{"status": 503}])
    await client.chat.completions.create(model="resilient", messages=[{"role": "user", "content": "x"}])
    [server] = _by_kind(exporter, SpanKind.SERVER)
    first, second = sorted(_by_kind(exporter, SpanKind.CLIENT), key=lambda s: s.start_time)
    assert first.attributes["error.type"] == "5xx" and first.attributes["http.response.status_code"] == 503
    assert second.attributes["gen_ai.provider.name"] == "anthropic" and "error.type" not in second.attributes
    assert second.attributes["modelway.fallback"] is True
    [event] = [e for e in server.events if e.name == "modelway.fallback"]
    assert event.attributes["modelway.backend"] == "claude/claude-sonnet-4-5"


async def test_streams_record_usage_and_time_to_first_token(traced):
    client, exporter = traced
    stream = await client.chat.completions.create(
        model="gemini", messages=[{"role": "user", "content": "a b"}], stream=True
    )
    async for _ in stream:
        pass
    [attempt] = _by_kind(exporter, SpanKind.CLIENT)
    [server] = _by_kind(exporter, SpanKind.SERVER)
    assert attempt.attributes["gen_ai.usage.output_tokens"] == 3
    assert attempt.attributes["gen_ai.provider.name"] == "gcp.gemini"
    assert attempt.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attempt.attributes["http.response.status_code"] == 200
    assert attempt.attributes["modelway.time_to_first_token"] > 0
    assert server.attributes["modelway.time_to_first_token"] == attempt.attributes["modelway.time_to_first_token"]
    assert server.attributes["gen_ai.usage.output_tokens"] == 3


async def test_failed_request_marks_the_server_span(traced, fake_openai):
    client, exporter = traced
    fake_openai.script([{"status": 500}, {"status": 500}])
    with pytest.raises(openai.APIStatusError):
        await client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}])
    [server] = _by_kind(exporter, SpanKind.SERVER)
    assert server.attributes["error.type"] == "all_backends_failed"
