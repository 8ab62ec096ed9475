"""Anthropic `cache_control` across APIs: the front end marks breakpoints in the internal form,
Bedrock Converse sends them as `cachePoint` blocks, and OpenAI / Gemini / Anthropic bodies built
from the internal form never carry a mark."""

from __future__ import annotations

import json
from typing import Any

from proxy.frontends.anthropic_messages import parse_messages_request
from proxy.providers.anthropic_request import messages_body
from proxy.providers.bedrock_request import converse_body
from proxy.providers.cache_points import CACHE_POINT, CACHE_POINTS, without_cache_points
from proxy.providers.gemini_request import gemini_chat_body
from proxy.providers.openai import OpenAITranslator
from proxy.redaction.pseudonymize import Pseudonymizer
from proxy.redaction.rule import RedactionRule
from proxy.snapshot import Provider

EPHEMERAL = {"type": "ephemeral"}
POINT = {"cachePoint": {"type": "default"}}
WEATHER = {"name": "weather", "description": "Weather in a city", "input_schema": {"type": "object"}}


def anthropic_body() -> dict[str, Any]:
    """A coding agent's request: cached tools, cached system prompt, a cached document turn."""
    return {
        "model": "claude",
        "max_tokens": 100,
        "tools": [{**WEATHER, "cache_control": EPHEMERAL}],
        "system": [
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Long house rules.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "A long document.", "cache_control": EPHEMERAL},
                    {"type": "text", "text": "What does it say?"},
                ],
            },
            {"role": "assistant", "content": "It says hello."},
            {"role": "user", "content": "Thanks."},
        ],
    }


def internal(body: dict[str, Any]) -> dict[str, Any]:
    return parse_messages_request(body).request


def test_cache_control_becomes_cache_points_after_each_marked_block() -> None:
    body = converse_body(internal(anthropic_body()))
    assert body["toolConfig"]["tools"][1] == POINT
    assert body["system"] == [
        {"text": "You are terse."},
        {"text": "Long house rules."},
        {"cachePoint": {"type": "default", "ttl": "1h"}},
    ]
    assert body["messages"][0]["content"] == [{"text": "A long document."}, POINT, {"text": "What does it say?"}]
    assert body["messages"][1]["content"] == [{"text": "It says hello."}]
    assert body["messages"][2]["content"] == [{"text": "Thanks."}]


def test_a_single_cached_system_text_and_a_string_prompt_are_marked_too() -> None:
    body = anthropic_body()
    body["system"] = [{"type": "text", "text": "Rules.", "cache_control": EPHEMERAL}]
    body["messages"] = [{"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": EPHEMERAL}]}]
    del body["tools"]
    converse = converse_body(internal(body))
    assert converse["system"] == [{"text": "Rules."}, POINT]
    assert converse["messages"] == [{"role": "user", "content": [{"text": "Hi"}, POINT]}]


def test_tool_results_and_assistant_turns_are_closed_by_a_cache_point() -> None:
    body = anthropic_body()
    call = {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Rain", "cache_control": EPHEMERAL}
    body["messages"] = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": [{**call, "cache_control": EPHEMERAL}]},
        {"role": "user", "content": [result, {"type": "text", "text": "Umbrella?"}]},
    ]
    converse = converse_body(internal(body))
    assistant, user = converse["messages"][1]["content"], converse["messages"][2]["content"]
    assert [next(iter(block)) for block in assistant] == ["toolUse", "cachePoint"]
    assert [next(iter(block)) for block in user] == ["toolResult", "cachePoint", "text"]


def test_at_most_four_cache_points_the_first_in_prompt_order() -> None:
    body = anthropic_body()
    body["messages"] = [
        {
            "role": "user",
            "content": [{"type": "text", "text": f"part {i}", "cache_control": EPHEMERAL} for i in range(4)],
        }
    ]
    converse = converse_body(internal(body))
    points = [block for block in converse["toolConfig"]["tools"] + converse["system"] if "cachePoint" in block]
    content = converse["messages"][0]["content"]
    assert len(points) == 2  # tools and system come first in the prompt
    assert content == [{"text": "part 0"}, POINT, {"text": "part 1"}, POINT, {"text": "part 2"}, {"text": "part 3"}]


