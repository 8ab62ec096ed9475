"""The Responses API passed through to backends that serve it (OpenAI, Azure OpenAI), through the real
sidecar with the official `openai` SDK: the app's body reaches the provider field by field (but the
model), `previous_response_id`, `store` and built-in tools included, and its answer and event stream
reach the app as sent; usage and cost (cached input tokens at the cached price) are read from the
answer. A fallback to a backend without the API is translated when the request can be; a request
that needs the provider is never sent there."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.fakes.process import FakeProviderProcess
from tests.fakes.server import DEFAULT_KEYS
from tests.integration.passthrough_support import FUTURE, assert_passed_through, route
from tests.integration.sidecar import SidecarProcess

PRICE_IN, PRICE_OUT, PRICE_CACHED = 2.5, 10.0, 1.25  # USD per million tokens
TOOL = {
    "type": "function",
    "name": "lookup",
    "description": "Look a thing up",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}
# Fields the chat form has no place for, built-in tools, and one no API has yet.
FIELDS: dict[str, Any] = {
    "instructions": "be brief",
    "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello there"}]}],
    "tools": [{"type": "web_search"}, TOOL],
    "include": ["web_search_call.action.sources"],
    "metadata": {"team": "search"},
    "truncation": "auto",
    "store": True,
    "max_output_tokens": 100,
    "service_tier": "flex",
}


@pytest.fixture(scope="module")
def responding(
    fake_openai_process: FakeProviderProcess, fake_anthropic_process: FakeProviderProcess
) -> Iterator[SidecarProcess]:
    pricing = {"inputPerMillion": PRICE_IN, "outputPerMillion": PRICE_OUT, "cachedInputPerMillion": PRICE_CACHED}
    snapshot = {
        "providers": [
            {
                "name": "oai",
                "type": "openai",
                "baseUrl": fake_openai_process.base_url + "/v1",
                "apiKey": DEFAULT_KEYS["openai"],
                "pricing": {"gpt-4o": pricing},
            },
            {
                "name": "azure",
                "type": "azure-openai",
                "baseUrl": fake_openai_process.base_url,
                "apiKey": DEFAULT_KEYS["openai"],
                "apiVersion": "2024-10-21",
            },
            {
                "name": "claude",
                "type": "anthropic",
                "baseUrl": fake_anthropic_process.base_url,
                "apiKey": DEFAULT_KEYS["anthropic"],
            },
        ],
        "routes": [
            route("gpt", "oai", "gpt-4o"),
            route("azure", "azure", "my-gpt-deployment"),
            route("gpt-or-claude", "oai", "gpt-4o", fallback=("claude", "claude-sonnet-4-5")),
            route("claude-or-gpt", "claude", "claude-sonnet-4-5", fallback=("oai", "gpt-4o")),
            route("claude", "claude", "claude-sonnet-4-5"),
        ],
    }
    with SidecarProcess(snapshot) as process:
        yield process


@pytest.fixture
def oai(responding: SidecarProcess, fake_openai: Any, fake_anthropic: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=responding.base_url + "/v1", api_key="placeholder", max_retries=0, timeout=20)


def test_the_apps_body_reaches_openai_field_by_field_and_its_answer_comes_back_as_sent(
    oai: openai.OpenAI, fake_openai: FakeProviderProcess
) -> None:
    raw = oai.responses.with_raw_response.create(model="gpt", extra_body=FUTURE, **FIELDS)
    assert len(fake_openai.requests()) == 1
    received = assert_passed_through(fake_openai, FIELDS, path="/v1/responses", model="gpt-4o")
    assert received["headers"]["authorization"] == f"Bearer {DEFAULT_KEYS['openai']}"  # the provider's key
    answer = json.loads(raw.http_response.text)
    # the provider's own response: its id (kept by it for previous_response_id), its echo of the tools
    assert re.fullmatch(r"resp_[A-Za-z0-9]{40}", answer["id"]) and answer["store"] is True
    assert [tool["type"] for tool in answer["tools"]] == ["web_search", "function"]
    response = raw.parse()
    assert response.output_text == "echo: hello there" and response.model == "gpt-4o"


def test_previous_response_id_passes_and_cached_tokens_are_priced(
    oai: openai.OpenAI, responding: SidecarProcess, fake_openai: FakeProviderProcess
) -> None:
    first = oai.responses.create(model="gpt", input="one two three")
    before = responding.metric("modelway_cost_usd_total")
    cache_reads = responding.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="cache_read")
    later = oai.responses.create(model="gpt", input="four five", previous_response_id=first.id)
    assert fake_openai.requests()[-1]["json"]["previous_response_id"] == first.id
    assert later.previous_response_id == first.id and later.output_text == "echo: four five"
    usage = later.usage
    assert usage is not None and usage.input_tokens_details.cached_tokens == 3  # the first turn, cached
    fresh = usage.input_tokens - 3
    expected = (fresh * PRICE_IN + 3 * PRICE_CACHED + usage.output_tokens * PRICE_OUT) / 1e6
    assert responding.metric("modelway_cost_usd_total") - before == pytest.approx(expected)
    assert responding.metric("gen_ai_client_token_usage_sum", gen_ai_token_type="cache_read") - cache_reads == 3


def test_a_stream_passes_event_by_event(
    oai: openai.OpenAI, responding: SidecarProcess, fake_openai: FakeProviderProcess
) -> None:
    first = oai.responses.create(model="gpt", input="one two three")
    before = responding.metric("modelway_cost_usd_total")
    stream = oai.responses.create(
        model="gpt", input="four five six", previous_response_id=first.id, tools=[{"type": "web_search"}], stream=True
    )
    events = list(stream)
    received = fake_openai.requests()[-1]["json"]
    assert received == {
        "model": "gpt-4o",
        "input": "four five six",
        "previous_response_id": first.id,
        "tools": [{"type": "web_search"}],
        "stream": True,
    }
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))  # the provider's own
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: four five six"
    final = events[-1].response  # type: ignore[union-attr]
    assert final.previous_response_id == first.id and final.id.startswith("resp_")
    usage = final.usage
    assert usage is not None and usage.input_tokens_details.cached_tokens == 3
    expected = ((usage.input_tokens - 3) * PRICE_IN + 3 * PRICE_CACHED + usage.output_tokens * PRICE_OUT) / 1e6
    assert responding.metric("modelway_cost_usd_total") - before == pytest.approx(expected)

    with oai.responses.stream(model="gpt", input="use tool trains", tools=[TOOL]) as helper:  # type: ignore[list-item]
        called = helper.get_final_response()
    assert [(item.type, getattr(item, "name", None)) for item in called.output] == [("function_call", "lookup")]


def test_azure_gets_the_body_on_its_v1_responses_api(oai: openai.OpenAI, fake_openai: FakeProviderProcess) -> None:
    response = oai.responses.create(model="azure", input="hello", tools=[{"type": "web_search"}], store=True)
    assert response.output_text == "echo: hello"
    [received] = fake_openai.requests()
    assert received["path"] == "/openai/v1/responses" and received["query"] == {}
    assert received["json"] == {
        "model": "my-gpt-deployment",
        "input": "hello",
        "tools": [{"type": "web_search"}],
        "store": True,
    }
    assert received["headers"]["api-key"] == DEFAULT_KEYS["openai"]
    events = list(oai.responses.create(model="azure", input="one two", stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.output_text == "echo: one two"  # type: ignore[union-attr]


def test_a_fallback_without_the_api_is_translated_when_that_is_safe(
    oai: openai.OpenAI, fake_openai: FakeProviderProcess, fake_anthropic: FakeProviderProcess
) -> None:
    fake_openai.script([{"status": 500}])
    response = oai.responses.create(model="gpt-or-claude", input="hello there", store=False)
    assert response.output_text == "echo: hello there"
    [translated] = fake_anthropic.requests()
    [message] = translated["json"]["messages"]  # the chat form's, in Anthropic's words
    assert message["role"] == "user" and "hello there" in json.dumps(message["content"])

    fake_openai.script([{"status": 500}])
    events = list(oai.responses.create(model="gpt-or-claude", input="one two", stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.output_text == "echo: one two"  # type: ignore[union-attr]


def test_a_request_needing_the_provider_is_never_translated(
    oai: openai.OpenAI, fake_openai: FakeProviderProcess, fake_anthropic: FakeProviderProcess
) -> None:
    first = oai.responses.create(model="gpt", input="one two three")
    # no backend of the route serves the Responses API: the clear 400, nothing sent
    with pytest.raises(openai.BadRequestError) as refused:
        oai.responses.create(model="claude", input="more", previous_response_id=first.id)
    assert (refused.value.param, refused.value.code) == ("previous_response_id", "unsupported_parameter")
    # the translated backend first: skipped, the one that serves the API answers
    later = oai.responses.create(model="claude-or-gpt", input="more", previous_response_id=first.id)
    assert later.previous_response_id == first.id and later.output_text == "echo: more"
    # the one that serves it fails: the app is told, and the fallback was not sent what it cannot take
    fake_openai.script([{"status": 500}])
    with pytest.raises(openai.InternalServerError) as failed:
        oai.responses.create(model="gpt-or-claude", input="more", previous_response_id=first.id)
    assert "previous_response_id" in failed.value.message and "cannot take this request as sent" in failed.value.message
    assert fake_anthropic.requests() == []


def test_a_provider_failure_mid_stream_ends_it_with_an_error_event(
    oai: openai.OpenAI, fake_openai: FakeProviderProcess
) -> None:
    # after the first text deltas reached the app (a pause, so they go out before the error comes)
    fake_openai.script([{"stall_after_chunks": 6, "stall": 0.3, "error_after_chunks": 6}])
    events = list(oai.responses.create(model="gpt", input="one two three four", stream=True))
    kinds = [event.type for event in events]
    assert "response.output_text.delta" in kinds and "response.completed" not in kinds
    error = events[-1]
    assert error.type == "error" and "provider sent error mid-stream" in error.message  # type: ignore[union-attr]
