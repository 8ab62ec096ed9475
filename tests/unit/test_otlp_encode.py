"""The lean OTLP span encoder: its bytes decode to exactly the official encoder's message, span by
span and as a batch, and an attribute it cannot encode is skipped, not fatal."""

from __future__ import annotations

import gc
import logging
import sys
import tracemalloc

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as official_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from proxy.telemetry.otlp_encode import SpanEncoder, encode_spans
from tests.unit.otlp_support import sdk_provider

LOGGER = "proxy.telemetry.otlp_export"

# ---------------------------------------------------------------------------
# encoder


def _varied_spans():
    """Spans from the real SDK covering what the encoder must handle."""
    main, main_out = sdk_provider(Resource.create({"service.name": "modelway-proxy", "k8s.pod.name": "pod-ü"}))
    other, other_out = sdk_provider(
        Resource({"service.name": "other", "n": 3}, schema_url="https://x/schema/1.2"),
        span_limits=SpanLimits(
            max_span_attributes=2, max_events=1, max_links=1, max_event_attributes=1, max_link_attributes=1
        ),
    )
    twin, twin_out = sdk_provider(Resource.create({"service.name": "modelway-proxy", "k8s.pod.name": "pod-ü"}))
    tracer = main.get_tracer("modelway.proxy")
    scoped = main.get_tracer("lib", "1.2.3", schema_url="https://s/1", attributes={"scope.attr": "v", "n": 1})

    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "empty": "",
        "unicode": "héllo wörld ✓ 🚀 日本語",
        "int": 42,
        "zero": 0,
        "negative": -7,
        "big": 2**62,
        "min": -(2**63),
        "float": 0.25,
        "neg_float": -1.5e300,
        "float_zero": 0.0,
        "true": True,
        "false": False,
        "finish_reasons": ("stop", "length"),
        "ints": (1, -2, 3),
        "floats": (1.5, 2.5),
        "bools": (True, False),
        "empty_tuple": (),
        "with_none": ("a", None),
        "long": "x" * 300,
        "longer": "y" * 20000,
    }
    app_parent = SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(1),
        trace_state=TraceState([("vendor", "v1"), ("b", "x")]),
    )
    with tracer.start_as_current_span(
        "chat gpt",
        context=trace.set_span_in_context(NonRecordingSpan(app_parent)),
        kind=SpanKind.SERVER,
        attributes=attributes,
    ) as server:
        server.add_event("gen_ai.fallback", {"from": "a/b", "to": "c/d", "attempt": 2, "tags": ("x",)})
        server.add_event("no attributes")
        attempt = tracer.start_span(
            "chat gpt-4o", kind=SpanKind.CLIENT, attributes={"server.port": 443, "http.response.status_code": 503}
        )
        attempt.set_status(Status(StatusCode.ERROR, "upstream said 503 — unavailable"))
        attempt.end()
        ok = tracer.start_span("ok", kind=SpanKind.CLIENT)
        ok.set_status(Status(StatusCode.OK))
        ok.end()
        server.set_status(StatusCode.ERROR)
    local_link = SpanContext(1, 2, is_remote=False)
    remote_link = SpanContext(2**128 - 1, 2**64 - 1, is_remote=True, trace_flags=TraceFlags(1))
    with scoped.start_as_current_span(
        "linked", kind=SpanKind.PRODUCER, links=[Link(local_link), Link(remote_link, {"link.attr": "l", "n": 5})]
    ):
        pass
    with scoped.start_as_current_span("", kind=SpanKind.CONSUMER):  # empty name
        pass
    tracer_other = other.get_tracer("other-scope")
    with tracer_other.start_as_current_span(
        "dropping",
        kind=SpanKind.INTERNAL,
        attributes={"a": 1, "b": 2, "c": 3, "d": 4},
        links=[Link(local_link), Link(remote_link, {"x": 1, "y": 2})],
    ) as span:
        span.add_event("e1", {"p": 1, "q": 2})
        span.add_event("e2")
        span.add_event("e3", timestamp=1)
    with twin.get_tracer("modelway.proxy").start_as_current_span("twin resource"):
        pass
    with main.get_tracer("").start_as_current_span("no scope name"):
        pass
    spans = list(main_out.get_finished_spans()) + list(other_out.get_finished_spans())
    twin_spans = list(twin_out.get_finished_spans())
    # interleave so grouping by resource and scope is exercised
    return [spans[0], spans[3], twin_spans[0], spans[5], spans[1], *spans[6:], spans[2], spans[4]]


def test_bytes_decode_to_the_official_encoders_message():
    spans = _varied_spans()
    assert len(spans) == 8
    mine = ExportTraceServiceRequest.FromString(encode_spans(spans))
    official = official_encode(spans)
    assert mine == official, f"mine:\n{mine}\nofficial:\n{official}"
    # equal down to the bytes in canonical form, and grouped the same way
    assert mine.SerializeToString(deterministic=True) == official.SerializeToString(deterministic=True)
    assert len(mine.resource_spans) == 2 and len(mine.resource_spans[0].scope_spans) == 3


@pytest.mark.parametrize("index", range(8))
def test_each_span_alone_matches(index):
    span = _varied_spans()[index]
    encoder = SpanEncoder()
    for _ in range(2):  # the second pass runs from the caches
        assert ExportTraceServiceRequest.FromString(encoder.encode([span])) == official_encode([span])


def test_empty_batch_and_unencodable_attribute_is_skipped(caplog):
    assert encode_spans([]) == b""
    provider, out = sdk_provider(Resource({}))
    with provider.get_tracer("t").start_as_current_span("s") as span:
        span.set_attribute("ok", 1)
        span._attributes._dict["huge"] = 2**70  # past int64: the official encoder drops it too
    [finished] = out.get_finished_spans()
    with caplog.at_level(logging.WARNING, LOGGER):
        mine = ExportTraceServiceRequest.FromString(encode_spans([finished]))
    [kv] = mine.resource_spans[0].scope_spans[0].spans[0].attributes
    assert kv.key == "ok" and "huge" in caplog.text


def test_the_encoder_keeps_no_prompt_text_and_little_for_values_that_do_not_repeat():
    """The encoder caches the attributes that repeat (models, backends, status codes), not what it
    sees once: a captured prompt is not kept after its span is encoded, and distinct token counts
    leave little behind (in a sidecar the encoder lives as long as the process)."""
    provider, out = sdk_provider(Resource({}))
    tracer = provider.get_tracer("t")
    prompt = "".join(["user: what is in this contract? " * 20, "end"])  # (made at run time: not interned)
    with tracer.start_as_current_span("s", attributes={"gen_ai.input.messages": prompt, "model": "gpt-4o"}):
        pass
    for n in range(4000):
        with tracer.start_as_current_span("s", attributes={"gen_ai.usage.input_tokens": 1000 + n}):
            pass
    spans = list(out.get_finished_spans())
    encoder = SpanEncoder()
    references = sys.getrefcount(prompt)
    encoder.encode(spans[:1])
    assert sys.getrefcount(prompt) == references
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for span in spans[1:]:  # one by one: only the encoder's caches outlive each call
            encoder.encode([span])
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 128 * 1024, f"the encoder kept {kept // 1024} KiB for 4,000 distinct token counts"