def test_no_cache_control_no_cache_point_and_no_mark() -> None:
    body = json.loads(json.dumps(anthropic_body()).replace('"cache_control"', '"unused"'))
    request = internal(body)
    assert CACHE_POINTS not in request
    assert CACHE_POINT not in json.dumps(request)
    assert "cachePoint" not in json.dumps(converse_body(request))


def test_marks_in_an_openai_request_are_not_honoured() -> None:
    """Only the Anthropic front end sets breakpoints: an OpenAI body holding the key by chance caches nothing."""
    request = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x", CACHE_POINT: {}}]}],
    }
    assert "cachePoint" not in json.dumps(converse_body(request))


def test_openai_gemini_and_anthropic_bodies_never_carry_a_mark() -> None:
    request = internal(anthropic_body())
    assert request[CACHE_POINTS]
    before = json.dumps(request)
    openai = OpenAITranslator(Provider(name="ns.openai", type="openai", base_url="https://api.openai.com/v1"))
    sent = openai.chat_request(request, model="gpt-4o", stream=False).body.decode()
    assert "_cache_point" not in sent
    assert json.loads(sent)["messages"][1]["content"][0] == {"type": "text", "text": "A long document."}
    single = internal({**anthropic_body(), "system": [{"type": "text", "text": "Rules.", "cache_control": EPHEMERAL}]})
    sent_single = json.loads(openai.chat_request(single, model="gpt-4o", stream=False).body)
    assert sent_single["messages"][0] == {"role": "system", "content": "Rules."}  # as without cache_control
    assert "_cache_point" not in json.dumps(gemini_chat_body(request))
    assert "_cache_point" not in json.dumps(
        messages_body(request, model="claude", stream=False)
    )  # cache_control instead
    assert json.dumps(request) == before  # the parsed request stays as it was, for the next attempt


def test_without_cache_points_returns_an_unmarked_request_as_it_is() -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert without_cache_points(request) is request


def test_masking_keeps_the_marks_where_they_were() -> None:
    """A request masked for a backend (personal data) still caches where the app asked."""
    body = anthropic_body()
    body["system"][1]["text"] = "Write to jane@example.com for help."
    redacted = Pseudonymizer(RedactionRule(kinds=["email"])).redact_chat(internal(body))
    assert redacted.counts["email"] == 1
    converse = converse_body(redacted.request)
    assert "jane@example.com" not in json.dumps(converse)
    assert converse["system"][2] == {"cachePoint": {"type": "default", "ttl": "1h"}}
    assert converse["messages"][0]["content"][1] == POINT


def test_a_translated_anthropic_body_gets_cache_control_back_where_the_app_put_it() -> None:
    """When an Anthropic request cannot pass through (masking, a guardrail's replacement), the body
    rebuilt from the internal form still asks Anthropic to cache the same prefixes."""
    body = messages_body(internal(anthropic_body()), model="claude", stream=False)
    assert body["tools"][0]["cache_control"] == EPHEMERAL
    assert body["system"] == [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "Long house rules.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ]
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "A long document.", "cache_control": EPHEMERAL},
        {"type": "text", "text": "What does it say?"},
    ]
    assert "cache_control" not in json.dumps(body["messages"][1:])
    single = internal({**anthropic_body(), "system": [{"type": "text", "text": "Rules.", "cache_control": EPHEMERAL}]})
    assert messages_body(single, model="claude", stream=False)["system"] == [
        {"type": "text", "text": "Rules.", "cache_control": EPHEMERAL}
    ]


def test_an_openai_request_never_asks_anthropic_to_cache() -> None:
    request = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", CACHE_POINT: {}}]}],
    }
    assert "cache_control" not in json.dumps(messages_body(request, model="claude", stream=False))
