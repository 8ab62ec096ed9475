"""Build and serve a fake by provider name, in this process or (see process.py) another."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from . import anthropic_fake, bedrock_fake, gemini_fake, openai_fake, vertex_fake

Provider = Literal["openai", "anthropic", "gemini", "bedrock", "vertex"]
PROVIDERS: tuple[Provider, ...] = ("openai", "anthropic", "gemini", "bedrock", "vertex")
DEFAULT_KEYS: dict[Provider, str] = {
    "openai": "sk-fake-openai-key",
    "anthropic": "sk-ant-fake-key",
    "gemini": "fake-gemini-key",
    # "<access key id>:<secret access key>" (the fake also takes the whole string as a Bedrock API key)
    "bedrock": "AKIAFAKEBEDROCK12345:fAkE/bedrock+SecretAccessKey0123456789ab",
    "vertex": "fake-vertex-express-key",  # (OAuth access tokens are checked by signature, not by value)
}


def build_app(provider: Provider, api_key: str) -> web.Application:
    factories = {
        "openai": openai_fake.create_app,
        "anthropic": anthropic_fake.create_app,
        "gemini": gemini_fake.create_app,
        "bedrock": bedrock_fake.create_app,
        "vertex": vertex_fake.create_app,
    }
    return factories[provider](api_key)


@dataclass(frozen=True)
class Serving:
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[Serving]:
    """Serve ``app`` in the running loop (port 0: a free one) until the block ends."""
    # No access log: the fakes run inside test output. Handler cancellation, so a
    # caller hanging up is noticed at once (tests check the sidecar does hang up).
    runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        yield Serving(port=int(runner.addresses[0][1]))
    finally:
        await runner.cleanup()
