"""Requests through a real sidecar process, traces read back from a real Jaeger's query API
and checked span by span: one plain, one streaming, one that falls back; content capture on,
so the redaction of credentials is checked where it matters (in the stored trace)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.fakes.server import DEFAULT_KEYS
from tests.harness.jaeger import JaegerServer
from tests.integration.sidecar import SidecarProcess
from tests.integration.snapshots import build_snapshot

pytestmark = pytest.mark.e2e

APP_PARENT = "00f067aa0ba902b7"
LEAKED_KEY = "sk-proj-Zx9vQ4mL2pT8rW6yB1nK"  # an app pasted a key into its prompt


@pytest.fixture(scope="module")
def traced_sidecar(
    jaeger: JaegerServer, fake_openai_process: Any, fake_anthropic_process: Any, fake_gemini_process: Any
) -> Iterator[tuple[SidecarProcess, str]]:
    service = f"modelway-proxy-e2e-{uuid.uuid4().hex[:8]}"
    snapshot = build_snapshot(
        fake_openai_process.base_url, fake_anthropic_process.base_url, fake_gemini_process.base_url
    )
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_http_endpoint,
        "OTEL_SERVICE_NAME": service,
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRICS_EXPORTER": "none",  # this Jaeger takes traces only
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
    }
    with SidecarProcess(snapshot, env=env) as process:
        yield process, service


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span["tags"]}


def _parent(span: dict[str, Any]) -> str:
    [ref] = span["references"]
    assert ref["refType"] == "CHILD_OF"
    return ref["spanID"]


def _traceparent(trace_id: str) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-{APP_PARENT}-01"}


def test_plain_stream_and_fallback_traces_in_jaeger(
    traced_sidecar: tuple[SidecarProcess, str],
    jaeger: JaegerServer,
    fake_openai: Any,
    fake_anthropic: Any,
    fake_gemini: Any,
) -> None:
    sidecar, service = traced_sidecar
    client = openai.OpenAI(base_url=sidecar.base_url + "/v1", api_key="placeholder", max_retries=0, timeout=20)
    plain_id, stream_id, fallback_id = (uuid.uuid4().hex for _ in range(3))

    answer = client.chat.completions.create(
        model="gpt",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": f"my key is {LEAKED_KEY}, say hi"},
        ],
        extra_headers=_traceparent(plain_id),
    )
    plain_sent = {k.lower(): v for k, v in fake_openai.requests()[-1]["headers"].items()}
    stream = client.chat.completions.create(
        model="gemini",
        messages=[{"role": "user", "content": "a b"}],
        stream=True,
        extra_headers=_traceparent(stream_id),
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed
    fake_openai.script([{"status": 503}])
    client.chat.completions.create(
        model="resilient", messages=[{"role": "user", "content": "x"}], extra_headers=_traceparent(fallback_id)
    )
    fallback_sent = {k.lower(): v for k, v in fake_anthropic.requests()[-1]["headers"].items()}

    def complete(traces: list[dict[str, Any]]) -> bool:
        counts = {t["traceID"]: len(t["spans"]) for t in traces}
        return counts.get(plain_id) == 2 and counts.get(stream_id) == 2 and counts.get(fallback_id) == 3

    traces = {t["traceID"]: t for t in jaeger.wait_for_traces(service, complete)}

    # --- plain: SERVER span continuing the app's trace, one CLIENT span under it
    trace = traces[plain_id]
    spans = {s["operationName"]: s for s in trace["spans"]}
    server, attempt = spans["chat gpt"], spans["chat gpt-4o"]
    assert {trace["processes"][s["processID"]]["serviceName"] for s in trace["spans"]} == {service}
    assert _parent(server) == APP_PARENT and _parent(attempt) == server["spanID"]
    tags, attempt_tags = _tags(server), _tags(attempt)
    assert tags["span.kind"] == "server" and attempt_tags["span.kind"] == "client"
    assert {
        k: tags[k]
        for k in (
            "gen_ai.operation.name",
            "gen_ai.request.model",
            "modelway.route",
            "modelway.rule",
            "modelway.backend",
        )
    } == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt",
        "modelway.route": "gpt",
        "modelway.rule": "default",
        "modelway.backend": "oai/gpt-4o",
    }
    usage = answer.usage
    assert tags["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert tags["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert tags["modelway.cost.usd"] == pytest.approx((usage.prompt_tokens * 2.5 + usage.completion_tokens * 10) / 1e6)
    assert {
        k: attempt_tags[k]
        for k in (
            "gen_ai.operation.name",
            "gen_ai.provider.name",
            "gen_ai.request.model",
            "gen_ai.response.model",
            "server.address",
            "modelway.backend",
            "http.response.status_code",
        )
    } == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o",
        "server.address": "127.0.0.1",
        "modelway.backend": "oai/gpt-4o",
        "http.response.status_code": 200,
    }
    assert plain_sent["traceparent"] == f"00-{plain_id}-{attempt['spanID']}-01"  # the provider continues it
    # content capture: on, semconv-shaped, credentials redacted
    assert json.loads(tags["gen_ai.system_instructions"]) == [{"type": "text", "content": "be brief"}]
    [message] = json.loads(tags["gen_ai.input.messages"])
    assert message["role"] == "user" and message["parts"][0]["content"] == "my key is [REDACTED], say hi"
    [output] = json.loads(tags["gen_ai.output.messages"])
    assert LEAKED_KEY in answer.choices[0].message.content  # the fake echoes the prompt: redacted on the span too
    assert output["parts"][0]["content"] == answer.choices[0].message.content.replace(LEAKED_KEY, "[REDACTED]")
    assert output["role"] == "assistant" and output["finish_reason"] == answer.choices[0].finish_reason
    everything = json.dumps(traces)
    assert LEAKED_KEY not in everything and DEFAULT_KEYS["openai"] not in everything
    assert DEFAULT_KEYS["anthropic"] not in everything and DEFAULT_KEYS["gemini"] not in everything

    # --- stream: time to first token on both spans, usage from the stream
    trace = traces[stream_id]
    spans = {s["operationName"]: s for s in trace["spans"]}
    server, attempt = spans["chat gemini"], spans["chat gemini-2.5-flash"]
    assert _parent(server) == APP_PARENT and _parent(attempt) == server["spanID"]
    assert 0 < _tags(attempt)["modelway.time_to_first_token"] <= _tags(server)["modelway.time_to_first_token"] + 1e-3
    assert _tags(attempt)["gen_ai.provider.name"] == "gcp.gemini"
    assert _tags(attempt)["gen_ai.usage.output_tokens"] == 3
    [output] = json.loads(_tags(server)["gen_ai.output.messages"])  # collected chunk by chunk
    assert output["parts"] == [{"type": "text", "content": streamed}]
    assert output["finish_reason"] == next(
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    )

    # --- fallback: two CLIENT spans, the failed one marked, a fallback event on the server span
    trace = traces[fallback_id]
    server = next(s for s in trace["spans"] if s["operationName"] == "chat resilient")
    first, second = sorted((s for s in trace["spans"] if s is not server), key=lambda s: s["startTime"])
    assert _parent(server) == APP_PARENT and _parent(first) == _parent(second) == server["spanID"]
    assert first["operationName"] == "chat gpt-4o" and second["operationName"] == "chat claude-sonnet-4-5"
    first_tags, second_tags = _tags(first), _tags(second)
    assert first_tags["error.type"] == "5xx" and first_tags["http.response.status_code"] == 503
    assert first_tags["otel.status_code"] == "ERROR" and first_tags["modelway.attempt"] == 1
    assert second_tags["gen_ai.provider.name"] == "anthropic" and second_tags["modelway.fallback"] is True
    assert "error.type" not in second_tags and second_tags["modelway.attempt"] == 2
    [event] = server["logs"]
    fields = {f["key"]: f["value"] for f in event["fields"]}
    assert fields == {
        "event": "modelway.fallback",
        "modelway.backend": "claude/claude-sonnet-4-5",
        "modelway.fallback.reason": "5xx",
    }
    assert _tags(server)["modelway.backend"] == "claude/claude-sonnet-4-5" and "error.type" not in _tags(server)
    assert fallback_sent["traceparent"] == f"00-{fallback_id}-{second['spanID']}-01"
