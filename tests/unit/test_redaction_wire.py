"""Masking end to end without sockets: both inbound APIs, every provider's request bytes, answers rendered back.

The request path will call these pieces in this order (see `proxy.redaction`): the front end parses,
the pseudonymizer masks, the translator builds the provider's bytes; the answer is restored before the
front end renders it. Here the bytes a provider would receive are checked for the values themselves.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.frontends.anthropic_messages import AnthropicFrontend
from proxy.frontends.openai_chat import OpenAIFrontend
from proxy.providers.openai import RawChunk
from proxy.providers.registry import build_translator
from proxy.redaction import Pseudonymizer, RedactionRule
from proxy.redaction.restore import StreamRestorer
from proxy.snapshot import Provider

EMAIL, PHONE, IBAN = "jane.doe@example.com", "+44 20 7946 0958", "GB82 WEST 1234 5698 7654 32"
VALUES = (EMAIL, PHONE, IBAN, "EMP-123456")
RULE = RedactionRule(custom={"employee_id": r"EMP-[0-9]{6}"})

OPENAI_BODY: dict[str, Any] = {
    "model": "chat",
    "messages": [
        {"role": "system", "content": f"Support desk. Escalate to {EMAIL}."},
        {"role": "user", "content": [{"type": "text", "text": f"I am EMP-123456, call me on {PHONE}."}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": json.dumps({"iban": IBAN, "email": EMAIL})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": f"account {IBAN} belongs to {EMAIL}"},
    ],
    "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
}
ANTHROPIC_BODY: dict[str, Any] = {
    "model": "chat",
    "max_tokens": 100,
    "system": f"Support desk. Escalate to {EMAIL}.",
    "messages": [
        {"role": "user", "content": f"I am EMP-123456, call me on {PHONE}."},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"iban": IBAN, "email": EMAIL}}
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": f"account {IBAN} of {EMAIL}"}],
        },
    ],
    "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
}
PROVIDERS = {
    "openai": {},
    "openai-compatible": {},
    "azure-openai": {"api_version": "2024-10-21"},
    "anthropic": {},
    "gemini": {},
}


@pytest.mark.parametrize("provider_type", PROVIDERS)
@pytest.mark.parametrize(("frontend", "body"), [(OpenAIFrontend(), OPENAI_BODY), (AnthropicFrontend(), ANTHROPIC_BODY)])
def test_the_provider_receives_no_value(provider_type: str, frontend: Any, body: dict[str, Any]) -> None:
    parsed = frontend.parse_chat(json.loads(json.dumps(body)))
    translator = build_translator(
        Provider(name="p", type=provider_type, base_url="https://llm.test/v1", **PROVIDERS[provider_type])  # type: ignore[arg-type]
    )
    plain = translator.chat_request(parsed.request, model="m", stream=False).body.decode()
    assert all(value in plain or json.dumps(value)[1:-1] in plain for value in VALUES)  # they would have gone
    redacted = Pseudonymizer(RULE).redact_chat(parsed.request)
    assert not redacted.unmasked
    sent = translator.chat_request(redacted.request, model="m", stream=True).body.decode()
    for value in VALUES:
        assert value not in sent
        assert value.replace(" ", "") not in sent
    assert "<EMAIL_1>" in sent and "<EMPLOYEE_ID_1>" in sent


@pytest.mark.parametrize(("frontend", "body"), [(OpenAIFrontend(), OPENAI_BODY), (AnthropicFrontend(), ANTHROPIC_BODY)])
def test_the_app_reads_its_values_in_the_rendered_answer(frontend: Any, body: dict[str, Any]) -> None:
    pseudonymizer = Pseudonymizer(RULE)
    pseudonymizer.redact_chat(frontend.parse_chat(json.loads(json.dumps(body))).request)
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Calling <PHONE_1> for <EMPLOYEE_ID_1>.",
                    "tool_calls": [
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": '{"email": "<EMAIL_1>"}'},
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    rendered = json.dumps(frontend.render_chat(pseudonymizer.restore_response(answer)))
    assert f"Calling {PHONE} for EMP-123456." in rendered
    assert not any(p in rendered for p in ("<PHONE_1>", "<EMPLOYEE_ID_1>", "<EMAIL_1>"))
    assert EMAIL in rendered


def test_an_escaped_lt_in_a_providers_own_bytes_is_still_restored() -> None:
    # JSON may spell '<' as \u003c; the restorer's fast path reads the bytes, so it must know.
    data = b'{"id":"c","choices":[{"index":0,"delta":{"content":"to \\u003cEMAIL_1\\u003e"}}]}'
    chunk = RawChunk(json.loads(data))
    chunk.raw = data
    restored = StreamRestorer({"<EMAIL_1>": EMAIL}).chunk(chunk)
    assert restored["choices"][0]["delta"]["content"] == f"to {EMAIL}"


def test_whole_answer_content_parts_are_restored() -> None:
    pseudonymizer = Pseudonymizer(RULE)
    pseudonymizer.redact_chat({"messages": [{"role": "user", "content": EMAIL}]})
    answer = {"choices": [{"message": {"content": [{"type": "text", "text": "to <EMAIL_1>"}]}}]}
    assert pseudonymizer.restore_response(answer)["choices"][0]["message"]["content"] == [
        {"type": "text", "text": f"to {EMAIL}"}
    ]
