"""The lean metrics recorder, the sidecar's instruments, cost, content redaction, and the
controller's SDK metrics as Prometheus text."""

from __future__ import annotations

import math
import random
import re
from typing import Any

from controller.core import Compiled, Controller, Sidecar
from controller.metrics import prometheus_names as controller_names
from controller.store import ResourceStore
from controller.telemetry import build_controller_telemetry
from controller.workload import Workload
from proxy.runtime import Runtime
from proxy.snapshot import Snapshot, parse_snapshot
from proxy.telemetry.backends import BackendCatalog
from proxy.telemetry.content import content_attributes
from proxy.telemetry.metrics import FOLD_AT, Registry, observe, render_prometheus
from proxy.telemetry.sidecar_metrics import DURATION_BUCKETS, TOKEN_BUCKETS, TTFT_BUCKETS, SidecarMetrics
from shared.scrub import Scrubber


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (labels must match exactly)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)", line)
        assert m, line
        found = dict(re.findall(r'([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if m.group(1) == name and found == labels:
            return float(m.group(4))
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


def test_histogram_buckets_are_upper_inclusive_and_cumulative() -> None:
    registry = Registry()
    h = registry.histogram("x.duration", unit="s", description="d", attributes=("a",), bounds=(0.1, 1.0))
    for v in (0.1, 0.5, 1.0, 7.0):
        h.record(("k",), v)
    text = render_prometheus(registry)
    assert "# TYPE x_duration_seconds histogram" in text
    assert _sample(text, "x_duration_seconds_bucket", a="k", le="0.1") == 1
    assert _sample(text, "x_duration_seconds_bucket", a="k", le="1") == 3
    assert _sample(text, "x_duration_seconds_bucket", a="k", le="+Inf") == 4
    assert _sample(text, "x_duration_seconds_count", a="k") == 4
    assert _sample(text, "x_duration_seconds_sum", a="k") == 8.6


def _one_by_one(bounds: tuple[float, ...], values: list[Any]) -> list[float]:
    """A histogram point as observing each value as it comes makes it."""
    point = [0, 0.0, 0.0, 0.0] + [0] * (len(bounds) + 1)
    for value in values:
        observe(point, bounds, value)
    return point


def test_histogram_values_folded_in_batches_make_the_point_one_by_one_makes() -> None:
    """Measurements are folded into their point in batches and before every read: each read sees the
    point observing them one at a time would have made, bit for bit (the sum added in order, min and
    max the first of their equals), bad values (NaN, infinities, strings, bools) dropped alike."""
    bounds = (0.01, 0.1, 1.0, 10.0)
    rng = random.Random(7)
    bad = [math.nan, math.inf, -math.inf, "0.5", True, None, 1e301, 10**400, -(10**400)]
    for trial in range(300):
        values: list[Any] = [
            rng.choice(
                [
                    rng.random() * 20 - 5,
                    rng.randint(-3, 30),
                    rng.choice([0.1, 1, 1.0, 10, 10.0, 0.01, 5, 5.0, -0.0, 0]),  # on the bounds; 5 == 5.0
                    rng.random() * 1e-12,
                    rng.choice(bad) if trial % 3 == 0 else 2.5,
                ]
            )
            for _ in range(rng.randint(0, 3 * FOLD_AT + 5))
        ]
        registry = Registry()
        h = registry.histogram("x", unit="s", description="", attributes=("k",), bounds=bounds)
        reads = sorted(rng.sample(range(len(values) + 1), min(3, len(values) + 1)))
        for i, value in enumerate(values, 1):
            h.record(("a",), value)
            if i in reads:  # a read folds what is pending: the point so far
                expected = _one_by_one(bounds, values[:i])
                got = dict(h.points()).get(("a",), [0, 0.0, 0.0, 0.0] + [0] * 5)
                assert _exact(got) == _exact(expected), (values[:i], got, expected)
        expected = _one_by_one(bounds, values)
        assert _exact(dict(h.points()).get(("a",), [0, 0.0, 0.0, 0.0] + [0] * 5)) == _exact(expected)


def _exact(point: list[Any]) -> list[tuple[type, Any]]:
    """A point's items compared by type and bits (0.0 and -0.0 differ, so do 5 and 5.0)."""
    return [(type(v), repr(v)) for v in point]


def test_a_requests_histograms_match_one_by_one_observation_with_other_recordings_between() -> None:
    """The request path appends a request's durations and token counts to its series' pending
    values; attempts of other requests record into the same attempt series between them: the
    points read are those of observing every value in the order it came."""
    runtime = Runtime.build(parse_snapshot(SNAPSHOT))
    info = BackendCatalog().get(runtime, "oai/gpt-4o")
    registry = Registry()
    metrics = SidecarMetrics(registry=registry)
    rng = random.Random(3)
    attempts: list[float] = []
    inputs: list[int] = []
    durations: list[float] = []
    for n in range(5 * FOLD_AT + 3):
        seconds, attempt, tokens = rng.random() * 3, rng.random() * 2, rng.randint(1, 5000)
        outcome, error = ("ok", None) if n % 5 else ("error", "timeout")
        metrics.request(
            operation="chat",
            route="gpt",
            info=info,
            outcome=outcome,
            error_type=error,
            seconds=seconds,
            input_tokens=tokens,
            output_tokens=None,
            cost=None,
            ttft=None,
            attempt_seconds=attempt,
        )
        attempts.append(attempt)
        inputs.append(tokens)
        if outcome == "ok":
            durations.append(seconds)
        if n % 7 == 0:  # a request of two attempts: each recorded on its own, into the same series
            between = rng.random()
            metrics.attempt(operation="chat", route="gpt", info=info, error_type=None, seconds=between)
            attempts.append(between)
    duration = dict(metrics.request_duration.points())[("chat", "gpt", "ok")]
    assert _exact(duration) == _exact(_one_by_one(DURATION_BUCKETS, durations))
    attempt_point = dict(metrics.operation_duration.points())[("chat", "gpt", info.labels, None)]
    assert _exact(attempt_point) == _exact(_one_by_one(DURATION_BUCKETS, attempts))
    tokens_point = dict(metrics.token_usage.points())[("chat", "gpt", info.labels, "input")]
    assert _exact(tokens_point) == _exact(_one_by_one(TOKEN_BUCKETS, inputs))
    assert all(len(pending) < FOLD_AT for pending in metrics.token_usage.pending.values())


def test_names_units_and_escaping_follow_the_prometheus_compatibility_rules() -> None:
    registry = Registry()
    c = registry.counter("modelway.cost", unit="USD", description="usd", attributes=("modelway.route", ("x", "y")))
    c.add(('a"b\\c\nd', ("v", None)), 0.5)
    registry.counter("modelway.requests", unit="{request}", description="r", attributes=())
    text = render_prometheus(registry)
    assert 'modelway_cost_usd_total{modelway_route="a\\"b\\\\c\\nd",x="v"} 0.5' in text
    assert registry.prometheus_names() == {
        "modelway_cost_usd_total": "modelway.cost",
        "modelway_requests_total": "modelway.requests",
    }


def test_semconv_instruments_and_buckets() -> None:
    metrics = SidecarMetrics(registry=Registry())
    assert metrics.token_usage.name == "gen_ai.client.token.usage" and metrics.token_usage.unit == "{token}"
    assert metrics.token_usage.bounds == TOKEN_BUCKETS and TOKEN_BUCKETS[-1] == 67108864
    assert (
        metrics.operation_duration.bounds
        == DURATION_BUCKETS
        == (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
    )
    assert metrics.time_to_first_token.name == "gen_ai.server.time_to_first_token"
    assert metrics.time_to_first_token.bounds == TTFT_BUCKETS


SNAPSHOT = {
    "providers": [
        {
            "name": "oai",
            "type": "openai",
            "baseUrl": "https://api.openai.com/v1",
            "apiKey": "sk-live-abcdef123456",
            "pricing": {"gpt-4o": {"inputPerMillion": 2.5, "outputPerMillion": 10}},
        },
        {"name": "claude", "type": "anthropic", "baseUrl": "https://api.anthropic.com", "apiKey": "k"},
    ],
    "routes": [
        {
            "name": "gpt",
            "model": "gpt",
            "rules": [
                {
                    "backends": [{"provider": "oai", "model": "gpt-4o"}],
                    "fallbacks": [{"provider": "claude", "model": "c"}],
                }
            ],
        }
    ],
}


def test_cost_and_labels_come_from_the_snapshot() -> None:
    runtime = Runtime.build(parse_snapshot(SNAPSHOT))
    catalog = BackendCatalog()
    info = catalog.get(runtime, "oai/gpt-4o")
    assert info.labels == ("openai", "gpt-4o", "api.openai.com", 443, "oai/gpt-4o")
    assert abs(info.cost(1000, 500) - (1000 * 2.5 + 500 * 10) / 1e6) < 1e-12
    assert catalog.get(runtime, "claude/c").cost(10, 10) is None  # no pricing: unknown, not free
    assert info.cost(None, None) is None

    registry = Registry()
    metrics = SidecarMetrics(registry=registry)
    metrics.request(
        operation="chat",
        route="gpt",
        info=info,
        outcome="ok",
        error_type=None,
        seconds=0.2,
        input_tokens=1000,
        output_tokens=500,
        cost=info.cost(1000, 500),
        ttft=None,
    )
    metrics.request(
        operation="chat",
        route="gpt",
        info=None,
        outcome="error",
        error_type="all_backends_failed",
        seconds=0.3,
        input_tokens=None,
        output_tokens=None,
        cost=None,
        ttft=None,
    )
    metrics.fallback(route="gpt", info=catalog.get(runtime, "claude/c"), reason="5xx")
    metrics.policy_refusal(route="gpt", policy="team-a/eu-only", data_class="confidential")
    text = render_prometheus(registry)
    backend = {
        "gen_ai_provider_name": "openai",
        "gen_ai_request_model": "gpt-4o",
        "server_address": "api.openai.com",
        "server_port": "443",
        "modelway_backend": "oai/gpt-4o",
    }
    assert (
        _sample(
            text,
            "modelway_requests_total",
            gen_ai_operation_name="chat",
            modelway_route="gpt",
            modelway_outcome="ok",
            **backend,
        )
        == 1
    )
    assert (
        _sample(
            text,
            "modelway_requests_total",
            gen_ai_operation_name="chat",
            modelway_route="gpt",
            modelway_outcome="error",
            error_type="all_backends_failed",
        )
        == 1
    )
    assert (
        _sample(text, "modelway_cost_usd_total", gen_ai_operation_name="chat", modelway_route="gpt", **backend)
        == 0.0075
    )
    assert (
        _sample(
            text,
            "gen_ai_client_token_usage_sum",
            gen_ai_operation_name="chat",
            modelway_route="gpt",
            gen_ai_token_type="output",
            **backend,
        )
        == 500
    )
    assert (
        _sample(
            text,
            "modelway_policy_refusals_total",
            modelway_route="gpt",
            modelway_policy="team-a/eu-only",
            modelway_data_class="confidential",
        )
        == 1
    )
    assert "sk-live" not in text


def test_redaction_of_credentials_in_captured_content() -> None:
    text = (
        "use sk-proj-abcdefghijklmnop and Authorization: Bearer eyJhbGciOi.eyJzdWIiOi.SflKxwRJSM "
        "AKIAABCDEFGHIJKLMNOP password=hunter2 and the key sk-live-abcdef123456 but keep this"
    )
    out = Scrubber(["sk-live-abcdef123456"])(text)
    for secret in (
        "sk-proj-abcdefghijklmnop",
        "eyJhbGciOi",
        "SflKxwRJSM",
        "AKIAABCDEFGHIJKLMNOP",
        "hunter2",
        "sk-live-abcdef123456",
    ):
        assert secret not in out
    assert "keep this" in out and "[REDACTED]" in out
    attributes = content_attributes(
        request={
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "my token=abc123xyz"}]},
            ]
        },
        response={"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]},
        scrub=Scrubber(),
    )
    assert attributes["gen_ai.system_instructions"] == '[{"type":"text","content":"be brief"}]'
    assert attributes["gen_ai.input.messages"] == (
        '[{"role":"user","parts":[{"type":"text","content":"my token=[REDACTED]"}]}]'
    )
    assert attributes["gen_ai.output.messages"] == (
        '[{"role":"assistant","parts":[{"type":"text","content":"ok"}],"finish_reason":"stop"}]'
    )


