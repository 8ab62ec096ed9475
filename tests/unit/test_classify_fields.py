"""The personal-data scan reads every field that carries text to a provider, field by field.

For each inbound API, an e-mail address is put in one field of an otherwise
ordinary request. The request goes through the real front end (the Anthropic
one converts to the internal form, which is what the scan sees) and through
every provider translator (what a provider would receive). Two things are
checked: the field does reach a provider (the case is not vacuous: an
Anthropic field the gateway drops is marked so, and must really be dropped),
and whenever it does, the scan finds the address.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from typing import Any

import pytest

from proxy.errors import ApiError
from proxy.frontends.anthropic_messages import AnthropicFrontend
from proxy.frontends.openai_chat import OpenAIFrontend
from proxy.policy.classify import Classifier, chat_texts, embedding_texts
from proxy.policy.personal_data import PersonalDataDetector
from proxy.providers.registry import build_translator
from proxy.request.passthrough import sendable_texts
from proxy.snapshot import Policy, Provider, Secret

EMAIL = "jane.doe@example.org"
PERCENT = "jane.doe%40example.org"  # as a URL's query carries it
TEXT_FILE = base64.b64encode(f"Invoice for {EMAIL}\n".encode()).decode()  # a text file, base64
PNG = base64.b64encode(bytes(range(256)) * 8).decode()  # 2.7 KB of binary, base64
PDF = "data:application/pdf;base64," + PNG
DETECTOR = PersonalDataDetector()
CLASSIFIER = Classifier(policy=Policy(detect_personal_data=True))
TRANSLATORS = [
    build_translator(
        Provider(
            name=kind.replace("-", ""),
            type=kind,
            base_url="https://p.example/v1",
            api_key=Secret("k"),
            api_version="2024-10-21",
        )
    )
    for kind in ("openai", "openai-compatible", "azure-openai", "anthropic", "gemini")
]

Edit = Callable[[dict[str, Any]], None]


def found(texts: Any) -> int:
    return DETECTOR.scan(texts).counts.get("email", 0)


def sent_to(request: dict[str, Any], marker: str) -> list[str]:
    """The providers whose request body would carry `marker` (a translator may refuse a shape: not sent)."""
    systems = []
    for translator in TRANSLATORS:
        try:
            body = translator.chat_request(copy.deepcopy(request), model="upstream-model", stream=False).body
        except ApiError:
            continue
        if marker.encode() in body:
            systems.append(translator.provider.type)
    return systems


# --- OpenAI Chat Completions ---------------------------------------------------------------------


def openai_request() -> dict[str, Any]:
    return {
        "model": "chat",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C, cloudy"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "Current weather for a city.",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string", "description": "City name"}},
                        "required": ["city"],
                    },
                },
            }
        ],
    }


def _msg(i: int, **fields: Any) -> Edit:
    return lambda r: r["messages"][i].update(fields)


def _param(**fields: Any) -> Edit:
    return lambda r: r["tools"][0]["function"]["parameters"]["properties"]["city"].update(fields)


def _user_parts(*parts: dict[str, Any]) -> Edit:
    return _msg(1, content=[{"type": "text", "text": "Look at this."}, *parts])


def _schema_format(**schema: Any) -> Edit:
    return lambda r: r.update(
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "schema": {"type": "object", "properties": {"a": {"type": "string", **schema}}},
            },
        }
    )


# (case, edit, what the provider's bytes carry: the address itself unless it travels encoded)
OPENAI_FIELDS: list[tuple[str, Edit, str]] = [
    ("system content", _msg(0, content=f"Reply to {EMAIL}"), EMAIL),
    ("developer content", _msg(0, role="developer", content=f"Reply to {EMAIL}"), EMAIL),
    ("user content", _msg(1, content=f"I am {EMAIL}"), EMAIL),
    ("user text part", _user_parts({"type": "text", "text": f"I am {EMAIL}"}), EMAIL),
    (
        "image URL path",
        _user_parts({"type": "image_url", "image_url": {"url": f"https://img.example.com/{EMAIL}/a.png"}}),
        EMAIL,
    ),
    (
        "image URL query, percent-encoded",
        _user_parts({"type": "image_url", "image_url": {"url": f"https://img.example.com/a.png?owner={PERCENT}"}}),
        PERCENT,
    ),
    (
        "image data URL name",
        _user_parts({"type": "image_url", "image_url": {"url": f"data:image/png;name={EMAIL};base64,{PNG}"}}),
        EMAIL,
    ),
    ("file part name", _user_parts({"type": "file", "file": {"file_data": PDF, "filename": f"{EMAIL}.pdf"}}), EMAIL),
    (
        "file part text file, base64",
        _user_parts(
            {"type": "file", "file": {"file_data": f"data:text/plain;base64,{TEXT_FILE}", "filename": "invoice.txt"}}
        ),
        TEXT_FILE,
    ),
    ("file part id", _user_parts({"type": "file", "file": {"file_id": f"file-{EMAIL}"}}), EMAIL),
    ("message name", _msg(1, name=EMAIL), EMAIL),
    ("assistant content", _msg(2, content=f"Noted, {EMAIL}."), EMAIL),
    ("assistant refusal part", _msg(2, content=[{"type": "refusal", "refusal": f"Not for {EMAIL}"}]), EMAIL),
    ("assistant refusal", _msg(2, refusal=f"Not for {EMAIL}"), EMAIL),
    (
        "tool call id",
        lambda r: (r["messages"][2]["tool_calls"][0].update(id=EMAIL), r["messages"][3].update(tool_call_id=EMAIL)),
        EMAIL,
    ),
    ("tool call name", lambda r: r["messages"][2]["tool_calls"][0]["function"].update(name=EMAIL), EMAIL),
    (
        "tool call arguments",
        lambda r: r["messages"][2]["tool_calls"][0]["function"].update(
            arguments=f'{{"city": "Paris", "notify": "{EMAIL}"}}'
        ),
        EMAIL,
    ),
    (
        "legacy function_call",
        _msg(2, tool_calls=None, function_call={"name": "weather", "arguments": f'{{"to": "{EMAIL}"}}'}),
        EMAIL,
    ),
    ("tool message content", _msg(3, content=f"Sent to {EMAIL}"), EMAIL),
    ("tool message content parts", _msg(3, content=[{"type": "text", "text": f"Sent to {EMAIL}"}]), EMAIL),
    ("tool description", lambda r: r["tools"][0]["function"].update(description=f"Mails {EMAIL}"), EMAIL),
    ("tool name", lambda r: r["tools"][0]["function"].update(name=EMAIL), EMAIL),
    ("parameter description", _param(description=f"Ask {EMAIL}"), EMAIL),
    ("parameter enum", _param(enum=["Paris", EMAIL]), EMAIL),
    ("parameter default", _param(default=EMAIL), EMAIL),
    ("parameter examples", _param(examples=[EMAIL]), EMAIL),
    (
        "parameter name",
        lambda r: r["tools"][0]["function"]["parameters"]["properties"].update({EMAIL: {"type": "string"}}),
        EMAIL,
    ),
    (
        "nested parameter description",
        _param(
            type="array",
            items={"type": "object", "properties": {"to": {"type": "string", "description": f"e.g. {EMAIL}"}}},
        ),
        EMAIL,
    ),
    (
        "parameter $defs",
        lambda r: r["tools"][0]["function"]["parameters"].update({"$defs": {"who": {"const": EMAIL}}}),
        EMAIL,
    ),
    ("tool_choice name", lambda r: r.update(tool_choice={"type": "function", "function": {"name": EMAIL}}), EMAIL),
    (
        "legacy functions",
        lambda r: r.update(
            functions=[{"name": "f", "description": f"Mails {EMAIL}", "parameters": {"type": "object"}}]
        ),
        EMAIL,
    ),
    ("response_format schema description", _schema_format(description=f"from {EMAIL}"), EMAIL),
    ("response_format schema enum", _schema_format(enum=[EMAIL]), EMAIL),
    (
        "response_format schema name",
        lambda r: r.update(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "a", "description": f"for {EMAIL}", "schema": {"type": "object"}},
            }
        ),
        EMAIL,
    ),
    ("user", lambda r: r.update(user=EMAIL), EMAIL),
    ("safety_identifier", lambda r: r.update(safety_identifier=EMAIL), EMAIL),
    ("prompt_cache_key", lambda r: r.update(prompt_cache_key=EMAIL), EMAIL),
    ("metadata value", lambda r: r.update(metadata={"owner": EMAIL}), EMAIL),
    ("metadata key", lambda r: r.update(metadata={EMAIL: "owner"}), EMAIL),
    ("stop string", lambda r: r.update(stop=f"\n{EMAIL}"), EMAIL),
    ("stop list", lambda r: r.update(stop=["END", EMAIL]), EMAIL),
    ("prediction", lambda r: r.update(prediction={"type": "content", "content": f"Dear {EMAIL}"}), EMAIL),
    (
        "web_search_options",
        lambda r: r.update(
            web_search_options={"user_location": {"type": "approximate", "approximate": {"city": EMAIL}}}
        ),
        EMAIL,
    ),
    ("a field this gateway does not know yet", lambda r: r.update(future_field={"deep": [{"x": [EMAIL]}]}), EMAIL),
]


@pytest.mark.parametrize(("edit", "marker"), [pytest.param(e, m, id=c) for c, e, m in OPENAI_FIELDS])
def test_openai_chat_every_field_that_reaches_a_provider_is_scanned(edit: Edit, marker: str) -> None:
    body = openai_request()
    edit(body)
    parsed = OpenAIFrontend().parse_chat(body)  # the app's request is valid
    assert sent_to(parsed.request, marker), "the field must reach at least one provider"
    result = CLASSIFIER.classify(header=None, texts=lambda: chat_texts(parsed.request))
    assert (result.data_class, result.raised_because) == ("personal", "personal data detected (email)")


# --- Anthropic Messages ------------------------------------------------------------------------


def anthropic_request() -> dict[str, Any]:
    return {
        "model": "claude",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"}]},
        ],
        "tools": [
            {
                "name": "weather",
                "description": "Current weather for a city.",
                "input_schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "description": "City name"}},
                },
            }
        ],
    }


def _turn(i: int, *blocks: dict[str, Any]) -> Edit:
    return lambda r: r["messages"].__setitem__(i, {"role": r["messages"][i]["role"], "content": list(blocks)})


def _tool_use(**fields: Any) -> Edit:
    return lambda r: r["messages"][1]["content"][1].update(fields)


def _tool_result(**fields: Any) -> Edit:
    return lambda r: r["messages"][2]["content"][0].update(fields)


def _input_schema(**fields: Any) -> Edit:
    return lambda r: r["tools"][0]["input_schema"]["properties"]["city"].update(fields)


def _pdf(**fields: Any) -> dict[str, Any]:
    return {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PNG}, **fields}


# (case, edit, does the gateway send this field to any provider at all)
ANTHROPIC_FIELDS: list[tuple[str, Edit, bool]] = [
    ("system string", lambda r: r.update(system=f"Reply to {EMAIL}"), True),
    (
        "system blocks",
        lambda r: r.update(
            system=[
                {"type": "text", "text": "Be brief."},
                {"type": "text", "text": f"Reply to {EMAIL}", "cache_control": {"type": "ephemeral"}},
            ]
        ),
        True,
    ),
    ("user content", lambda r: r["messages"][0].update(content=f"I am {EMAIL}"), True),
    ("user text block", _turn(0, {"type": "text", "text": f"I am {EMAIL}"}), True),
    (
        "mid-conversation system message",
        lambda r: r["messages"].insert(1, {"role": "system", "content": f"Reply to {EMAIL}"}),
        True,
    ),
    (
        "image URL",
        _turn(
            0,
            {"type": "text", "text": "Look."},
            {"type": "image", "source": {"type": "url", "url": f"https://img.example.com/{EMAIL}/a.png"}},
        ),
        True,
    ),
    (
        "image URL query, percent-encoded",
        _turn(
            0,
            {"type": "text", "text": "Look."},
            {"type": "image", "source": {"type": "url", "url": f"https://img.example.com/a.png?owner={PERCENT}"}},
        ),
        True,
    ),
    ("document title", _turn(0, _pdf(title=f"{EMAIL}.pdf"), {"type": "text", "text": "Summarise."}), True),
    (
        "plain-text document",
        _turn(
            0,
            {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": f"Invoice for {EMAIL}"},
            },
        ),
        True,
    ),
    ("assistant text", lambda r: r["messages"][1]["content"][0].update(text=f"Noted, {EMAIL}."), True),
    ("tool_use id", lambda r: (_tool_use(id=f"toolu_{EMAIL}")(r), _tool_result(tool_use_id=f"toolu_{EMAIL}")(r)), True),
    ("tool_use name", lambda r: (_tool_use(name=EMAIL)(r), r["tools"][0].update(name=EMAIL)), True),
    ("tool_use input value", _tool_use(input={"city": "Paris", "notify": EMAIL}), True),
    ("tool_use input key", _tool_use(input={EMAIL: True}), True),
    ("tool_use nested input", _tool_use(input={"to": [{"who": {"address": EMAIL}}]}), True),
    ("tool_result string", _tool_result(content=f"Sent to {EMAIL}"), True),
    ("tool_result text block", _tool_result(content=[{"type": "text", "text": f"Sent to {EMAIL}"}]), True),
    (
        "tool_result image URL",
        _tool_result(
            content=[
                {"type": "text", "text": "chart:"},
                {"type": "image", "source": {"type": "url", "url": f"https://img.example.com/{EMAIL}.png"}},
            ]
        ),
        True,
    ),
    ("tool description", lambda r: r["tools"][0].update(description=f"Mails {EMAIL}"), True),
    ("input_schema description", _input_schema(description=f"Ask {EMAIL}"), True),
    ("input_schema enum", _input_schema(enum=["Paris", EMAIL]), True),
    ("input_schema default", _input_schema(default=EMAIL), True),
    (
        "input_schema property name",
        lambda r: r["tools"][0]["input_schema"]["properties"].update({EMAIL: {"type": "string"}}),
        True,
    ),
    (
        "tool_choice name",
        lambda r: (r["tools"][0].update(name=EMAIL), r.update(tool_choice={"type": "tool", "name": EMAIL})),
        True,
    ),
    ("stop_sequences", lambda r: r.update(stop_sequences=["END", EMAIL]), True),
    ("metadata.user_id", lambda r: r.update(metadata={"user_id": EMAIL}), True),
    (
        "output_config schema",
        lambda r: r.update(
            output_config={
                "format": {
                    "type": "json_schema",
                    "schema": {
                        "type": "object",
                        "properties": {"to": {"type": "string", "description": f"e.g. {EMAIL}"}},
                    },
                }
            }
        ),
        True,
    ),
    # No internal equivalent: dropped across APIs, sent as they are to an Anthropic backend (the pass-through).
    (
        "thinking block",
        _turn(
            1,
            {"type": "thinking", "thinking": f"The user is {EMAIL}", "signature": "s"},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}},
        ),
        False,
    ),
    ("document context", _turn(0, _pdf(context=f"From {EMAIL}"), {"type": "text", "text": "Summarise."}), False),
    (
        "cache_control",
        _turn(0, {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral", "x": EMAIL}}),
        False,
    ),
    ("an unknown top-level field", lambda r: r.update(future_field={"x": EMAIL}), False),
]


@pytest.mark.parametrize(("edit", "sent"), [pytest.param(e, s, id=c) for c, e, s in ANTHROPIC_FIELDS])
def test_anthropic_messages_every_field_that_reaches_a_provider_is_scanned(edit: Edit, sent: bool) -> None:
    body = anthropic_request()
    edit(body)
    parsed = AnthropicFrontend().parse_chat(body)
    # The internal form is what every translated request is built from; `sent`: it carries the field.
    reached = sent_to(parsed.request, PERCENT if PERCENT in str(body) else EMAIL)
    assert bool(reached) == sent, f"sent to {reached}"
    if sent:
        assert "anthropic" in reached  # the Anthropic translator carries it too
    # An Anthropic backend gets the app's own body (the pass-through): every field is sent, and scanned.
    result = CLASSIFIER.classify(header=None, texts=lambda: sendable_texts(parsed))
    assert (result.data_class, result.raised_because) == ("personal", "personal data detected (email)")


# --- embeddings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"model": "embed", "input": f"I am {EMAIL}"}, id="string"),
        pytest.param({"model": "embed", "input": ["hello", f"I am {EMAIL}"]}, id="list of strings"),
        pytest.param({"model": "embed", "input": [[101, 2023], f"I am {EMAIL}"]}, id="token lists and a string"),
        pytest.param({"model": "embed", "input": "hello", "user": EMAIL}, id="user"),
        pytest.param({"model": "embed", "input": "hello", "metadata": {"owner": EMAIL}}, id="an unknown field"),
    ],
)
def test_embeddings_every_field_that_reaches_a_provider_is_scanned(body: dict[str, Any]) -> None:
    _model, parsed = OpenAIFrontend().parse_embeddings(body)
    upstream = build_translator(Provider(name="o", type="openai", base_url="https://p.example/v1"))
    assert EMAIL.encode() in upstream.embeddings_request(parsed, model="m").body
    assert found(embedding_texts(parsed)) == 1


def test_token_id_inputs_are_walked_and_hold_no_text() -> None:
    assert found(embedding_texts({"model": "embed", "input": [[1, 2, 3], [4, 5]]})) == 0
    assert found(embedding_texts({"model": "embed", "input": [1, 2, 3]})) == 0
