"""Masking a request: what the provider would receive holds no value the rule masks, and nothing else changes."""

from __future__ import annotations

import base64
import copy
import json
import re
from typing import Any

import pytest

from proxy.policy.classify import body_text
from proxy.policy.personal_data import PersonalDataDetector
from proxy.redaction import PLACEHOLDER, Pseudonymizer, RedactionRule

ALL = RedactionRule()
DETECTOR = PersonalDataDetector()

EMAIL, EMAIL2 = "jane.doe@example.com", "bob@corp.example"
PHONE = "+1 (415) 555-2671"
CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"


def agent_request() -> dict[str, Any]:
    """Every place a chat request holds text: system, parts, tool calls and results, tools, stop, user."""
    arguments = json.dumps({"to": EMAIL, "cc": [EMAIL2], "body": f"card {CARD}", "n": 3})
    return {
        "model": "chat",
        "messages": [
            {"role": "system", "content": f"You write to customers. Escalations: {EMAIL2}."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": f"Reply to {EMAIL} (phone {PHONE})."},
                    {"type": "text", "text": f"Refund to {IBAN}."},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "send_mail", "arguments": arguments}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"sent_to": EMAIL, "ok": True})},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "send_mail",
                    "description": f"Sends mail; never to {EMAIL2}.",
                    "parameters": {"type": "object", "properties": {"to": {"type": "string", "enum": [EMAIL]}}},
                },
            }
        ],
        "stop": [f"Regards, {EMAIL2}"],
        "user": EMAIL,
        "temperature": 0.2,
    }


def sent_values(request: dict[str, Any]) -> dict[str, int]:
    """What the classifier's scan finds in the request as a provider would get it."""
    return dict(DETECTOR.scan([body_text(request)]).counts)


def test_nothing_found_is_left_anywhere_and_the_original_is_intact() -> None:
    request = agent_request()
    before = copy.deepcopy(request)
    assert sent_values(request)  # the request really holds values
    redacted = Pseudonymizer(ALL).redact_chat(request)
    assert sent_values(redacted.request) == {}
    assert request == before  # the parsed request stays as it was, for a backend that needs no masking
    assert not redacted.unmasked


def test_only_text_changes_names_ids_and_numbers_stay() -> None:
    redacted = Pseudonymizer(ALL).redact_chat(agent_request()).request
    messages = redacted["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    call = messages[2]["tool_calls"][0]
    assert (call["id"], call["type"], call["function"]["name"]) == ("call_1", "function", "send_mail")
    assert messages[3]["tool_call_id"] == "call_1"
    assert redacted["tools"][0]["function"]["parameters"]["type"] == "object"
    assert redacted["temperature"] == 0.2 and redacted["model"] == "chat"
    assert messages[1]["content"][0] == {"type": "text", "text": "Reply to <EMAIL_1> (phone <PHONE_1>)."}


def test_same_value_same_placeholder_everywhere_numbered_per_kind() -> None:
    pseudonymizer = Pseudonymizer(ALL)
    redacted = pseudonymizer.redact_chat(agent_request()).request
    assert sorted(pseudonymizer.placeholders) == sorted(
        ["<EMAIL_1>", "<EMAIL_2>", "<PHONE_1>", "<IBAN_1>", "<PAYMENT_CARD_1>"]
    )
    assert sorted(pseudonymizer.placeholders.values()) == sorted([EMAIL, EMAIL2, PHONE, IBAN, CARD])
    by_value = {value: placeholder for placeholder, value in pseudonymizer.placeholders.items()}
    text = json.dumps(redacted)
    assert text.count(by_value[EMAIL]) == 5  # user text, arguments, tool result, enum, user
    assert text.count(by_value[EMAIL2]) == 4  # system, arguments, tool description, stop
    assert len(pseudonymizer.placeholders) == 5


def test_tool_call_arguments_stay_json_with_placeholders_in_their_strings() -> None:
    redacted = Pseudonymizer(ALL).redact_chat(agent_request()).request
    arguments = json.loads(redacted["messages"][2]["tool_calls"][0]["function"]["arguments"])
    assert set(arguments) == {"to", "cc", "body", "n"} and arguments["n"] == 3
    assert PLACEHOLDER.fullmatch(arguments["to"]) and PLACEHOLDER.fullmatch(arguments["cc"][0])
    assert re.fullmatch(r"card <PAYMENT_CARD_\d+>", arguments["body"])


def test_a_value_escaped_in_the_arguments_json_is_found() -> None:
    # "\u0040" is '@': a provider decodes it, so the masking must too.
    escaped = '{"to": "jane.doe\\u0040example.com"}'
    request = {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": escaped}}]}]}
    redacted = Pseudonymizer(ALL).redact_chat(request)
    assert json.loads(redacted.request["messages"][0]["tool_calls"][0]["function"]["arguments"]) == {"to": "<EMAIL_1>"}
    assert redacted.counts["email"] == 1


def test_arguments_that_are_not_json_are_masked_as_text() -> None:
    request = {"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": f'{{"to": "{EMAIL}'}}]}]}
    redacted = Pseudonymizer(ALL).redact_chat(request).request
    assert redacted["messages"][0]["tool_calls"][0]["function"]["arguments"] == '{"to": "<EMAIL_1>'


