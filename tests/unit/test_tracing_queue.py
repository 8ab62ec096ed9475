"""The lean span recorder's samplers follow OTEL_TRACES_SAMPLER, its queue is bounded and never blocks,
and its worker exports on schedule, on a full batch, on flush and on shutdown through the real HTTP
transport; limits come from the environment."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from proxy.telemetry.configure import build_tracer_provider
from proxy.telemetry.facade import Telemetry, set_error
from proxy.telemetry.lean_span import LeanSpan, SharedAttributes
from proxy.telemetry.otlp_export import OTLPHttpSpanExporter
from proxy.telemetry.sampling import Sampler, SpanLimits
from proxy.telemetry.sidecar_metrics import telemetry_drops
from proxy.telemetry.tracing import LeanTracerProvider
from tests.unit.otlp_support import Collector
from tests.unit.tracing_support import APP_SPAN, APP_TRACE, Capture, _attrs, _finished, _lean

# ---------------------------------------------------------------------------
# sampling


def _remote(sampled: bool):
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    ctx = SpanContext(APP_TRACE, APP_SPAN, is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(NonRecordingSpan(ctx))


def test_always_off_makes_non_recording_spans_that_still_propagate():
    provider, out = _lean({"OTEL_TRACES_SAMPLER": "always_off"})
    telemetry = Telemetry(tracer=provider.get_tracer("t"))
    with telemetry.server_span(name="s", parent=_remote(True), attributes={"a": 1}) as server:
        assert not server.is_recording() and isinstance(server, NonRecordingSpan)
        client = telemetry.client_span(name="c", parent=server, attributes={})
        headers: dict[str, str] = {}
        telemetry.inject(headers, client)
        client.set_attribute("x", 1)
        set_error(client, "e", "m")
        client.end()
    ctx = client.get_span_context()
    assert ctx.trace_id == APP_TRACE and ctx.span_id not in (0, APP_SPAN, server.get_span_context().span_id)
    assert headers["traceparent"] == f"00-{APP_TRACE:032x}-{ctx.span_id:016x}-00"
    root = provider.get_tracer("t").start_span("root")
    assert root.get_span_context().is_valid and not root.get_span_context().trace_flags.sampled
    root.end()
    assert _finished(provider, out) == []
    provider.shutdown()


@pytest.mark.parametrize(
    ("name", "arg", "expected"),
    [
        ("traceidratio", "0.0", 0),
        ("traceidratio", "1.0", 200),
        ("traceidratio", "", 200),
        ("always_on", None, 200),
        ("parentbased_always_off", None, 0),
        ("parentbased_traceidratio", "0", 0),
        ("nonsense", None, 200),  # unknown: the default, parentbased_always_on
    ],
)
def test_root_sampling(name, arg, expected):
    environ = {"OTEL_TRACES_SAMPLER": name} | ({"OTEL_TRACES_SAMPLER_ARG": arg} if arg is not None else {})
    provider, out = _lean(environ)
    tracer = provider.get_tracer("t")
    for _ in range(200):
        tracer.start_span("root").end()
    assert len(_finished(provider, out)) == expected
    provider.shutdown()


def test_ratio_sampling_is_the_sdks_decision_on_the_trace_id():
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    sampler, sdk = Sampler("traceidratio", 0.3), TraceIdRatioBased(0.3)
    for trace_id in (0, 1, sdk.bound - 1, sdk.bound, sdk.bound + 1, 2**64 - 1, 2**128 - 1, (7 << 64) | 5):
        expected = sdk.should_sample(None, trace_id, "n").decision.is_sampled()
        assert sampler.should_sample(None, trace_id) == expected
    provider, _out = _lean({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"})
    tracer = provider.get_tracer("t")
    spans = [tracer.start_span("r") for _ in range(2000)]
    for span in spans:
        span.end()
    assert 800 < sum(s.is_recording() is False and isinstance(s, LeanSpan) for s in spans) < 1200
    assert all(((s.get_span_context().trace_id & (2**64 - 1)) < 2**63) == isinstance(s, LeanSpan) for s in spans)
    provider.shutdown()


@pytest.mark.parametrize("name", ["parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"])
def test_parent_based_samplers_follow_the_parents_flag(name):
    environ = {"OTEL_TRACES_SAMPLER": name, "OTEL_TRACES_SAMPLER_ARG": "0.0"}
    provider, out = _lean(environ)
    tracer = provider.get_tracer("t")
    sampled = tracer.start_span("s", context=_remote(True))
    unsampled = tracer.start_span("u", context=_remote(False))
    assert sampled.is_recording() and not unsampled.is_recording()
    local_child = tracer.start_span("c", context=trace.set_span_in_context(sampled))
    unsampled_child = tracer.start_span("uc", context=trace.set_span_in_context(unsampled))
    assert local_child.is_recording() and not unsampled_child.is_recording()
    assert unsampled_child.get_span_context().trace_id == APP_TRACE
    for span in (local_child, unsampled_child, sampled, unsampled):
        span.end()
    assert [s.name for s in _finished(provider, out)] == ["c", "s"]
    provider.shutdown()


def test_non_parent_based_sampler_ignores_the_parents_flag():
    provider, _out = _lean({"OTEL_TRACES_SAMPLER": "always_on"})
    span = provider.get_tracer("t").start_span("s", context=_remote(False))
    assert span.is_recording() and span.get_span_context().trace_flags.sampled
    assert span.get_span_context().trace_id == APP_TRACE
    span.end()
    provider.shutdown()


# ---------------------------------------------------------------------------
# the queue and the worker


def test_a_full_queue_drops_and_counts_without_blocking():
    exporter = Capture(delay=0.5)  # a slow collector
    provider, _ = _lean(exporter=exporter, max_queue_size=10, max_export_batch_size=5, schedule_delay_millis=60_000)
    tracer = provider.get_tracer("t")
    started = time.perf_counter()
    for _ in range(1000):
        tracer.start_span("s").end()
    assert time.perf_counter() - started < 0.4  # never waited for the exporter
    queue = provider.queue
    assert len(queue) <= 10
    assert queue.dropped_spans >= 1000 - 10 - 5  # at most one batch taken by the worker meanwhile
    provider.shutdown()
    assert len(exporter.spans) + queue.dropped_spans == 1000
    assert max(exporter.batches) <= 5 and exporter.shut


def test_large_spans_meet_the_queue_and_batch_bounds_in_bytes():
    """Spans larger than a sidecar's (captured prompts): the queue holds ~2 KiB per span of its bound on
    average, and a batch as many bytes per span of its size; spans past that are dropped and counted."""
    exporter = Capture(delay=0.5)  # a slow collector
    provider, _ = _lean(exporter=exporter, max_queue_size=10, max_export_batch_size=5, schedule_delay_millis=60_000)
    assert provider.queue.max_queue_bytes == 10 * 2048 and provider.queue.max_export_batch_bytes == 5 * 2048
    tracer = provider.get_tracer("t")
    prompt = "p" * 4000
    for _ in range(20):
        tracer.start_span("s", attributes={"gen_ai.input.messages": prompt}).end()
    queue = provider.queue
    # a batch holds 2 such spans (~4 KB each: a third would take it past 10 KiB); the queue takes 5 (20 KiB):
    # the worker holds one batch meanwhile, the rest is dropped (a bound of 10 spans alone drops 5)
    assert queue.dropped_spans >= 20 - 2 - 5
    provider.shutdown()
    assert len(exporter.spans) + queue.dropped_spans == 20
    assert max(exporter.batches) == 2 and all(len(s.attributes[0].value.string_value) == 4000 for s in exporter.spans)


def test_worker_exports_on_schedule_on_a_full_batch_and_on_shutdown():
    exporter = Capture()
    provider, _ = _lean(exporter=exporter, max_export_batch_size=4, schedule_delay_millis=200)
    tracer = provider.get_tracer("t")
    tracer.start_span("scheduled").end()
    deadline = time.monotonic() + 3
    while not exporter.spans and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [s.name for s in exporter.spans] == ["scheduled"]  # by the timer, no flush asked

    provider.queue.schedule_delay_millis = 60_000
    time.sleep(0.3)  # let the worker start its long wait
    for _ in range(4):
        tracer.start_span("batch").end()
    deadline = time.monotonic() + 3
    while len(exporter.spans) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(exporter.spans) == 5 and exporter.batches[-1] == 4  # a full batch woke the worker

    tracer.start_span("last").end()
    provider.shutdown()
    assert exporter.spans[-1].name == "last" and exporter.shut
    tracer.start_span("after shutdown").end()  # dropped, counted, no error
    assert provider.queue.dropped_spans == 1


def test_export_through_the_http_transport_on_schedule_and_on_shutdown():
    collector = Collector()
    try:
        provider = build_tracer_provider(
            service_name="svc",
            environ={
                "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                "OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=pod-1",
            },
        )
        assert isinstance(provider, LeanTracerProvider)
        telemetry = Telemetry(tracer=provider.get_tracer("modelway.proxy"))
        with telemetry.server_span(name="chat gpt", parent=_remote(True), attributes={"a": 1}) as server:
            telemetry.client_span(name="chat gpt-4o", parent=server, attributes={"b": 2}).end()
        deadline = time.monotonic() + 5
        while not collector.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        [first] = collector.requests  # on schedule, before any shutdown
        with telemetry.server_span(name="second", parent=_remote(True), attributes={}):
            pass
        provider.shutdown()
        assert len(collector.requests) == 2 and collector.connections == 1
        exporter = provider.span_exporter
        assert isinstance(exporter, OTLPHttpSpanExporter)
        assert exporter.exported_spans == 3 and exporter.failed_spans == 0
        request = ExportTraceServiceRequest.FromString(first["body"])
        [resource_spans] = request.resource_spans
        resource = _attrs(resource_spans.resource.attributes)
        assert resource["service.name"] == "svc" and resource["k8s.pod.name"] == "pod-1"
        assert [s.name for s in resource_spans.scope_spans[0].spans] == ["chat gpt-4o", "chat gpt"]
        [second] = ExportTraceServiceRequest.FromString(collector.requests[1]["body"]).resource_spans
        assert second.scope_spans[0].spans[0].name == "second"
    finally:
        collector.stop()


def test_shutdown_is_bounded_when_the_collector_hangs():
    exporter = Capture(delay=5.0)
    provider, _ = _lean(exporter=exporter, schedule_delay_millis=10)
    provider.get_tracer("t").start_span("s").end()
    time.sleep(0.1)  # the worker is now inside the slow export
    started = time.perf_counter()
    provider.shutdown(timeout_millis=200)
    assert time.perf_counter() - started < 2.5 and exporter.shut


def test_force_flush_from_another_thread_and_export_errors_do_not_kill_the_worker():
    class Raising(Capture):
        def export(self, spans):
            super().export(spans)
            if len(self.batches) == 1:
                raise RuntimeError("exporter bug")
            return SpanExportResult.SUCCESS

    exporter = Raising()
    provider, _ = _lean(exporter=exporter, schedule_delay_millis=60_000)
    tracer = provider.get_tracer("t")
    tracer.start_span("a").end()
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(provider.force_flush(5000)))
    thread.start()
    thread.join(5)
    tracer.start_span("b").end()
    assert provider.force_flush(5000) and results == [True]
    assert [s.name for s in exporter.spans] == ["a", "b"]
    provider.shutdown()


def test_an_ended_span_waits_for_export_as_its_bytes_alone():
    """What waits in the queue is an ended span's OTLP message, not the span: the span, and all it
    holds of its request (attribute dicts, values, events), can be freed at once."""
    provider, out = _lean(schedule_delay_millis=60_000)
    tracer = provider.get_tracer("t")
    span = tracer.start_span("s", attributes={"a": 1})
    span.set_plain({"gen_ai.response.model": "m", "gen_ai.usage.input_tokens": 3})
    span.add_event("e", {"k": "v"})
    span.end()
    ended = weakref.ref(span)
    del span
    gc.collect()
    assert len(provider.queue) == 1 and ended() is None
    [done] = _finished(provider, out)
    assert done.name == "s" and _attrs(done.attributes) == {
        "a": 1,
        "gen_ai.response.model": "m",
        "gen_ai.usage.input_tokens": 3,
    }
    assert [event.name for event in done.events] == ["e"]
    provider.shutdown()


def test_a_span_that_cannot_be_encoded_is_counted_and_its_end_does_not_raise(caplog):
    provider, out = _lean(schedule_delay_millis=60_000)
    tracer = provider.get_tracer("t")
    tracer.start_span(object()).end()  # type: ignore[arg-type]  # (a bug in a caller: no str name)
    tracer.start_span("fine").end()
    assert [s.name for s in _finished(provider, out)] == ["fine"]
    assert provider.queue.failed_spans == 1 and "could not be encoded" in caplog.text
    # counted where operators see lost spans: modelway.telemetry.dropped{modelway.reason=export_failed}
    drops = dict(telemetry_drops(span_queue=provider.queue, span_exporter=out)())
    assert drops[("spans", "export_failed")] == 1 and drops[("spans", "queue_full")] == 0
    provider.shutdown()


@pytest.mark.parametrize(
    "spans, batch, buffer", [(7, 3, None), (250, 100, None), (250, 100, 4096)]
)  # (250, 100): big batches, each scope's spans in a few buffers, or (4096) in many, large spans in their own
def test_spans_of_several_scopes_in_batches_encode_as_the_official_encoder_groups_them(
    spans, batch, buffer, monkeypatch
):
    """Spans ended by two tracers in turn, over several batches: each request groups its spans by
    scope in first-seen order, as the official encoder does for the same batch, whether a scope's
    spans fill one buffer or several and whether large ones are queued as their own bytes."""
    from proxy.telemetry import span_queue

    if buffer:
        monkeypatch.setattr(span_queue, "CHUNK_BYTES", buffer)
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as official_encode
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    from proxy.telemetry.sampling import LeanResource

    attributes = {"service.name": "svc"}
    sdk_out = InMemorySpanExporter()
    sdk = TracerProvider(resource=Resource(attributes), sampler=ALWAYS_ON)
    sdk.add_span_processor(SimpleSpanProcessor(sdk_out))
    lean, out = _lean(
        resource=LeanResource(attributes),
        max_queue_size=1000,
        max_export_batch_size=batch,
        schedule_delay_millis=60_000,
    )
    for provider in (sdk, lean):
        tracers = [provider.get_tracer("a"), provider.get_tracer("b", "2")]
        for i in range(spans):
            attributes = {"i": i, "text": "t" * (3000 if buffer and i % 17 == 5 else i)}  # (some of 3 KB)
            tracers[i % 3 == 1].start_span(f"s{i}", start_time=i + 1, attributes=attributes).end(end_time=i + 2)
    _finished(lean, out)
    assert lean.queue._room == lean.queue.max_queue_bytes  # (the bytes counted in were all given back)
    sdk_spans = list(sdk_out.get_finished_spans())
    assert out.batches == [batch] * (spans // batch) + [spans % batch]
    for n, request in enumerate(out.requests):
        official = official_encode(sdk_spans[batch * n : batch * n + batch])
        for message in (official, request):  # (the ids are random)
            for rs in message.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        span.trace_id, span.span_id = b"\x01" * 16, b"\x02" * 8
        assert request == official
    lean.shutdown()


def test_limits_from_the_environment():
    limits = SpanLimits({"OTEL_ATTRIBUTE_COUNT_LIMIT": "5", "OTEL_SPAN_EVENT_COUNT_LIMIT": "x"})
    assert (limits.attributes, limits.event_attributes, limits.link_attributes) == (5, 5, 5)
    assert limits.events == 128 and limits.links == 128
    provider, out = _lean({"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "0"})
    span = provider.get_tracer("t").start_span("s", attributes={"a": 1})
    span.set_attribute("b", 2)
    span.end()
    [done] = _finished(provider, out)
    assert _attrs(done.attributes) == {} and done.dropped_attributes_count == 2
    provider.shutdown()


@pytest.mark.parametrize(
    "before, plain",
    [
        ({}, {"x": 1, "y": "b"}),  # a fresh span: taken whole
        ({"x": 0}, {"y": "b", "z": 2.5}),  # new keys after the span's own
        ({"x": 0, "y": "a"}, {"y": "b", "x": 1}),  # keys set again move to the end
        ({}, {"shared.key": "again", "y": ("stop",)}),  # a shared key set again
        ({"x": 0}, {"y": 1, "z": 2, "w": 3}),  # past the limit: the oldest dropped, counted
    ],
)
def test_set_plain_leaves_a_span_as_set_attributes_does(before, plain):
    provider, _ = _lean({"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "4"})
    tracer = provider.get_tracer("t")
    shared = SharedAttributes({"shared.key": "v", "other": 1})
    spans = [tracer.start_span("s", attributes=shared) for _ in range(2)]
    for span in spans:
        span.set_attributes(before)
    spans[0].set_attributes(dict(plain))
    spans[1].set_plain(dict(plain))
    assert list(spans[1].attributes.items()) == list(spans[0].attributes.items())
    assert spans[1].dropped_attributes == spans[0].dropped_attributes
    assert shared == {"shared.key": "v", "other": 1}  # never changed
    provider.shutdown()
