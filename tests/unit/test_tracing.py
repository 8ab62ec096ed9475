"""The lean span recorder (`proxy.telemetry.tracing`): its spans encode to the same OTLP
message as the SDK's for the same calls, its samplers follow OTEL_TRACES_SAMPLER,
its queue is bounded and never blocks, and its worker exports on schedule, on a
full batch, on flush and on shutdown through the real HTTP transport."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as official_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits as SdkSpanLimits
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from proxy.telemetry.configure import build_tracer_provider
from proxy.telemetry.facade import Telemetry, set_error
from proxy.telemetry.lean_span import LeanSpan, SharedAttributes
from proxy.telemetry.otlp_encode import SpanEncoder, encode_spans
from proxy.telemetry.otlp_export import OTLPHttpSpanExporter
from proxy.telemetry.sampling import LeanResource, Sampler, SpanLimits, build_resource
from proxy.telemetry.tracing import LeanTracerProvider
from tests.unit.test_otlp_export import Collector

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
APP_TRACE, APP_SPAN = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7
PROPAGATOR = TraceContextTextMapPropagator()


class Capture:
    """A span exporter keeping what it is given."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS, delay: float = 0.0) -> None:
        self.spans: list = []
        self.batches: list[int] = []
        self.result, self.delay = result, delay
        self.shut = False

    def export(self, spans):
        if self.delay:
            time.sleep(self.delay)
        self.spans.extend(spans)
        self.batches.append(len(spans))
        return self.result

    def shutdown(self):
        self.shut = True


def _lean(environ=None, exporter=None, **kwargs) -> tuple[LeanTracerProvider, Capture]:
    exporter = exporter or Capture()
    kwargs.setdefault("resource", LeanResource({"service.name": "svc", "k8s.pod.name": "pod-ü"}))
    provider = LeanTracerProvider(exporter, environ=environ or {}, **kwargs)
    return provider, exporter


def _finished(provider: LeanTracerProvider, exporter: Capture) -> list:
    assert provider.force_flush(5000)
    return exporter.spans


# ---------------------------------------------------------------------------
# the same calls through the SDK and through LeanTracer


class Boom(RuntimeError):
    pass


try:
    raise Boom("it broke")
except Boom as caught:
    BOOM = caught


CLIENT_ATTRIBUTES = SharedAttributes({"server.port": 443, "modelway.attempt": 1, "modelway.fallback": False})
SHARED = SharedAttributes({"a": "same", "b": 2})