def test_counts_per_kind_every_kind_of_the_rule_listed() -> None:
    redacted = Pseudonymizer(ALL).redact_chat(agent_request())
    assert dict(redacted.counts) == {
        "email": 9,
        "phone": 1,
        "payment_card": 1,
        "iban": 1,
        "us_ssn": 0,
        "uk_nino": 0,
        "es_dni": 0,
    }


def test_a_request_without_findings_is_returned_as_it_is() -> None:
    request = {"model": "chat", "messages": [{"role": "user", "content": "Order #100234556 shipped on 2024-03-31."}]}
    pseudonymizer = Pseudonymizer(ALL)
    redacted = pseudonymizer.redact_chat(request)
    assert redacted.request is request
    assert not any(redacted.counts.values())
    assert pseudonymizer.stream_restorer() is None  # nothing to restore: the stream is not wrapped


def test_only_the_kinds_asked_for() -> None:
    redacted = Pseudonymizer(RedactionRule(kinds=["email"])).redact_chat(agent_request())
    text = json.dumps(redacted.request)
    assert EMAIL not in text and PHONE in text and IBAN in text
    assert dict(redacted.counts) == {"email": 9}


def test_custom_patterns_named_by_the_policy() -> None:
    rule = RedactionRule(kinds=(), custom={"employee_id": r"EMP-[0-9]{6}", "ticket": r"\bSEC-[0-9]+\b"})
    request = {"messages": [{"role": "user", "content": "EMP-123456 filed SEC-77 about EMP-123456; mail a@b.co"}]}
    pseudonymizer = Pseudonymizer(rule)
    redacted = pseudonymizer.redact_chat(request)
    assert (
        redacted.request["messages"][0]["content"]
        == "<EMPLOYEE_ID_1> filed <TICKET_1> about <EMPLOYEE_ID_1>; mail a@b.co"
    )
    assert dict(redacted.counts) == {"employee_id": 2, "ticket": 1}


def test_custom_pattern_that_would_span_two_strings_is_looked_for_in_each() -> None:
    # The texts are searched joined by newlines; a match across two of them is no match.
    rule = RedactionRule(kinds=(), custom={"code": r"[a-z]+\s+[0-9]+"})
    request = {"messages": [{"role": "user", "content": "abc"}, {"role": "user", "content": "123 and xy 45"}]}
    redacted = Pseudonymizer(rule).redact_chat(request).request
    assert [m["content"] for m in redacted["messages"]] == ["abc", "123 and <CODE_1>"]


