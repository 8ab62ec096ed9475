"""Same-API pass-through through a real sidecar: an Anthropic SDK call to an Anthropic backend (direct or
Bedrock InvokeModel) and an OpenAI SDK call to an OpenAI backend reach the provider as the app sent them
(but the model), and the provider's answer reaches the app as sent, plain and streamed; across APIs
(a fallback) the request is translated; cached input tokens are priced at the cached price."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.fakes.anthropic_fake import CACHED_TOKENS, THINKING_SIGNATURE, THINKING_TEXT
from tests.fakes.process import FakeProviderProcess
from tests.fakes.server import DEFAULT_KEYS
from tests.integration.passthrough_support import FUTURE, assert_passed_through, route
from tests.integration.sidecar import SidecarProcess

CLAUDE = "claude-sonnet-4-5"
BEDROCK_CLAUDE = "anthropic.claude-sonnet-4-5-20250929-v1:0"
AWS_KEY_ID, _, AWS_SECRET = DEFAULT_KEYS["bedrock"].partition(":")
PRICE_IN, PRICE_OUT, PRICE_CACHED, PRICE_CACHE_WRITE = 3.0, 15.0, 0.3, 3.75  # USD per million tokens

TOOL = {
    "name": "lookup",
    "description": "Look a thing up",
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    "cache_control": {"type": "ephemeral"},
}
# Every field the internal form has no place for, and one no API has yet.
FEATURES: dict[str, Any] = {
    "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "tools": [TOOL],
    "metadata": {"user_id": "user-42"},
    "stop_sequences": ["STOP"],
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "document",
                    "source": {"type": "text", "media_type": "text/plain", "data": "The grass is green."},
                    "title": "Facts",
                    "citations": {"enabled": True},
                },
                {"type": "text", "text": "hello there STOP and more"},
            ],
        }
    ],
}


@pytest.fixture(scope="module")
def passing(
    fake_anthropic_process: FakeProviderProcess,
    fake_openai_process: FakeProviderProcess,
    fake_bedrock_process: FakeProviderProcess,
) -> Iterator[SidecarProcess]:
    snapshot = {
        "providers": [
            {
                "name": "claude",
                "type": "anthropic",
                "baseUrl": fake_anthropic_process.base_url,
                "apiKey": DEFAULT_KEYS["anthropic"],
                "pricing": {
                    CLAUDE: {
                        "inputPerMillion": PRICE_IN,
                        "outputPerMillion": PRICE_OUT,
                        "cachedInputPerMillion": PRICE_CACHED,
                        "cacheWritePerMillion": PRICE_CACHE_WRITE,
                    }
                },
            },
            {
                "name": "oai",
                "type": "openai",
                "baseUrl": fake_openai_process.base_url + "/v1",
                "apiKey": DEFAULT_KEYS["openai"],
            },
            {
                "name": "bedrock-claude",
                "type": "bedrock",
                "baseUrl": fake_bedrock_process.base_url,
                "bedrock": {
                    "region": "eu-central-1",
                    "api": "anthropic-messages",
                    "credentials": {"accessKeyId": AWS_KEY_ID, "secretAccessKey": AWS_SECRET},
                },
            },
        ],
        "routes": [
            route("claude", "claude", CLAUDE),
            route("gpt", "oai", "gpt-4o"),
            route("claude-or-gpt", "claude", CLAUDE, fallback=("oai", "gpt-4o")),
            route("invoke", "bedrock-claude", BEDROCK_CLAUDE),
        ],
    }
    with SidecarProcess(snapshot) as process:
        yield process


@pytest.fixture
def claude(passing: SidecarProcess, fake_anthropic: Any, fake_openai: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=passing.base_url, api_key="placeholder", max_retries=0, timeout=20)


@pytest.fixture
def oai(passing: SidecarProcess, fake_anthropic: Any, fake_openai: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=passing.base_url + "/v1", api_key="placeholder", max_retries=0, timeout=20)


def _direct(fake: FakeProviderProcess, body: dict[str, Any]) -> str:
    """The fake's own answer to `body` (what the provider sends), without the sidecar."""
    headers = {"x-api-key": DEFAULT_KEYS["anthropic"], "anthropic-version": "2023-06-01"}
    headers["content-type"] = "application/json"
    request = urllib.request.Request(fake.base_url + "/v1/messages", json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=10) as resp:
        return str(resp.read().decode())


