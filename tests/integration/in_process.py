"""The sidecar's app served in this process on a loopback port, an OpenAI client pointed at it, and
the spans it records kept in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def recorded_spans() -> tuple[InMemorySpanExporter, TracerProvider]:
    """A tracer provider whose finished spans the exporter keeps."""
    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, provider


@asynccontextmanager
async def serving(app: web.Application, *, handler_cancellation: bool = False) -> AsyncIterator[openai.AsyncOpenAI]:
    """`app` on a free loopback port while the block runs; an OpenAI client for it (no retries)."""
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{runner.addresses[0][1]}/v1", api_key="x", max_retries=0)
    try:
        yield client
    finally:
        await client.close()
        await runner.cleanup()