@pytest.mark.parametrize(
    ("custom", "message"),
    [
        ({"Employee": "x"}, "must match"),
        ({"email": "x"}, "built-in kind"),
        ({"ok": "("}, "not a valid regular expression"),
        ({"ok": "a*"}, "empty string"),
    ],
)
def test_bad_custom_patterns_are_refused_when_the_rule_is_built(custom: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedactionRule(custom=custom)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown personal data kinds"):
        RedactionRule(kinds=["email", "passport"])


def test_overlapping_findings_mask_once_the_earliest_longest() -> None:
    rule = RedactionRule(kinds=["email"], custom={"handle": r"doe@example"})
    redacted = Pseudonymizer(rule).redact_chat({"messages": [{"role": "user", "content": f"to {EMAIL}!"}]})
    assert redacted.request["messages"][0]["content"] == "to <EMAIL_1>!"
    assert dict(redacted.counts) == {"email": 1, "handle": 0}


def test_placeholders_the_request_already_holds_are_never_given_out() -> None:
    # An earlier answer left with placeholders, quoted back: this request's values get other numbers.
    request = {
        "messages": [
            {"role": "assistant", "content": "I wrote to <EMAIL_1> and <EMAIL_2>."},
            {"role": "user", "content": f"Now write to {EMAIL}."},
        ]
    }
    pseudonymizer = Pseudonymizer(ALL)
    redacted = pseudonymizer.redact_chat(request).request
    assert redacted["messages"][1]["content"] == "Now write to <EMAIL_3>."
    assert dict(pseudonymizer.placeholders) == {"<EMAIL_3>": EMAIL}


def test_the_same_pseudonymizer_gives_a_retry_the_same_placeholders() -> None:
    pseudonymizer = Pseudonymizer(ALL)
    first = pseudonymizer.redact_chat(agent_request()).request
    again = pseudonymizer.redact_chat(agent_request()).request
    assert first == again


@pytest.mark.parametrize(
    ("where", "request_"),
    [
        ("a URL's percent-encoded query", {"messages": [{"role": "user", "content": "see mailto:jane%40example.com"}]}),
        (
            "an image URL",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a?u=jane@example.com"}}],
                    }
                ]
            },
        ),
        (
            "a text file as base64",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "file",
                                "file": {
                                    "file_data": "data:text/plain;base64,"
                                    + base64.b64encode(b"contact: jane@example.com").decode(),
                                    "filename": "notes.txt",
                                },
                            }
                        ],
                    }
                ]
            },
        ),
        ("an object key", {"messages": [{"role": "user", "content": "hi"}], "metadata": {"jane@example.com": "vip"}}),
        ("a participant name", {"messages": [{"role": "user", "name": "jane@example.com", "content": "hi"}]}),
    ],
)
def test_values_where_no_placeholder_can_go_are_reported_unmasked(where: str, request_: dict[str, Any]) -> None:
    redacted = Pseudonymizer(ALL).redact_chat(request_)
    assert dict(redacted.unmasked) == {"email": 1}, where


def test_binary_payloads_are_not_touched() -> None:
    # Base64 can hold a digit run that reads as a card: rewriting it would corrupt the image.
    blob = base64.b64encode(b"\x00" * 30).decode() + "/4111111111111111"
    assert ALL.find(blob)  # as text, it would be masked
    request = {
        "messages": [
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": blob, "format": "wav"}}]}
        ]
    }
    redacted = Pseudonymizer(ALL).redact_chat(request).request
    assert redacted is request


def test_redact_text_uses_the_request_placeholders() -> None:
    pseudonymizer = Pseudonymizer(ALL)
    pseudonymizer.redact_chat({"messages": [{"role": "user", "content": f"to {EMAIL}"}]})
    assert pseudonymizer.redact_text(f"captured: {EMAIL}, {EMAIL2}") == "captured: <EMAIL_1>, <EMAIL_2>"
