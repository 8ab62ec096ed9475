"""The Anthropic Messages front end: Anthropic requests in, Anthropic messages and events out.

This module covers request parsing. Rendering, streaming and the tests that matter
most, which drive the official `anthropic` SDK against the front end's bytes through
an in-memory transport (no sockets), are in test_anthropic_frontend_output.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from proxy.errors import ApiError
from tests.unit.anthropic_frontend_common import FRONTEND, PNG, WEATHER_TOOL


def parse(**body: Any) -> dict[str, Any]:
    base = {"model": "claude-route", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    return FRONTEND.parse_chat({**base, **body}).request


def bad(body: Any) -> ApiError:
    with pytest.raises(ApiError) as err:
        FRONTEND.parse_chat(body)
    assert err.value.status == 400
    return err.value


# --- request ---------------------------------------------------------------------------------


def test_minimal_request() -> None:
    parsed = FRONTEND.parse_chat(
        {"model": "claude-route", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert (parsed.model, parsed.stream, parsed.include_usage) == ("claude-route", False, True)
    assert parsed.request == {
        "model": "claude-route",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 100,
    }


def test_system_string_and_blocks() -> None:
    assert parse(system="Be brief.")["messages"][0] == {"role": "system", "content": "Be brief."}
    blocks = [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Be kind.", "cache_control": {"type": "ephemeral"}},
    ]
    # cache_control becomes the internal breakpoint mark (`proxy.providers.cache_points`)
    assert parse(system=blocks)["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind.", "_cache_point": {}}],
    }


def test_sampling_stop_metadata_stream_and_dropped_fields() -> None:
    parsed = FRONTEND.parse_chat(
        {
            "model": "m",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "stop_sequences": ["\n\nHuman:"],
            "metadata": {"user_id": "u-1"},
            "thinking": {"type": "adaptive"},
            "service_tier": "auto",
        }
    )
    assert parsed.stream is True
    request = parsed.request
    assert request["stream"] is True
    assert (request["temperature"], request["top_p"], request["stop"], request["user"]) == (
        0.2,
        0.9,
        ["\n\nHuman:"],
        "u-1",
    )
    assert not {"top_k", "thinking", "service_tier", "metadata"} & set(request)


def test_multi_turn_with_tools_images_and_tool_results() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                {"type": "text", "text": "Weather where these were taken?"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "two places", "signature": "sig"},
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"location": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "is_error": False,
                    "content": [
                        {"type": "text", "text": "25C"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    ],
                },
                {"type": "text", "text": "Which is warmer?"},
            ],
        },
    ]
    request = parse(messages=messages, tools=[WEATHER_TOOL])
    assert request["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                {"type": "text", "text": "Weather where these were taken?"},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking both.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "25C"},
        # Tool messages carry text only: the image a tool returned follows as user content.
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "text", "text": "Which is warmer?"},
            ],
        },
    ]


def test_mid_conversation_system_messages_keep_their_place() -> None:
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "system", "content": [{"type": "text", "text": "From now on, answer in French."}]},
    ]
    assert parse(system="Be brief.", messages=messages)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "system", "content": "From now on, answer in French."},
    ]


def test_assistant_with_only_tool_use_has_null_content() -> None:
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]},
    ]
    request = parse(messages=messages, tools=[{**WEATHER_TOOL, "name": "f"}])
    assert request["messages"][1]["content"] is None
    assert request["messages"][2] == {"role": "tool", "tool_call_id": "toolu_1", "content": ""}


def test_documents() -> None:
    pdf = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        "title": "q3.pdf",
    }
    text_doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain words"}}
    content = parse(messages=[{"role": "user", "content": [pdf, text_doc]}])["messages"][0]["content"]
    assert content == [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "q3.pdf"}},
        {"type": "text", "text": "plain words"},
    ]


@pytest.mark.parametrize(
    ("tool_choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}, None),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
    ],
)
def test_tools_and_tool_choice(tool_choice: dict[str, Any], expected: Any, parallel: Any) -> None:
    request = parse(tools=[{**WEATHER_TOOL, "strict": True}], tool_choice=tool_choice)
    assert request["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER_TOOL["input_schema"],
                "description": WEATHER_TOOL["description"],
                "strict": True,
            },
        }
    ]
    assert request["tool_choice"] == expected
    assert request.get("parallel_tool_calls") == parallel


def test_output_config_format_becomes_a_strict_json_schema() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    request = parse(output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "low"})
    assert request["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


def block_message(*blocks: Any, role: str = "user") -> dict[str, Any]:
    return {
        "model": "m",
        "max_tokens": 5,
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": role, "content": list(blocks)},
        ],
    }


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ([], None, "JSON object"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model", "model"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens", "max_tokens"),
        ({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "max_tokens", "positive"),
        ({"model": "m", "max_tokens": 5, "messages": []}, "messages", "non-empty"),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]},
            "messages.0.role",
            "'robot'",
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": [{"type": "image"}]}]},
            "messages.0.content.0",
            "text block",
        ),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 3}]}, "messages.0.content", "string"),
        (block_message({"type": "foo"}), "messages.2.content.0", "unknown block type 'foo'"),
        (
            block_message({"type": "text", "text": "x"}, {"type": "web_search_tool_result"}),
            "messages.2.content.1",
            "not supported",
        ),
        (block_message({"type": "text", "text": 3}), "messages.2.content.0.text", "string"),
        (block_message({"type": "tool_use", "id": "t", "name": "f", "input": {}}), "messages.2.content.0", "user"),
        (
            block_message({"type": "tool_use", "id": "t", "name": "f", "input": []}, role="assistant"),
            "messages.2.content.0.input",
            "object",
        ),
        (
            block_message({"type": "image", "source": {"type": "file", "file_id": "f"}}),
            "messages.2.content.0.source.type",
            "file",
        ),
        (
            block_message({"type": "image", "source": {"type": "base64", "data": PNG}}),
            "messages.2.content.0.source.media_type",
            "media_type",
        ),
        (block_message({"type": "tool_result", "content": "x"}), "messages.2.content.0.tool_use_id", "tool_use_id"),
        (
            block_message({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "video"}]}),
            "messages.2.content.0.content.0",
            "'video'",
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "system": 4},
            "system",
            "system",
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
            "stream",
            "boolean",
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{"name": "f"}]},
            "tools.0.input_schema",
            "object",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            "tools.0.type",
            "server tool",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
                "tools": [WEATHER_TOOL],
                "tool_choice": {"type": "tool"},
            },
            "tool_choice.name",
            "name",
        ),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "stop_sequences": "END"},
            "stop_sequences",
            "array",
        ),
    ],
)
def test_malformed_requests_name_the_field(body: Any, param: str | None, words: str) -> None:
    error = bad(body)
    assert error.param == param
    assert words in error.message
    if param:
        assert error.message.startswith(param + ":")