class _Stream:
    def send_snapshot(self, compiled: Compiled) -> None:
        pass


async def test_controller_metrics_as_prometheus_text() -> None:
    telemetry = build_controller_telemetry(environ={})
    controller = Controller(store=ResourceStore(), telemetry=telemetry)
    await controller.recompute()
    sidecar = Sidecar(name="team-a/app#1", workload=Workload(namespace="team-a"), stream=_Stream())
    compiled = Compiled(snapshot=Snapshot(version="v1"), message="{}", routes={})
    controller.compiled_for = lambda workload: compiled  # type: ignore[method-assign]
    await controller.attach(sidecar)
    controller.acknowledge(sidecar, version="v1", error=None)
    controller.acknowledge(sidecar, version="v2", error="bad")
    text = telemetry.prometheus_text()
    assert _sample(text, "modelway_controller_sidecars") == 1
    assert _sample(text, "modelway_controller_snapshot_pushes_total") == 1
    assert _sample(text, "modelway_controller_snapshot_nacks_total") == 1
    assert _sample(text, "modelway_controller_push_to_ack_duration_seconds_count") == 1
    assert (
        _sample(
            text,
            "modelway_controller_sidecar_snapshot_age_seconds",
            modelway_sidecar="team-a/app#1",
            modelway_snapshot_version="v1",
        )
        >= 0
    )
    families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert families == set(controller_names())
    telemetry.shutdown()


