"""A provider URL the client cannot use fails that backend, never the request: the next one serves.

Snapshots refuse such URLs (proxy/snapshot/), so this is defence in depth: a snapshot built
around the checks (`force_setattr` skips them) stands in for a validation gap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import openai
import pytest
from aiohttp import web

from proxy.http_request import UnusableURL, parse_target
from proxy.runtime import Runtime, RuntimeHolder
from proxy.server import ServerSettings, build_app
from proxy.snapshot import parse_snapshot
from proxy.telemetry.facade import Telemetry
from tests.fakes.server import DEFAULT_KEYS
from tests.integration.sidecar import free_port


@pytest.mark.parametrize(
    "url", ["http://", "http://llm.internal:99999/v1", "http://[::1/v1", "ftp://x/v1", "http://bücher.example/v1"]
)
def test_the_client_calls_an_unusable_url_by_its_name(url: str) -> None:
    with pytest.raises(UnusableURL, match="the provider URL cannot be used"):
        parse_target(url + "/chat/completions", "modelway")


@pytest.fixture
async def sidecar(fake_openai_process: Any) -> AsyncIterator[str]:
    snapshot = parse_snapshot(
        {
            "providers": [
                {"name": "broken", "type": "openai", "baseUrl": "http://placeholder.invalid/v1", "apiKey": "sk-x"},
                {
                    "name": "good",
                    "type": "openai",
                    "baseUrl": fake_openai_process.base_url + "/v1",
                    "apiKey": DEFAULT_KEYS["openai"],
                },
            ],
            "routes": [
                {
                    "name": "m",
                    "model": "m",
                    "rules": [
                        {
                            "backends": [{"provider": "broken", "model": "gpt-4o"}],
                            "fallbacks": [{"provider": "good", "model": "gpt-4o-mini"}],
                            "retry": {"attempts": 3},
                        }
                    ],
                }
            ],
        }
    )
    msgspec.structs.force_setattr(snapshot.providers[0], "base_url", "http://llm.internal:99999/v1")
    holder = RuntimeHolder()
    holder.swap(Runtime.build(snapshot))
    runner = web.AppRunner(build_app(holder=holder, telemetry=Telemetry(), settings=ServerSettings()))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


async def test_the_next_backend_serves(sidecar: str, fake_openai: Any) -> None:
    client = openai.AsyncOpenAI(base_url=sidecar, api_key="unused", max_retries=0)
    answer = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert answer.model == "gpt-4o-mini"
    await client.close()
