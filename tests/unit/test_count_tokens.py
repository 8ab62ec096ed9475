"""count_tokens without sockets: the body checked as the messages call it counts, and each counting
provider's request for it."""

from __future__ import annotations

import orjson
import pytest

from proxy.errors import ApiError
from proxy.providers.registry import build_translator
from proxy.request.count_tokens import TokenCounter, parse_count_tokens
from proxy.snapshot import Provider

BODY = {
    "model": "claude",
    "system": "be brief",
    "messages": [{"role": "user", "content": "hi"}],
    "tools": [{"name": "get", "input_schema": {"type": "object"}}],
}


def translator(kind: str) -> object:
    version = "2024-10-21" if kind == "azure-openai" else None
    return build_translator(
        Provider(name="p", type=kind, base_url="https://p.test", api_key="sk-test-123456", api_version=version)
    )


def test_anthropic_counts_with_its_count_tokens_endpoint_and_only_the_fields_it_takes():
    counter = translator("anthropic")
    assert isinstance(counter, TokenCounter)
    upstream = counter.count_tokens_request(parse_count_tokens(BODY).request, model="claude-up")
    assert upstream.url == "https://p.test/v1/messages/count_tokens"
    body = orjson.loads(upstream.body)
    assert set(body) == {"model", "system", "messages", "tools"}
    assert body["model"] == "claude-up" and body["system"] == "be brief"
    assert counter.count_tokens_response(b'{"input_tokens": 12}') == 12


def test_gemini_counts_the_generate_content_request_it_would_send():
    counter = translator("gemini")
    assert isinstance(counter, TokenCounter)
    upstream = counter.count_tokens_request(parse_count_tokens(BODY).request, model="gemini-up")
    assert upstream.url.endswith("/models/gemini-up:countTokens")
    generate = orjson.loads(upstream.body)["generateContentRequest"]
    assert generate["model"] == "models/gemini-up" and generate["contents"]
    assert counter.count_tokens_response(b'{"totalTokens": 7}') == 7


@pytest.mark.parametrize("kind", ["openai", "azure-openai", "openai-compatible"])
def test_openai_shaped_providers_have_no_counting_endpoint(kind):
    assert not isinstance(translator(kind), TokenCounter)


@pytest.mark.parametrize("field", ["max_tokens", "stream"])
def test_fields_of_the_call_but_not_of_counting_are_refused_by_name(field):
    with pytest.raises(ApiError) as caught:
        parse_count_tokens({**BODY, field: 10})
    assert caught.value.param == field
