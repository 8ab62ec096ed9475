"""The official SDKs' built-in retry does the right thing with the refusals `proxy.limits.headers` writes:
it waits what retry-after-ms says and then gets through, and it does not retry a spent budget.

A small aiohttp server stands in for the sidecar's admit stage: an in-process limiter, and the
refusal rendered by the real front ends."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web

from proxy.frontends.anthropic_messages import AnthropicFrontend
from proxy.frontends.openai_chat import OpenAIFrontend
from proxy.limits.headers import rate_limit_headers, refusal_error
from proxy.limits.memory import InProcessLimiter
from proxy.limits.model import Counter
from tests.limits_support.semantics import counter, demand

CHAT = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "chat",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}  # fmt: skip
MESSAGE = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "chat", "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn", "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1},
}  # fmt: skip


class Gate:
    def __init__(self, counters: list[Counter]) -> None:
        self.counters = counters
        self.limiter = InProcessLimiter()
        self.calls = 0

    async def admit(self, request: web.Request, api: Any) -> web.Response:
        self.calls += 1
        decision = await self.limiter.reserve(self.counters, PRICED, lease_seconds=30)
        if decision.allowed:
            body = CHAT if api == "openai" else MESSAGE
            return web.json_response(body, headers=rate_limit_headers(decision.states, api=api, now=time.time()))
        error = refusal_error(decision, api=api, now=time.time())
        frontend = OpenAIFrontend() if api == "openai" else AnthropicFrontend()
        return web.json_response(frontend.error_body(error), status=error.status, headers=error.headers)


@pytest.fixture
async def gate_url(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Gate, str]]:
    gate = Gate(request.param)

    async def chat(req: web.Request) -> web.Response:
        return await gate.admit(req, "openai")

    async def messages(req: web.Request) -> web.Response:
        return await gate.admit(req, "anthropic")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield gate, f"http://127.0.0.1:{port}"
    await runner.cleanup()


PRICED = demand(price_in=1.0)
RATE = [counter("requests", 60, name="team-rate")]  # one request a second
BUDGET = [counter("usd_day", 0, name="daily")]  # spent from the start


async def _exhaust(gate: Gate) -> None:
    while (await gate.limiter.reserve(gate.counters, PRICED, lease_seconds=30)).allowed:
        pass


@pytest.mark.parametrize("gate_url", [RATE], indirect=True)
async def test_the_openai_sdk_waits_retry_after_ms_and_gets_through(gate_url: tuple[Gate, str]) -> None:
    gate, url = gate_url
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="placeholder", max_retries=2)
    await _exhaust(gate)
    began = time.monotonic()
    raw = await client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "x"}]
    )
    assert raw.parse().choices[0].message.content == "hi"
    assert gate.calls == 2 and time.monotonic() - began >= 0.9  # refused once, waited ~1 s, served
    assert raw.headers["x-ratelimit-limit-requests"] == "60"


@pytest.mark.parametrize("gate_url", [RATE], indirect=True)
async def test_the_anthropic_sdk_waits_and_gets_through(gate_url: tuple[Gate, str]) -> None:
    gate, url = gate_url
    client = anthropic.AsyncAnthropic(base_url=url, api_key="placeholder", max_retries=2)
    await _exhaust(gate)
    began = time.monotonic()
    message = await client.messages.create(model="chat", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert message.content[0].text == "hi"  # type: ignore[union-attr]
    assert gate.calls == 2 and time.monotonic() - began >= 0.9


@pytest.mark.parametrize("gate_url", [BUDGET], indirect=True)
async def test_neither_sdk_retries_a_spent_budget_and_both_show_whose_it_is(gate_url: tuple[Gate, str]) -> None:
    gate, url = gate_url
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="placeholder", max_retries=2)
    with pytest.raises(openai.RateLimitError) as refused:
        await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    assert gate.calls == 1 and refused.value.code == "insufficient_quota"
    assert "limit daily of ModelPolicy team-a/caps is spent" in refused.value.message
    claude = anthropic.AsyncAnthropic(base_url=url, api_key="placeholder", max_retries=2)
    with pytest.raises(anthropic.RateLimitError) as spent:
        await claude.messages.create(model="chat", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert gate.calls == 2 and "limit daily of ModelPolicy team-a/caps is spent" in str(spent.value)
