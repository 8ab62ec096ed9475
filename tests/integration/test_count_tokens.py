"""Anthropic's count_tokens through the sidecar with the official SDK: counted by the backend that
would serve the call (Anthropic and Gemini have counting endpoints), a 400 naming the backend where
it has none."""

from __future__ import annotations

import anthropic
import pytest

TOOL = {
    "name": "lookup",
    "description": "Look a thing up",
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}


@pytest.mark.parametrize("route", ["claude", "gemini"])
def test_count_tokens_by_the_serving_backend(claude, fake_anthropic, fake_gemini, route):
    counted = claude.messages.count_tokens(
        model=route, system="be brief", messages=[{"role": "user", "content": "hello there you"}], tools=[TOOL]
    )
    # The fakes count words of system and messages: the same request made as a call reports the same.
    made = claude.messages.create(
        model=route, max_tokens=50, system="be brief", messages=[{"role": "user", "content": "hello there you"}]
    )
    assert counted.input_tokens == made.usage.input_tokens == 5
    fake = fake_anthropic if route == "claude" else fake_gemini
    paths = [r["path"] for r in fake.requests()]
    assert any(p.endswith("/v1/messages/count_tokens") or p.endswith(":countTokens") for p in paths)


def test_count_tokens_sends_the_upstream_model_and_no_output_fields(claude, fake_anthropic):
    claude.messages.count_tokens(model="claude", messages=[{"role": "user", "content": "hi"}])
    sent = next(r for r in fake_anthropic.requests() if r["path"].endswith("/count_tokens"))
    assert sent["json"]["model"] == "claude-sonnet-4-5"
    assert "max_tokens" not in sent["json"] and "stream" not in sent["json"]


@pytest.mark.parametrize("route", ["gpt", "azure"])
def test_count_tokens_on_a_backend_without_counting_is_a_400_naming_it(claude, route):
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.count_tokens(model=route, messages=[{"role": "user", "content": "hi"}])
    assert "cannot count tokens" in caught.value.message
    assert "openai" in caught.value.message


def test_count_tokens_malformed_body_names_the_field(claude):
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.count_tokens(model="claude", messages=[{"role": "robot", "content": "hi"}])
    assert "role" in caught.value.message
