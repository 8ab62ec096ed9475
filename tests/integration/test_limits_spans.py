"""What a trace shows of limits: the server span's `modelway.limit.refused` event naming the limit, and
the fallback event with reason `capacity` when a provider's quota is spent. The sidecar app runs
in-process (its HTTP stack and the fakes are real) with an in-memory span exporter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from proxy.policy.audit import AuditLog
from proxy.request.admit import Admission
from proxy.runtime import Runtime, RuntimeHolder
from proxy.server import ServerSettings, build_app
from proxy.snapshot import parse_snapshot
from proxy.telemetry.facade import Telemetry
from proxy.telemetry.metrics import Registry
from proxy.telemetry.sidecar_metrics import SidecarMetrics
from tests.integration.in_process import recorded_spans, serving
from tests.integration.limits_sidecar import POLICY, capacity, limit, limited_snapshot

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def app(fake_openai: Any, fake_anthropic: Any) -> AsyncIterator[tuple[openai.AsyncOpenAI, InMemorySpanExporter]]:
    exporter, provider = recorded_spans()
    snapshot = limited_snapshot(
        fake_openai.base_url,
        fake_anthropic.base_url,
        limits=[limit("rpm", requestsPerMinute=1, routes=["gpt"])],
        oai_capacity=[capacity("gpt-4o", requestsPerMinute=1)],
    )
    holder = RuntimeHolder()
    holder.swap(Runtime.build(parse_snapshot(snapshot)))
    telemetry = Telemetry(tracer=provider.get_tracer("test"), metrics=SidecarMetrics(registry=Registry()))
    admission = Admission(telemetry=telemetry, audit=AuditLog())
    app = build_app(holder=holder, telemetry=telemetry, settings=ServerSettings(), admission=admission)
    async with serving(app) as client:
        yield client, exporter


def _server_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]


async def test_a_refusal_is_an_event_on_the_server_span_naming_the_limit(app: Any) -> None:
    client, exporter = app
    await client.chat.completions.create(model="gpt", messages=HI)
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="gpt", messages=HI)
    refused = _server_spans(exporter)[-1]
    [event] = [e for e in refused.events if e.name == "modelway.limit.refused"]
    assert event.attributes is not None
    assert event.attributes["modelway.limit.owner"] == POLICY and event.attributes["modelway.limit.name"] == "rpm"
    assert event.attributes["modelway.limit.measure"] == "requests"
    assert 55 < float(event.attributes["modelway.limit.retry_after_s"]) <= 60  # type: ignore[arg-type]
    assert refused.attributes is not None and refused.attributes["error.type"] == "rate_limit_exceeded"
    assert not any(s.kind == SpanKind.CLIENT and s.parent == refused.context for s in exporter.get_finished_spans())


async def test_spent_capacity_is_a_fallback_with_reason_capacity(app: Any) -> None:
    client, exporter = app
    first = await client.chat.completions.create(model="failover", messages=HI)
    second = await client.chat.completions.create(model="failover", messages=HI)
    assert (first.model, second.model) == ("gpt-4o", "gpt-4o-mini")
    skipped = _server_spans(exporter)[-1]
    [event] = [e for e in skipped.events if e.name == "modelway.fallback"]
    assert event.attributes == {"modelway.backend": "spare/gpt-4o-mini", "modelway.fallback.reason": "capacity"}
