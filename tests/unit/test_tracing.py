"""The lean span recorder (`proxy.telemetry.tracing`): its spans encode to the same OTLP message as
the SDK's for the same calls, and a request's trace decodes to the fields and resource expected."""

from __future__ import annotations

import uuid

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as official_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits as SdkSpanLimits
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from proxy.telemetry.facade import Telemetry, set_error
from proxy.telemetry.lean_span import SharedAttributes
from proxy.telemetry.sampling import LeanResource, Sampler, build_resource
from tests.unit.tracing_support import APP_SPAN, APP_TRACE, PROPAGATOR, TRACEPARENT, _attrs, _finished, _lean

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

    official = _normalised(official_encode(sdk_spans))
    [exported] = lean_out.requests  # what the lean recorder posts: spans encoded as they ended
    _same_message(_normalised(exported), official)
    # again, the encoder's caches warm: the same message
    _scenario(lean.get_tracer("modelway.proxy"))
    _scenario(lean.get_tracer("lib", "1.2.3", schema_url="https://s/1", attributes={"scope.attr": "v"}))
    _finished(lean, lean_out)
    _same_message(_normalised(lean_out.requests[1]), official)
    lean.shutdown()


def _same_message(mine: ExportTraceServiceRequest, official: ExportTraceServiceRequest) -> None:
    if mine != official:
        import difflib

        diff = "\n".join(difflib.unified_diff(str(official).splitlines(), str(mine).splitlines(), lineterm=""))
        pytest.fail(f"lean (+) vs SDK (-):\n{diff}")


def test_span_context_is_the_tuple_the_lean_path_unpacks():
    """The lean tracer, the encoder and the traceparent writer read a SpanContext by unpacking it
    as the tuple (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid) that the API
    makes it: an OpenTelemetry release that changes that shape breaks parents, ids and headers."""
    flags, state = TraceFlags(1), trace.TraceState([("k", "v")])
    context = SpanContext(APP_TRACE, APP_SPAN, True, flags, state)
    assert isinstance(context, tuple) and len(context) == 6, (
        "opentelemetry.trace.SpanContext is no longer a 6-tuple: proxy.telemetry.tracing (LeanTracer._start), "
        "otlp_encode (SpanEncoder.lean_span_field) and facade (Telemetry.inject) unpack it as one"
    )
    assert tuple(context) == (APP_TRACE, APP_SPAN, True, flags, state, True), (
        "SpanContext's tuple order changed: the lean path would read the wrong fields"
    )
    assert tuple(trace.INVALID_SPAN_CONTEXT)[5] is False


def test_span_contexts_equal_the_ones_the_api_makes():
    """The lean tracer builds its spans' contexts as tuples directly (not through SpanContext's
    __new__): each must equal, field by field, the SpanContext the API makes of the same values."""
    provider, _ = _lean(sampler=Sampler("parentbased_traceidratio", 0.5))
    tracer = provider.get_tracer("modelway.proxy")
    remote = PROPAGATOR.extract({"traceparent": TRACEPARENT, "tracestate": "vendor=v1"})
    unsampled_parent = PROPAGATOR.extract({"traceparent": TRACEPARENT[:-2] + "00"})
    spans = [tracer.start_span("root") for _ in range(20)]  # about half sampled, half not
    spans += [tracer.start_span("remote child", context=remote), tracer.start_span("x", context=unsampled_parent)]
    spans += [tracer.start_span("child", context=trace.set_span_in_context(s)) for s in spans[:4]]
    assert {s.is_recording() for s in spans} == {True, False}
    for span in spans:
        context = span.get_span_context()
        made = SpanContext(*context[:5])
        assert type(context) is SpanContext and tuple(context) == tuple(made) and context.is_valid is True
        assert context.trace_flags == (1 if span.is_recording() else 0) and context.is_remote is False
    assert spans[20].get_span_context().trace_state == TraceState([("vendor", "v1")])
    provider.shutdown()


# ---------------------------------------------------------------------------
# field by field


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
    _finished(provider, out)
    [request] = out.requests
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