def _events(text: str) -> list[tuple[str | None, Any]]:
    """SSE text -> (event name, data as JSON) per event, message ids made equal (the fake draws new ones)."""
    out: list[tuple[str | None, Any]] = []
    for block in re.split(r"\r?\n\r?\n", text.strip()):
        name = next((line[6:].strip() for line in block.splitlines() if line.startswith("event:")), None)
        data = "\n".join(line[5:].lstrip() for line in block.splitlines() if line.startswith("data:"))
        event = json.loads(data)
        if event.get("type") == "message_start":
            event["message"]["id"] = "msg"
        out.append((name, event))
    return out


def _same_id(text: str) -> str:
    """The text with its message id made equal (the fake draws a new one per answer)."""
    return re.sub(r'"id": ?"msg_[A-Za-z0-9]+"', '"id": "msg"', text)


def test_an_anthropic_request_reaches_anthropic_as_sent_and_its_answer_comes_back_as_sent(
    claude: anthropic.Anthropic, fake_anthropic: FakeProviderProcess
) -> None:
    raw = claude.messages.with_raw_response.create(model="claude", max_tokens=2048, extra_body=FUTURE, **FEATURES)
    assert len(fake_anthropic.requests()) == 1
    received = assert_passed_through(fake_anthropic, FEATURES, max_tokens=2048, model=CLAUDE)
    assert received["headers"]["x-api-key"] == DEFAULT_KEYS["anthropic"]  # the provider's key, not the app's
    assert received["headers"]["anthropic-version"] == raw.http_request.headers["anthropic-version"]
    expected = _direct(fake_anthropic, received["json"])
    assert _same_id(raw.http_response.content.decode()) == _same_id(expected)  # the provider's bytes, unchanged

    message = raw.parse()
    thinking, text = message.content
    assert (thinking.type, thinking.thinking, thinking.signature) == ("thinking", THINKING_TEXT, THINKING_SIGNATURE)
    assert text.type == "text" and text.text == "echo: hello there "
    assert text.citations and text.citations[0].document_title == "Facts"
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "STOP")
    assert message.usage.cache_read_input_tokens == CACHED_TOKENS


def test_an_anthropic_stream_comes_back_event_by_event(
    claude: anthropic.Anthropic, fake_anthropic: FakeProviderProcess
) -> None:
    with claude.messages.with_streaming_response.create(
        model="claude", max_tokens=2048, stream=True, extra_body=FUTURE, **FEATURES
    ) as response:
        streamed = response.read().decode()
    assert len(fake_anthropic.requests()) == 1
    received = assert_passed_through(fake_anthropic, FEATURES, max_tokens=2048, model=CLAUDE, stream=True)
    expected = _direct(fake_anthropic, received["json"])
    assert _events(streamed) == _events(expected)  # event by event
    assert _same_id(streamed) == _same_id(expected)  # and byte for byte
    kinds = [event["delta"]["type"] for _, event in _events(streamed) if event["type"] == "content_block_delta"]
    assert {"thinking_delta", "signature_delta", "citations_delta", "text_delta"} <= set(kinds)

    with claude.messages.stream(model="claude", max_tokens=2048, **FEATURES) as stream:  # as the SDK reads it
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].signature == THINKING_SIGNATURE  # type: ignore[union-attr]
    assert final.content[1].citations  # type: ignore[union-attr]
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "STOP")
    assert final.usage.cache_read_input_tokens == CACHED_TOKENS


def test_anthropic_on_bedrock_gets_the_apps_body_in_invoke_model(
    claude: anthropic.Anthropic, fake_bedrock: FakeProviderProcess
) -> None:
    message = claude.messages.create(model="invoke", max_tokens=2048, extra_body=FUTURE, **FEATURES)
    [received] = fake_bedrock.requests()
    assert received["path"].endswith("/invoke")  # the model in the path, none in the body
    assert_passed_through(fake_bedrock, FEATURES, max_tokens=2048, anthropic_version="bedrock-2023-05-31")
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.usage.cache_read_input_tokens == CACHED_TOKENS

    with claude.messages.stream(model="invoke", max_tokens=2048, **FEATURES) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].signature == THINKING_SIGNATURE  # type: ignore[union-attr]
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "STOP")


