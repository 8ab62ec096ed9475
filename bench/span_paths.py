"""`make bench`: the lean span recorder against the OpenTelemetry SDK, side by side in one run.

The sidecar records its spans with its own lean recorder (`proxy.telemetry.tracing`) and
encodes them with its own OTLP writer (`proxy.telemetry.otlp_encode`) instead of the SDK's
TracerProvider, BatchSpanProcessor and protobuf encoder. This measures why, on the same
calls: per request, what the sidecar does (a SERVER span under an app's traceparent with the
route's attributes, a CLIENT span for the provider call, an attribute or two on each, both
ended), through the OpenTelemetry API, then every span exported by the path's own
processor thread to an exporter that encodes the batch and drops the bytes (the lean path's
spans are encoded as they end, on the calling thread, and its exporter drops the request; the
network is the same for all; what differs is the Python around it):

  - lean:        LeanTracerProvider + the lean encoder (the sidecar's default)
  - sdk+lean:    the SDK's TracerProvider + BatchSpanProcessor + the lean encoder
                 (MODELWAY_TRACER=sdk, the escape hatch)
  - sdk:         the SDK's TracerProvider + BatchSpanProcessor + the official protobuf
                 encoder (what opentelemetry-exporter-otlp-proto-http does before posting)
  - off:         the API's NoOpTracer (the floor)

Reported per path: CPU per request on the calling thread (the sidecar's event loop), CPU per
request of the whole process (the export thread included: on a one-core sidecar both come
out of the same core), and recorded spans per second of that CPU. Rounds alternate the
paths' order; medians are shown.

    python -m bench.span_paths [--requests 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags

from proxy.telemetry.lean_span import SharedAttributes
from proxy.telemetry.otlp_encode import Buffer, SpanEncoder
from proxy.telemetry.sampling import LeanResource, Sampler
from proxy.telemetry.tracing import LeanTracerProvider

SERVICE = {"service.name": "modelway-proxy-bench", "k8s.pod.name": "app-7d9f-abcde"}
ROUTE = SharedAttributes(
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "bench",
        "modelway.route": "bench",
        "modelway.rule": "default",
        "modelway.data_class": "internal",
        "modelway.policy.decision": "allowed",
    }
)
BACKEND = SharedAttributes(
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "bench-upstream-model",
        "server.address": "api.openai.example",
        "server.port": 443,
        "modelway.backend": "bench-upstream/bench-upstream-model",
        "modelway.attempt": 1,
        "modelway.fallback": False,
    }
)


class EncodingExporter(SpanExporter):
    """Encodes each batch as the named path's exporter would, then drops the bytes; for the lean
    path, takes the request its queue encoded (spans encoded as they end) and drops it."""

    def __init__(self, encode: Callable[[Sequence[Any]], bytes] | None = None) -> None:
        self.encode, self.spans, self.bytes = encode, 0, 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        assert self.encode is not None
        self.bytes += len(self.encode(spans))
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def export_encoded(self, body: Buffer | Sequence[Buffer], count: int) -> SpanExportResult:
        self.bytes += len(body) if isinstance(body, bytes | bytearray) else sum(map(len, body))
        self.spans += count
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _official_encode(spans: Sequence[Any]) -> bytes:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    message: Any = encode_spans(spans)
    return bytes(message.SerializeToString())


def _lean_encode() -> Callable[[Sequence[Any]], bytes]:
    return SpanEncoder().encode  # one per exporter, its caches kept, as in OTLPHttpSpanExporter


def build(path: str, queue: int) -> tuple[trace.Tracer, Any, EncodingExporter | None]:
    """(tracer, provider, exporter) for one path; the queue holds a whole round, so nothing is dropped."""
    if path == "off":
        return trace.NoOpTracer(), None, None
    if path == "lean":
        exporter = EncodingExporter()
        provider: Any = LeanTracerProvider(
            exporter,
            resource=LeanResource(SERVICE),
            sampler=Sampler("always_on"),
            environ={},
            max_queue_size=queue,
            max_export_batch_size=512,
        )
        return provider.get_tracer("modelway.proxy"), provider, exporter
    exporter = EncodingExporter(_lean_encode() if path == "sdk+lean" else _official_encode)
    provider = TracerProvider(resource=Resource(SERVICE), sampler=ALWAYS_ON)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=queue, max_export_batch_size=512))
    return provider.get_tracer("modelway.proxy"), provider, exporter


def requests(tracer: trace.Tracer, n: int) -> None:
    """What the sidecar records per request, through the API."""
    parent = trace.set_span_in_context(
        NonRecordingSpan(SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True, TraceFlags(1))),
        Context(),
    )
    start_span, server_kind, client_kind = tracer.start_span, SpanKind.SERVER, SpanKind.CLIENT
    for _ in range(n):
        server = start_span("chat bench", context=parent, kind=server_kind, attributes=ROUTE)
        client = start_span(
            "chat bench-upstream-model",
            context=trace.set_span_in_context(server, Context()),
            kind=client_kind,
            attributes=BACKEND,
        )
        client.set_attribute("http.response.status_code", 200)
        client.end()
        server.set_attributes(
            {
                "modelway.backend": "bench-upstream/bench-upstream-model",
                "gen_ai.response.model": "bench-upstream-model",
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.usage.output_tokens": 40,
                "modelway.cost.usd": 0.00031,
            }
        )
        server.set_status(StatusCode.UNSET)
        server.end()


def measure(path: str, n: int) -> dict[str, float]:
    tracer, provider, exporter = build(path, queue=2 * n + 1024)
    requests(tracer, 200)  # warm the caches and the import of the official encoder
    if provider is not None:
        provider.force_flush(30_000)
    gc.collect()
    thread0, process0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
    requests(tracer, n)
    thread1 = time.thread_time()
    if provider is not None:
        provider.force_flush(60_000)  # the export thread's work counts too
    process1, wall1 = time.process_time(), time.perf_counter()
    exported = exporter.spans if exporter is not None else 0
    if provider is not None:
        provider.shutdown()
    if exporter is not None and exported < 2 * (n + 200):
        raise SystemExit(f"bench.span_paths: {path} exported {exported} of {2 * (n + 200)} spans")
    process_us = 1e6 * (process1 - process0) / n
    return {
        "loop_us": 1e6 * (thread1 - thread0) / n,
        "process_us": process_us,
        "spans_per_s": 2e6 / process_us if process_us else 0.0,
        "wall_us": 1e6 * (wall1 - wall0) / n,
        "bytes_per_span": exporter.bytes / exported if exporter and exported else 0.0,
    }


PATHS = ("lean", "sdk+lean", "sdk", "off")


def run(n: int, rounds: int) -> dict[str, dict[str, float]]:
    results: dict[str, list[dict[str, float]]] = {p: [] for p in PATHS}
    for round_ in range(rounds):
        order = PATHS[round_ % len(PATHS) :] + PATHS[: round_ % len(PATHS)]
        for path in order:
            results[path].append(measure(path, n))
    medians = {p: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for p, rs in results.items()}
    lean = medians["lean"]
    print(
        f"\nSpan recording and export, {n:,} requests (2 spans each) x {rounds} rounds, medians; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(f"{'path':<10}| {'loop CPU us/req':>15} | {'process CPU us/req':>18} | {'spans/s of CPU':>14} | vs lean")
    for path, m in medians.items():
        ratio = m["process_us"] / lean["process_us"] if lean["process_us"] else 0.0
        print(
            f"{path:<10}| {m['loop_us']:>15.1f} | {m['process_us']:>18.1f} | {m['spans_per_s']:>14,.0f} | "
            + ("-" if path in ("lean", "off") else f"{ratio:.1f}x the CPU")
        )
    print(
        "loop CPU: the thread that makes the spans (the sidecar's event loop; lean: encoding them too); "
        "process CPU: that and the export thread (encoding them, but for lean; one core in a sidecar)"
    )
    return medians


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.span_paths", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    run(args.requests, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
