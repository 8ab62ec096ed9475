"""Same-API pass-through (`proxy.request.passthrough`, `proxy.providers.anthropic_events.RawEventDecoder`): which
attempts send the app's own body, and Anthropic events handed on as they came, still checked."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.frontends.anthropic_messages import AnthropicFrontend
from proxy.frontends.openai_chat import OpenAIFrontend
from proxy.providers.anthropic import AnthropicTranslator
from proxy.providers.anthropic_events import RawEventDecoder
from proxy.providers.base import UpstreamProtocolError
from proxy.providers.gemini import GeminiTranslator
from proxy.providers.openai import OpenAITranslator
from proxy.redaction.table import RedactionTable
from proxy.request.passthrough import Passthrough
from proxy.request.redact import Masking
from proxy.request.relay import _has_content
from proxy.snapshot import Backend, BackendRedaction, ModelPricing, Policy, Provider, Redaction
from proxy.telemetry.backends import BackendInfo

CLAUDE = Provider(name="claude", type="anthropic", base_url="https://api.anthropic.com", api_key="sk-ant-test")
OPENAI = Provider(name="oai", type="openai", base_url="https://api.openai.com/v1", api_key="sk-test")
GEMINI = Provider(name="gem", type="gemini", base_url="https://generativelanguage.googleapis.com", api_key="g")
BODY: dict[str, Any] = {
    "model": "claude",
    "max_tokens": 1024,
    "thinking": {"type": "enabled", "budget_tokens": 512},
    "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "hello"}],
    "some_future_field": [1, {"x": None}],
}


def _masking(masked: str | None = None) -> Masking:
    if masked is None:
        return Masking(RedactionTable.build(Policy()), "personal")
    provider, _, model = masked.partition("/")
    redacted = BackendRedaction(
        provider=provider,
        model=model,
        data_classes=("personal",),
        policy="ModelPolicy a/mask",
        redaction=Redaction(kinds=("email",)),
    )
    return Masking(RedactionTable.build(Policy(redacted_backends=(redacted,))), "personal")


def _passthrough(masking: Masking, body: dict[str, Any] = BODY, **headers: str) -> Passthrough:
    frontend = AnthropicFrontend()
    return Passthrough(frontend=frontend, parsed=frontend.parse_chat(body), headers=headers, masking=masking)


def _translated(translator: Any, backend: Backend) -> Any:
    return "translated"


def test_an_anthropic_backend_gets_the_apps_body_with_its_model_and_key() -> None:
    passing = _passthrough(_masking(), **{"anthropic-beta": "context-1m-2025-08-07", "anthropic-version": "2023-06-01"})
    backend = Backend(provider="claude", model="claude-sonnet-4-5")
    upstream = passing.build(_translated, stream=False)(AnthropicTranslator(CLAUDE), backend)
    assert json.loads(upstream.body) == {**BODY, "model": "claude-sonnet-4-5"}
    assert upstream.headers["x-api-key"] == "sk-ant-test"
    assert upstream.headers["anthropic-beta"] == "context-1m-2025-08-07"
    assert passing.sent_as_is(backend.key)


def test_other_apis_and_masked_backends_get_the_translated_request() -> None:
    backend = Backend(provider="oai", model="gpt-4o")
    passing = _passthrough(_masking())
    assert passing.build(_translated, stream=False)(OpenAITranslator(OPENAI), backend) == "translated"
    assert passing.build(_translated, stream=False)(GeminiTranslator(GEMINI), backend) == "translated"
    assert not passing.sent_as_is(backend.key)
    # masking is done on the internal form, and its answer's values restored: the translated path
    masked = Backend(provider="claude", model="claude-sonnet-4-5")
    passing = _passthrough(_masking("claude/claude-sonnet-4-5"))
    assert passing.build(_translated, stream=True)(AnthropicTranslator(CLAUDE), masked) == "translated"
    assert not passing.sent_as_is(masked.key)


def test_an_openai_app_gets_openai_backends_as_sent() -> None:
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "service_tier": "flex", "future": 1}
    frontend = OpenAIFrontend()
    passing = Passthrough(frontend=frontend, parsed=frontend.parse_chat(body), headers={}, masking=_masking())
    upstream = passing.build(_translated, stream=False)(OpenAITranslator(OPENAI), Backend(provider="oai", model="m"))
    assert json.loads(upstream.body) == {**body, "model": "m"}


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


STREAM = [
    _sse(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [],
                "usage": {"input_tokens": 5, "cache_read_input_tokens": 1024, "output_tokens": 1},
            },
        },
    ),
    _sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}}),
    _sse(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
    ),
    _sse("ping", {"type": "ping"}),
    _sse(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
    ),
    _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    _sse(
        "message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}
    ),
    _sse("message_stop", {"type": "message_stop"}),
]


def _decoder(max_event_bytes: int = 65536) -> RawEventDecoder:
    translator = AnthropicTranslator(CLAUDE)
    return translator.passthrough_decoder(model="claude-sonnet-4-5", max_event_bytes=max_event_bytes)


@pytest.mark.parametrize("size", [1, 7, 100, 10_000])
def test_events_are_handed_on_as_sent_however_the_bytes_arrive(size: int) -> None:
    data = b"".join(STREAM)
    decoder = _decoder()
    chunks = [c for i in range(0, len(data), size) for c in decoder.feed(data[i : i + size])] + decoder.close()
    assert [getattr(c, "raw") for c in chunks] == STREAM  # noqa: B009  (RawEvent's slot)
    assert [_has_content(c) for c in chunks][:3] == [False, False, True]  # thinking is the first content
    usage = decoder.state.usage
    assert (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == (1029, 7, 1024)
    assert decoder.state.finish_reason == "stop"


def test_the_passed_events_are_still_checked() -> None:
    decoder = _decoder(max_event_bytes=200)
    with pytest.raises(UpstreamProtocolError):
        decoder.feed(_sse("content_block_delta", {"type": "content_block_delta", "pad": "x" * 500}))
    decoder = _decoder()
    with pytest.raises(UpstreamProtocolError, match="before message_start"):
        decoder.feed(STREAM[1])
    decoder = _decoder()
    decoder.feed(b"".join(STREAM[:3]))
    with pytest.raises(UpstreamProtocolError, match="message_stop"):
        decoder.close()  # cut short


def test_cached_input_costs_the_cached_price() -> None:
    pricing = ModelPricing(input_per_million=3, output_per_million=15, cached_input_per_million=0.3)
    info = BackendInfo((), pricing.input_per_million / 1e6, pricing.output_per_million / 1e6, 0.3 / 1e6)
    assert info.cost(1029, 7, 1024) == pytest.approx((5 * 3 + 1024 * 0.3 + 7 * 15) / 1e6)
    unpriced = BackendInfo((), 3 / 1e6, 15 / 1e6)  # no cached price: cached tokens cost the input price
    assert unpriced.cost(1029, 7, 1024) == pytest.approx((1029 * 3 + 7 * 15) / 1e6)
    assert unpriced.cost(1029, 7, None, 1024) == pytest.approx((1029 * 3 + 7 * 15) / 1e6)


def test_cache_writes_cost_the_cache_write_price() -> None:
    info = BackendInfo((), 3 / 1e6, 15 / 1e6, 0.3 / 1e6, 3.75 / 1e6)
    # 2048 written, 1024 read, 5 after the last breakpoint: each part at its own price
    assert info.cost(3077, 7, 1024, 2048) == pytest.approx((5 * 3 + 1024 * 0.3 + 2048 * 3.75 + 7 * 15) / 1e6)
    assert info.cost(100, 0, 0, 500) == pytest.approx(100 * 3.75 / 1e6)  # a bad count never makes it negative