def test_an_openai_request_reaches_openai_with_every_field(
    oai: openai.OpenAI, fake_openai: FakeProviderProcess
) -> None:
    fields: dict[str, Any] = {
        "messages": [{"role": "user", "content": "hello there"}],
        "service_tier": "flex",
        "logprobs": True,
        "top_logprobs": 2,
        "prediction": {"type": "content", "content": "echo: hello there"},
    }
    raw = oai.chat.completions.with_raw_response.create(model="gpt", extra_body=FUTURE, **fields)
    assert len(fake_openai.requests()) == 1
    assert_passed_through(fake_openai, fields, path="/v1/chat/completions", model="gpt-4o")
    assert raw.parse().choices[0].message.content == "echo: hello there"

    stream = oai.chat.completions.create(model="gpt", stream=True, extra_body=FUTURE, **fields)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: hello there"
    # the usage chunk is asked for (limits and cost need it) and hidden from an app that did not ask
    stream_options = {"include_usage": True}
    assert_passed_through(fake_openai, fields, model="gpt-4o", stream=True, stream_options=stream_options)


def test_a_fallback_to_another_api_is_translated(
    claude: anthropic.Anthropic, fake_anthropic: FakeProviderProcess, fake_openai: FakeProviderProcess
) -> None:
    fake_anthropic.script([{"status": 529}])
    features = {k: v for k, v in FEATURES.items() if k != "messages"}
    messages = [{"role": "user", "content": "hello there"}]
    message = claude.messages.create(model="claude-or-gpt", max_tokens=2048, messages=messages, **features)
    [received] = fake_openai.requests()
    body = received["json"]
    assert body["model"] == "gpt-4o" and body["messages"][-1] == {"role": "user", "content": "hello there"}
    assert "thinking" not in body and "cache_control" not in json.dumps(body)  # cannot cross: dropped
    assert message.model == "gpt-4o" and message.content[0].text == "echo: hello there"  # type: ignore[union-attr]

    fake_anthropic.script([{"status": 529}])
    with claude.messages.stream(model="claude-or-gpt", max_tokens=2048, messages=messages, **features) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "echo: hello there"  # type: ignore[union-attr]


def test_cached_input_tokens_are_priced_at_the_cached_price(
    claude: anthropic.Anthropic, passing: SidecarProcess
) -> None:
    before = passing.metric("modelway_cost_usd_total")
    message = claude.messages.create(model="claude", max_tokens=2048, **FEATURES)
    usage = message.usage
    assert usage.cache_read_input_tokens == CACHED_TOKENS
    # Anthropic's input_tokens leaves out the cache reads; the sidecar's input counts them, priced apart.
    expected = (usage.input_tokens * PRICE_IN + CACHED_TOKENS * PRICE_CACHED + usage.output_tokens * PRICE_OUT) / 1e6
    assert passing.metric("modelway_cost_usd_total") - before == pytest.approx(expected)
    cached = passing.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="cache_read")
    assert cached >= CACHED_TOKENS


def test_cache_writes_are_priced_at_the_cache_write_price(
    claude: anthropic.Anthropic, passing: SidecarProcess, fake_anthropic: FakeProviderProcess
) -> None:
    for stream in (False, True):
        fake_anthropic.script([{"cache_write": True}])  # the prompt's first time: written to the cache
        before = passing.metric("modelway_cost_usd_total")
        if stream:
            with claude.messages.stream(model="claude", max_tokens=2048, **FEATURES) as events:
                usage = events.get_final_message().usage
        else:
            usage = claude.messages.create(model="claude", max_tokens=2048, **FEATURES).usage
        assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (CACHED_TOKENS, 0)
        written = CACHED_TOKENS * PRICE_CACHE_WRITE
        expected = (usage.input_tokens * PRICE_IN + written + usage.output_tokens * PRICE_OUT) / 1e6
        assert passing.metric("modelway_cost_usd_total") - before == pytest.approx(expected)