def _scenario(tracer: trace.Tracer) -> None:
    """What the sidecar does per request (and more of the API), parent from a traceparent header."""
    parent = PROPAGATOR.extract({"traceparent": TRACEPARENT, "tracestate": "vendor=v1,b=x"})
    server = tracer.start_span(
        "chat gpt",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "empty": "",
            "unicode": "héllo ✓ 🚀",
            "int": 42,
            "zero": 0,
            "negative": -7,
            "big": 2**62,
            "min": -(2**63),
            "float": 0.25,
            "true": True,
            "false": False,
            "strs": ["stop", "length"],
            "ints": (1, -2, 3),
            "floats": [1.5, 2.5],
            "bools": (True,),
            "empty_seq": [],
            "with_none": ("a", None),
            "bytes": b"\x00\xff",
            "none": None,
            "": "bad key",
            "long": "y" * 5000,
        },
    )
    server.add_event("modelway.fallback", {"modelway.backend": "a/b", "modelway.fallback.reason": "5xx", "n": 2})
    server.add_event("no attributes")
    server.add_event("timed", {"t": ("x",)}, timestamp=1_700_000_000_000_000_000)
    # shared attributes (to the SDK, a dict): the lean encoder writes them from its cache
    client = tracer.start_span(
        "chat gpt-4o", context=trace.set_span_in_context(server), kind=SpanKind.CLIENT, attributes=CLIENT_ATTRIBUTES
    )
    headers: dict[str, str] = {}
    Telemetry(tracer=tracer).inject(headers, client)
    client.set_attribute("http.response.status_code", 503)
    set_error(client, "5xx", "upstream said 503 — unavailable")
    client.set_attribute("error.type", "5xx again")  # re-set: moves to the end, as in the SDK
    client.end()
    client.set_attribute("after.end", 1)  # ignored
    client.end()  # ignored
    ok = tracer.start_span(
        "ok",
        context=trace.set_span_in_context(server),
        kind=SpanKind.CLIENT,
        links=[Link(SpanContext(1, 2, False)), Link(SpanContext(3, 4, True, TraceFlags(1)), {"l": 1})],
    )
    ok.set_status(StatusCode.OK)
    ok.set_status(Status(StatusCode.ERROR, "ignored: OK is final"))
    ok.update_name("ok renamed")
    ok.add_link(SpanContext(5, 6, False), {"why": "later"})
    ok.add_link(trace.INVALID_SPAN_CONTEXT)  # dropped, as in the SDK
    ok.record_exception(BOOM, {"extra": True}, timestamp=5)
    ok.end()
    for value in ("changed", "same"):  # a shared key set again: the cached bytes must not be used
        changed = tracer.start_span("shared, then changed", kind=SpanKind.CLIENT, attributes=SHARED)
        changed.set_attributes({"a": value, "c": 3.5})
        changed.end()
    server.set_attributes({"modelway.backend": "a/b", "gen_ai.usage.input_tokens": 10, "obj": {"a": 1}})
    server.set_attribute("", 1)  # invalid key: dropped and counted
    server.set_status(StatusCode.ERROR)
    server.end()
    with tracer.start_as_current_span("root", kind=SpanKind.INTERNAL) as root:  # no parent: a new trace
        root.set_attribute("k", "v")
        tracer.start_span("child of current", kind=SpanKind.PRODUCER).end()
    with pytest.raises(Boom), tracer.start_as_current_span("raises", kind=SpanKind.CONSUMER):
        raise BOOM
    tracer.start_span("", start_time=10).end(end_time=20)


