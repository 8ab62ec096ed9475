"""Pure checks on what apps send: JSON depth, what errors quote, translators on mistyped fields."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.errors import ECHO_LIMIT, ApiError, echo
from proxy.frontends.openai_chat import error_for_unknown_model
from proxy.json_limits import MAX_DEPTH, WRITER_DEPTH, loads_bounded, nests_deeper, too_deep
from proxy.providers.anthropic_request import messages_body
from proxy.providers.gemini_request import gemini_chat_body


def arrays(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_orjson_writes_what_the_limit_leaves_room_for() -> None:
    assert WRITER_DEPTH >= MAX_DEPTH + 16  # translation nests request fields a few levels deeper


@pytest.mark.parametrize("depth", [1, 2, MAX_DEPTH - 1, MAX_DEPTH])
def test_depth_up_to_the_limit_passes(depth: int) -> None:
    raw = orjson.dumps(arrays(depth))
    assert not nests_deeper(arrays(depth)) and not too_deep(raw, orjson.loads(raw))


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 253, 254, 255, 1000, 1024])
def test_depth_past_the_limit_is_caught(depth: int) -> None:
    raw = orjson.dumps(arrays(depth)) if depth <= WRITER_DEPTH else b"[" * depth + b"]" * depth
    assert too_deep(raw, orjson.loads(raw))


def test_objects_and_arrays_both_count_and_strings_do_not() -> None:
    value: Any = 1
    for i in range(MAX_DEPTH):
        value = {"k": value} if i % 2 else [value]
    assert not nests_deeper(value) and nests_deeper([value])
    many_brackets = {"text": "[" * 10_000}  # a big body with brackets in strings: the exact check runs
    assert not too_deep(orjson.dumps(many_brackets), many_brackets)


def test_embedded_json_is_bounded_too() -> None:
    assert loads_bounded('{"a": [1]}') == {"a": [1]}
    for text in ("[" * 200 + "]" * 200, "[" * 5000 + "]" * 5000, "{", ""):
        with pytest.raises(ValueError):
            loads_bounded(text)


def test_echo_quotes_briefly() -> None:
    assert echo("x" * 100_000) == repr("x" * ECHO_LIMIT + "…")
    assert echo({"a": "x" * 1000}) == "an object" and echo([1] * 1000) == "an array"
    assert echo(None) == "None" and echo(1.5) == "1.5"
    assert len(ApiError(400, "y" * 100_000).message) < 5000


def test_unknown_model_message_is_short_whatever_the_name_and_the_route_count() -> None:
    error = error_for_unknown_model("m" * 100_000, [f"route-{i}" for i in range(500)])
    assert error.status == 404 and len(error.message) < 1000 and "480 more" in error.message


GEMINI_MISTYPED = [
    ({"stop": 5}, "stop"),
    ({"stop": [1, 2]}, "stop"),
    ({"stop": {"a": 1}}, "stop"),
    ({"temperature": "x"}, "temperature"),
    ({"n": 1.5}, "n"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"response_format": 5}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": 5}}}, "response_format.json_schema.schema"),
    ({"tools": 5}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": 5}}]}, "tools[0].function.name"),
    ({"messages": 5}, "messages"),
    ({"messages": [5]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content[0].text"),
    (
        {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": 5}]}]},
        "messages[0].content[0].input_audio",
    ),
    ({"messages": [{"role": "assistant", "tool_calls": 5}]}, "messages[0].tool_calls"),
    (
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 5}}]}]},
        "messages[0].tool_calls[0].function.arguments",
    ),
    (
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[" * 3000 + "]" * 3000}}],
                }
            ]
        },
        "messages[0].tool_calls[0].function.arguments",
    ),
    ({"messages": [{"role": "tool", "tool_call_id": ["c"], "content": "x"}]}, "messages[0].tool_call_id"),
]


@pytest.mark.parametrize(("fields", "param"), GEMINI_MISTYPED, ids=[p for _, p in GEMINI_MISTYPED])
def test_gemini_translation_refuses_mistyped_fields_by_name(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as caught:
        gemini_chat_body({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields})
    assert caught.value.status == 400 and caught.value.param == param


def test_deep_tool_results_reach_gemini_as_text() -> None:
    deep = "[" * 3000 + "]" * 3000
    body = gemini_chat_body(
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": deep},
            ]
        }
    )
    assert body["contents"][2]["parts"][0]["functionResponse"]["response"] == {"output": deep}


def test_anthropic_translation_refuses_deep_tool_arguments_by_name() -> None:
    with pytest.raises(ApiError) as caught:
        messages_body(
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "f", "arguments": "[" * 3000 + "]" * 3000},
                            }
                        ],
                    },
                ]
            },
            model="m",
            stream=False,
        )
    assert caught.value.status == 400 and caught.value.param == "messages[1].tool_calls[0].function.arguments"
