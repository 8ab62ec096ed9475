"""One outcome per request, read by every signal: the server span, the metrics and the access line
of a request tell the same story; and the admit stage is a seam where a refusal turns a request
away before any provider call. The sidecar app runs in-process (its HTTP stack and the fakes are
real) with an in-memory span exporter."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import openai
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from proxy.errors import ApiError
from proxy.policy.classify import Classification
from proxy.request.admit import Admission
from proxy.routing.table import Plan
from proxy.runtime import Runtime, RuntimeHolder
from proxy.server import ServerSettings, build_app
from proxy.snapshot import parse_snapshot
from proxy.telemetry.facade import Telemetry
from proxy.telemetry.metrics import Registry, render_prometheus
from proxy.telemetry.sidecar_metrics import SidecarMetrics


class _Closed(Admission):
    """What limits will do: turn a request away before it goes out."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str]] = []

    def admit(self, *, runtime: Runtime, plan: Plan, classification: Classification, **request: Any) -> None:
        self.asked.append((plan.route.name, classification.data_class))
        if plan.route.name == "closed":
            raise ApiError(429, "the route's budget is spent", "rate_limit_error", "budget_exhausted")


@pytest.fixture
async def sidecar(snapshot_data: dict[str, Any]) -> Any:
    exporter, provider, registry = InMemorySpanExporter(), TracerProvider(), Registry()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    data = {**snapshot_data, "routes": [*snapshot_data["routes"], {**_route(snapshot_data, "gpt"), "model": "closed"}]}
    data["routes"][-1]["name"] = "closed"
    holder = RuntimeHolder()
    holder.swap(Runtime.build(parse_snapshot(data)))
    telemetry = Telemetry(tracer=provider.get_tracer("test"), metrics=SidecarMetrics(registry=registry))
    admission = _Closed()
    app = build_app(holder=holder, telemetry=telemetry, settings=ServerSettings(), admission=admission)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{runner.addresses[0][1]}/v1", api_key="x", max_retries=0)
    yield client, exporter, registry, admission
    await client.close()
    await runner.cleanup()


def _route(snapshot: dict[str, Any], model: str) -> dict[str, Any]:
    [route] = [r for r in snapshot["routes"] if r["model"] == model]
    return dict(route)


def _access(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "modelway.access"]


def _sample(text: str, name: str, **labels: str) -> float:
    found = []
    for line in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if m and m.group(1) == name:
            have = dict(re.findall(r'([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                found.append(float(m.group(3)))
    [value] = found
    return value


async def test_span_metrics_and_access_line_of_a_fallback_agree(
    sidecar: Any, fake_openai: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, exporter, registry, _ = sidecar
    fake_openai.script([{"status": 503}])
    with caplog.at_level(logging.INFO, "modelway.access"):
        answer = await client.chat.completions.create(model="resilient", messages=[{"role": "user", "content": "x"}])
    [line] = _access(caplog)
    [server] = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    text = render_prometheus(registry)
    claude = {"modelway_route": "resilient", "modelway_backend": "claude/claude-sonnet-4-5"}

    assert line["backend"] == server.attributes["modelway.backend"] == "claude/claude-sonnet-4-5"
    assert line["input_tokens"] == server.attributes["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert line["output_tokens"] == server.attributes["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert line["trace_id"] == format(server.context.trace_id, "032x")
    assert line["attempts"] == 2
    assert _sample(text, "modelway_fallbacks_total", modelway_fallback_reason="5xx", **claude) == 1
    assert _sample(text, "gen_ai_client_operation_duration_seconds_count", error_type="5xx") == 1
    assert _sample(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", **claude) == line["input_tokens"]
    requests = _sample(text, "modelway_requests_total", modelway_outcome="ok", **claude)
    assert requests == 1 and line["status"] == 200 and line["error_type"] is None
    seconds = _sample(text, "modelway_request_duration_seconds_sum", modelway_route="resilient")
    assert seconds * 1000 == pytest.approx(line["duration_ms"], abs=0.001)


async def test_the_admit_stage_can_turn_a_request_away_before_any_provider_call(
    sidecar: Any, fake_openai: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, exporter, registry, admission = sidecar
    sent = len(fake_openai.requests())
    with caplog.at_level(logging.INFO, "modelway.access"), pytest.raises(openai.RateLimitError) as raised:
        await client.chat.completions.create(model="closed", messages=[{"role": "user", "content": "x"}])
    assert raised.value.body["code"] == "budget_exhausted"  # type: ignore[index]
    assert len(fake_openai.requests()) == sent  # nothing went out
    assert admission.asked == [("closed", "internal")]
    [line] = _access(caplog)
    assert (line["route"], line["status"], line["error_type"], line["attempts"]) == (
        "closed",
        429,
        "budget_exhausted",
        0,
    )
    assert not [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    text = render_prometheus(registry)
    assert _sample(text, "modelway_requests_total", modelway_route="closed", error_type="budget_exhausted") == 1
