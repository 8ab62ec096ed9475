"""Spans of masked requests, from a sidecar app run in-process with an in-memory exporter (the
sidecar's HTTP stack and the fake provider are real): counts by kind on the server span, and the
captured content (when enabled) masked by the same code, never the values."""

from __future__ import annotations

import json

import pytest
from opentelemetry.trace import SpanKind

from proxy.runtime import Runtime, RuntimeHolder
from proxy.server import ServerSettings, build_app
from proxy.snapshot import parse_snapshot
from proxy.telemetry.facade import Telemetry
from tests.integration.in_process import recorded_spans, serving
from tests.integration.test_redaction_sidecar import EMAIL, PHONE, POLICY, PROMPT, VALUES, redaction_snapshot


@pytest.fixture
async def traced(fake_openai_process):
    exporter, provider = recorded_spans()
    holder = RuntimeHolder()
    holder.swap(Runtime.build(parse_snapshot(redaction_snapshot(fake_openai_process.base_url))))
    telemetry = Telemetry(tracer=provider.get_tracer("test"), capture_content=True)
    app = build_app(holder=holder, telemetry=telemetry, settings=ServerSettings())
    async with serving(app, handler_cancellation=True) as client:
        yield client, exporter


def _server_span(exporter):
    [server] = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    return server


async def test_the_server_span_counts_what_was_masked_and_captures_only_placeholders(traced, fake_openai):
    client, exporter = traced
    answer = await client.chat.completions.create(model="masked", messages=[{"role": "user", "content": PROMPT}])
    assert answer.choices[0].message.content == "echo: " + PROMPT  # the app got its values
    server = _server_span(exporter)
    assert server.attributes["modelway.redaction.count.email"] == 2
    assert server.attributes["modelway.redaction.count.phone"] == 1
    assert server.attributes["modelway.redaction.count.employee_id"] == 1
    assert server.attributes["modelway.redaction.policy"] == POLICY
    captured = server.attributes["gen_ai.input.messages"] + server.attributes["gen_ai.output.messages"]
    assert "<EMAIL_1>" in captured and "<PHONE_1>" in captured
    everything = json.dumps({k: str(v) for s in exporter.get_finished_spans() for k, v in s.attributes.items()})
    assert not any(value in everything for value in VALUES)


async def test_a_streamed_answer_is_captured_as_the_provider_sent_it(traced, fake_openai):
    client, exporter = traced
    stream = await client.chat.completions.create(
        model="masked", messages=[{"role": "user", "content": f"mail {EMAIL} or ring {PHONE}"}], stream=True
    )
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert text == f"echo: mail {EMAIL} or ring {PHONE}"
    server = _server_span(exporter)
    output = server.attributes["gen_ai.output.messages"]
    assert "<EMAIL_1>" in output and EMAIL not in output and PHONE not in output