def test_fast_traceparent_paths_match_the_generic_propagator() -> None:
    """Telemetry parses and writes the common traceparent itself (cheaper); the result must be the
    generic W3C propagator's, for valid and invalid headers alike."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from proxy.telemetry.facade import Telemetry
    from proxy.telemetry.tracing import LeanTracerProvider

    class Discard:
        def export(self, spans):
            pass

        def shutdown(self):
            pass

    provider = LeanTracerProvider(Discard())
    telemetry, generic = Telemetry(tracer=provider.get_tracer("t")), TraceContextTextMapPropagator()
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = [
        None,
        "garbage",
        f"00-{trace_id}-{span_id}-01",
        f"00-{trace_id}-{span_id}-00",
        f"00-{trace_id}-{span_id}-03",
        f"00-{'0' * 32}-{span_id}-01",
        f"00-{trace_id}-{'0' * 16}-01",
        f"00-{trace_id.upper()}-{span_id}-01",
        f"01-{trace_id}-{span_id}-01-future",
        f"ff-{trace_id}-{span_id}-01",
    ]
    for value in headers:
        carrier = {"traceparent": value} if value else {}
        for extra in ({}, {"tracestate": "vendor=x"}):
            mine = trace.get_current_span(telemetry.extract({**carrier, **extra})).get_span_context()
            theirs = trace.get_current_span(generic.extract({**carrier, **extra})).get_span_context()
            assert (mine.trace_id, mine.span_id, mine.is_remote, mine.trace_flags, mine.trace_state) == (
                theirs.trace_id,
                theirs.span_id,
                theirs.is_remote,
                theirs.trace_flags,
                theirs.trace_state,
            ), value
            span = telemetry.client_span(
                name="x", parent=trace.get_current_span(telemetry.extract({**carrier, **extra})), attributes={}
            )
            sent_mine, sent_theirs = {}, {}
            telemetry.inject(sent_mine, span)
            generic.inject(sent_theirs, context=trace.set_span_in_context(span))
            assert sent_mine == sent_theirs, value
    provider.shutdown()


async def test_controller_admin_probes_and_metrics() -> None:
    import aiohttp
    from aiohttp import web

    from controller.admin import Readiness, build_admin_app

    telemetry = build_controller_telemetry(environ={})
    Controller(store=ResourceStore(), telemetry=telemetry)
    readiness = Readiness()
    runner = web.AppRunner(build_admin_app(readiness=readiness, telemetry=telemetry))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/healthz") as resp:
                assert resp.status == 200
            async with session.get(base + "/readyz") as resp:
                assert resp.status == 503 and (await resp.json())["ready"] is False
            readiness.ready = True
            async with session.get(base + "/readyz") as resp:
                assert resp.status == 200
            async with session.get(base + "/metrics") as resp:
                assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
                assert "modelway_controller_sidecars 0" in await resp.text()
    finally:
        await runner.cleanup()
        telemetry.shutdown()


def test_stream_capture_collects_text_and_tool_calls() -> None:
    from proxy.telemetry.content import StreamCapture

    class Encoder:
        def encode(self, chunk):
            return b"x"

        def finish(self):
            return b"end"

        def error(self, error):
            return b"err"

    class Frontend:
        api = "openai"

        def stream_encoder(self, *, include_usage):
            return Encoder()

    seen: list[dict] = []
    encoder = StreamCapture(Frontend(), on_done=seen.append).stream_encoder(include_usage=False)
    assert StreamCapture(Frontend(), on_done=seen.append).api == "openai"
    for chunk in (
        {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"a"'}}]
                    },
                }
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
                    "finish_reason": "tool_calls",
                }
            ]
        },
    ):
        assert encoder.encode(chunk) == b"x"
    assert not seen and encoder.finish() == b"end"
    attributes = content_attributes(request={"messages": []}, response=seen[0], scrub=Scrubber())
    assert attributes["gen_ai.output.messages"] == (
        '[{"role":"assistant","parts":[{"type":"text","content":"Hello"},{"type":"tool_call","id":"call_1",'
        '"name":"f","arguments":"{\\"a\\":1}"}],"finish_reason":"tool_calls"}]'
    )