def _normalised(request: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """Ids replaced by their order of appearance (app ids kept); times zeroed; telemetry.sdk.version dropped."""
    ids: dict[bytes, bytes] = {}

    def norm(value: bytes) -> bytes:
        if not value or int.from_bytes(value, "big") in (APP_TRACE, APP_SPAN, 1, 2, 3, 4, 5, 6):
            return value
        return ids.setdefault(value, (len(ids) + 100).to_bytes(len(value), "big"))

    out = ExportTraceServiceRequest()
    out.CopyFrom(request)
    for resource_spans in out.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                span.trace_id, span.span_id = norm(span.trace_id), norm(span.span_id)
                span.parent_span_id = norm(span.parent_span_id)
                if span.start_time_unix_nano > 1000:
                    span.start_time_unix_nano = span.end_time_unix_nano = 0
                for event in span.events:
                    for kv in event.attributes:
                        if kv.key == "exception.stacktrace":  # the frames differ: SDK vs lean start_as_current_span
                            kv.value.string_value = kv.value.string_value.splitlines()[-1]
                    if event.time_unix_nano > 1000 and event.time_unix_nano != 1_700_000_000_000_000_000:
                        event.time_unix_nano = 0
    return out


@pytest.mark.parametrize("limits", [None, 3], ids=["default-limits", "small-limits"])
def test_lean_spans_encode_to_the_sdks_message_for_the_same_calls(limits):
    resource_attributes = {"service.name": "svc", "k8s.pod.name": "pod-ü", "n": 3}
    environ = {}
    sdk_limits = SdkSpanLimits()
    if limits:
        environ = {
            "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": str(limits),
            "OTEL_SPAN_EVENT_COUNT_LIMIT": "2",
            "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": "1",
            "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT": "1",
        }
        sdk_limits = SdkSpanLimits(
            max_span_attributes=limits, max_events=2, max_event_attributes=1, max_link_attributes=1
        )
    sdk_out = InMemorySpanExporter()
    sdk = TracerProvider(resource=Resource(resource_attributes), sampler=ALWAYS_ON, span_limits=sdk_limits)
    sdk.add_span_processor(SimpleSpanProcessor(sdk_out))
    lean, lean_out = _lean(environ, resource=LeanResource(resource_attributes), sampler=Sampler("always_on"))

    for provider in (sdk, lean):
        _scenario(provider.get_tracer("modelway.proxy"))
        _scenario(provider.get_tracer("lib", "1.2.3", schema_url="https://s/1", attributes={"scope.attr": "v"}))
    sdk_spans, lean_spans = list(sdk_out.get_finished_spans()), _finished(lean, lean_out)
    assert [s.name for s in lean_spans] == [s.name for s in sdk_spans] and len(lean_spans) == 18
    assert all(isinstance(s, LeanSpan) for s in lean_spans)

    official = _normalised(official_encode(sdk_spans))
    mine = _normalised(ExportTraceServiceRequest.FromString(encode_spans(lean_spans)))
    if mine != official:
        import difflib

        diff = "\n".join(difflib.unified_diff(str(official).splitlines(), str(mine).splitlines(), lineterm=""))
        pytest.fail(f"lean (+) vs SDK (-):\n{diff}")
    # the cached second pass and the generic (ReadableSpan) path agree with the fast one
    encoder = SpanEncoder()
    first, second = encoder.encode(lean_spans), encoder.encode(lean_spans)
    assert first == second == encode_spans(lean_spans)
    lean.shutdown()


def test_span_context_is_the_tuple_the_lean_path_unpacks():
    """The lean tracer, the encoder and the traceparent writer read a SpanContext by unpacking it
    as the tuple (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid) that the API
    makes it: an OpenTelemetry release that changes that shape breaks parents, ids and headers."""
    flags, state = TraceFlags(1), trace.TraceState([("k", "v")])
    context = SpanContext(APP_TRACE, APP_SPAN, True, flags, state)
    assert isinstance(context, tuple) and len(context) == 6, (
        "opentelemetry.trace.SpanContext is no longer a 6-tuple: proxy.telemetry.tracing (LeanTracer._start), "
        "otlp_encode (encode_lean_span) and facade (Telemetry.inject) unpack it as one"
    )
    assert tuple(context) == (APP_TRACE, APP_SPAN, True, flags, state, True), (
        "SpanContext's tuple order changed: the lean path would read the wrong fields"
    )
    assert tuple(trace.INVALID_SPAN_CONTEXT)[5] is False


# ---------------------------------------------------------------------------
# field by field


def _attrs(key_values) -> dict:
    out = {}
    for kv in key_values:
        which = kv.value.WhichOneof("value")
        value = getattr(kv.value, which) if which else None
        if which == "array_value":
            value = tuple(getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None for v in value.values)
        out[kv.key] = value
    return out


def test_decoded_fields_of_a_request_trace():
    provider, out = _lean({"OTEL_SERVICE_NAME": "ignored: the resource is given"})
    tracer = provider.get_tracer("modelway.proxy", "0.1")
    telemetry = Telemetry(tracer=tracer)
    parent = telemetry.extract({"traceparent": TRACEPARENT, "tracestate": "vendor=v1"})
    with telemetry.server_span(
        name="chat gpt",
        parent=parent,
        attributes={"s": "x", "i": -3, "f": 0.5, "b": True, "seq": ["a", "b"], "iseq": [1, 2]},
    ) as server:
        client = telemetry.client_span(name="chat gpt-4o", parent=server, attributes={"server.port": 443})
        headers: dict[str, str] = {}
        telemetry.inject(headers, client)
        set_error(client, "timeout", "no answer")
        client.end()
        server.add_event("modelway.retry", {"modelway.retry.delay_s": 0.25})
        server.set_status(Status(StatusCode.OK))
    request = ExportTraceServiceRequest.FromString(encode_spans(_finished(provider, out)))
    [resource_spans] = request.resource_spans
    assert _attrs(resource_spans.resource.attributes) == {"service.name": "svc", "k8s.pod.name": "pod-ü"}
    [scope_spans] = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("modelway.proxy", "0.1")
    client_pb, server_pb = scope_spans.spans
    assert (server_pb.name, client_pb.name) == ("chat gpt", "chat gpt-4o")
    assert server_pb.kind == 2 and client_pb.kind == 3  # SPAN_KIND_SERVER, SPAN_KIND_CLIENT
    assert int.from_bytes(server_pb.trace_id, "big") == APP_TRACE == int.from_bytes(client_pb.trace_id, "big")
    assert int.from_bytes(server_pb.parent_span_id, "big") == APP_SPAN
    assert client_pb.parent_span_id == server_pb.span_id and client_pb.span_id != server_pb.span_id
    assert server_pb.trace_state == client_pb.trace_state == "vendor=v1"
    assert server_pb.flags == 0x300 and client_pb.flags == 0x100  # remote parent; local parent
    assert _attrs(server_pb.attributes) == {"s": "x", "i": -3, "f": 0.5, "b": True, "seq": ("a", "b"), "iseq": (1, 2)}
    assert _attrs(client_pb.attributes) == {"server.port": 443, "error.type": "timeout"}
    assert (client_pb.status.code, client_pb.status.message) == (2, "no answer")  # STATUS_CODE_ERROR
    assert server_pb.status.code == 1  # OK
    [event] = server_pb.events
    assert event.name == "modelway.retry" and _attrs(event.attributes) == {"modelway.retry.delay_s": 0.25}
    assert server_pb.start_time_unix_nano <= client_pb.start_time_unix_nano <= client_pb.end_time_unix_nano
    assert server_pb.start_time_unix_nano <= event.time_unix_nano <= server_pb.end_time_unix_nano
    # what went upstream continues the client span
    span_id = int.from_bytes(client_pb.span_id, "big")
    assert headers["traceparent"] == f"00-{APP_TRACE:032x}-{span_id:016x}-01"
    assert headers["tracestate"] == "vendor=v1"
    provider.shutdown()


def test_resource_from_the_environment():
    resource = build_resource("default-svc", {"OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=p%2C1, a=b,bad"})
    assert resource.attributes["service.name"] == "default-svc"
    assert resource.attributes["k8s.pod.name"] == "p,1" and resource.attributes["a"] == "b"
    assert resource.attributes["telemetry.sdk.name"] == "opentelemetry"
    assert resource.attributes["telemetry.sdk.language"] == "python"
    assert resource.attributes["telemetry.sdk.version"]
    assert build_resource("d", {"OTEL_RESOURCE_ATTRIBUTES": "service.name=env"}).attributes["service.name"] == "env"
    both = {"OTEL_RESOURCE_ATTRIBUTES": "service.name=env", "OTEL_SERVICE_NAME": "named"}
    assert build_resource("d", both).attributes["service.name"] == "named"
    # the SDK agrees on the attributes (versions aside)
    import os
    from unittest import mock

    env = {"OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=p%2C1,a=b", "OTEL_SERVICE_NAME": "named"}
    with mock.patch.dict(os.environ, env, clear=True):
        from opentelemetry.sdk.resources import OTELResourceDetector

        sdk = Resource.create({"service.name": "d"}).merge(OTELResourceDetector().detect())
    mine = build_resource("d", env).attributes
    assert uuid.UUID(mine.pop("service.instance.id")).version == 4
    assert mine == {k: v for k, v in sdk.attributes.items() if k != "service.instance.id"}


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


def test_limits_from_the_environment():
    limits = SpanLimits({"OTEL_ATTRIBUTE_COUNT_LIMIT": "5", "OTEL_SPAN_EVENT_COUNT_LIMIT": "x"})
    assert (limits.attributes, limits.event_attributes, limits.link_attributes) == (5, 5, 5)
    assert limits.events == 128 and limits.links == 128
    provider, out = _lean({"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "0"})
    span = provider.get_tracer("t").start_span("s", attributes={"a": 1})
    span.set_attribute("b", 2)
    span.end()
    [done] = _finished(provider, out)
    assert done.attributes == {} and done.dropped_attributes == 2
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
