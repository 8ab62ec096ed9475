"""The Anthropic provider translator: internal (OpenAI-shaped) requests out, Anthropic answers back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletion

from proxy.errors import ApiError
from proxy.providers.anthropic import AnthropicTranslator
from proxy.providers.anthropic_request import DEFAULT_MAX_TOKENS, JSON_OBJECT_INSTRUCTION
from proxy.providers.base import CACHE_WRITE_TOKENS, UnsupportedOperation, UpstreamProtocolError, public_usage
from proxy.snapshot import Provider


def make_translator(**overrides: Any) -> AnthropicTranslator:
    fields = {"name": "claude", "type": "anthropic", "base_url": "https://api.anthropic.com", "api_key": "sk-ant-test"}
    return AnthropicTranslator(Provider(**{**fields, **overrides}))


def body_for(request: dict[str, Any], *, stream: bool = False, model: str = "claude-sonnet-4-5") -> dict[str, Any]:
    upstream = make_translator().chat_request(request, model=model, stream=stream)
    body: dict[str, Any] = json.loads(upstream.body)
    return body


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# --- request ---------------------------------------------------------------------------------


def test_url_headers_and_server() -> None:
    translator = make_translator(base_url="https://claude.internal:8443/")
    upstream = translator.chat_request({"messages": [user("hi")]}, model="m", stream=True)
    assert upstream.url == "https://claude.internal:8443/v1/messages"
    assert upstream.stream is True
    assert upstream.headers["x-api-key"] == "sk-ant-test"
    assert upstream.headers["anthropic-version"] == "2023-06-01"
    assert upstream.headers["accept"] == "text/event-stream"
    assert upstream.headers["content-type"] == "application/json"
    assert (translator.system, translator.server_address, translator.server_port) == (
        "anthropic",
        "claude.internal",
        8443,
    )


def test_no_api_key_no_auth_header() -> None:
    upstream = make_translator(api_key=None).chat_request({"messages": [user("hi")]}, model="m", stream=False)
    assert "x-api-key" not in upstream.headers
    assert upstream.headers["accept"] == "application/json"


def test_minimal_body_uses_the_upstream_model_and_default_max_tokens() -> None:
    body = body_for({"model": "app-name", "messages": [user("hello")]})
    assert body == {
        "model": "claude-sonnet-4-5",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
    }


def test_max_tokens_prefers_max_completion_tokens() -> None:
    assert body_for({"messages": [user("x")], "max_tokens": 50})["max_tokens"] == 50
    assert body_for({"messages": [user("x")], "max_tokens": 50, "max_completion_tokens": 70})["max_tokens"] == 70
    with pytest.raises(ApiError) as err:
        body_for({"messages": [user("x")], "max_tokens": 0})
    assert err.value.status == 400 and err.value.param == "max_tokens"


def test_system_and_developer_messages_become_system() -> None:
    assert body_for({"messages": [{"role": "system", "content": "Be brief."}, user("x")]})["system"] == "Be brief."
    body = body_for(
        {
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "developer", "content": "Answer in French."},
                user("x"),
            ]
        }
    )
    assert body["system"] == [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer in French."}]
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_multi_turn_merges_consecutive_roles() -> None:
    body = body_for(
        {
            "messages": [
                user("one"),
                user("two"),
                {"role": "assistant", "content": "three"},
                {"role": "assistant", "content": [{"type": "text", "text": "four"}]},
                user("five"),
            ]
        }
    )
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "three"}, {"type": "text", "text": "four"}]},
        {"role": "user", "content": [{"type": "text", "text": "five"}]},
    ]


def test_images_from_data_and_http_urls() -> None:
    content = [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    blocks = body_for({"messages": [{"role": "user", "content": content}]})["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}


@pytest.mark.parametrize("url", ["ftp://example.com/cat.jpg", "data:image/png,rawbytes"])
def test_bad_image_urls_are_refused(url: str) -> None:
    content = [{"type": "image_url", "image_url": {"url": url}}]
    with pytest.raises(ApiError) as err:
        body_for({"messages": [{"role": "user", "content": content}]})
    assert err.value.status == 400 and err.value.param == "messages[0].content[0].image_url"


def test_inline_pdf_becomes_a_document_block() -> None:
    part = {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}
    blocks = body_for({"messages": [{"role": "user", "content": [part]}]})["messages"][0]["content"]
    assert blocks == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
            "title": "a.pdf",
        }
    ]


def test_tool_calls_and_tool_results() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
    ]
    body = body_for(
        {
            "messages": [
                user("Weather and time in Paris?"),
                {"role": "assistant", "content": None, "tool_calls": calls},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "14:02"}]},
                user("Thanks, and tomorrow?"),
            ]
        }
    )
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}},
        ],
    }
    # Both tool results and the next user text share ONE user turn, tool results first.
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, sunny"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "14:02"}]},
            {"type": "text", "text": "Thanks, and tomorrow?"},
        ],
    }
    assert len(body["messages"]) == 3


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
def test_malformed_tool_arguments_are_a_bad_request(arguments: str) -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
    with pytest.raises(ApiError) as err:
        body_for({"messages": [user("x"), {"role": "assistant", "tool_calls": [call]}]})
    assert err.value.status == 400
    assert err.value.param == "messages[1].tool_calls[0].function.arguments"
    assert "messages[1].tool_calls[0].function.arguments" in err.value.message


def test_tools_and_tool_choice() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "now"}},
    ]
    body = body_for({"messages": [user("x")], "tools": tools, "tool_choice": "required"})
    assert body["tools"] == [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "description": "Weather for a city",
            "strict": True,
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == {"type": "any"}


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        (None, None, None),
    ],
)
def test_tool_choice_mapping(choice: Any, parallel: Any, expected: Any) -> None:
    request = {"messages": [user("x")], "tools": [{"type": "function", "function": {"name": "f"}}]}
    if choice is not None:
        request["tool_choice"] = choice
    if parallel is not None:
        request["parallel_tool_calls"] = parallel
    assert body_for(request).get("tool_choice") == expected


def test_tool_choice_without_tools_is_dropped() -> None:
    assert "tool_choice" not in body_for({"messages": [user("x")], "tool_choice": "required"})


def test_sampling_stop_user_and_stream() -> None:
    body = body_for(
        {"messages": [user("x")], "stop": "END", "temperature": 1.5, "top_p": 0.9, "user": "u-42", "seed": 7},
        stream=True,
    )
    assert body["stop_sequences"] == ["END"]
    assert body["temperature"] == 1.0  # clamped to Anthropic's range
    assert body["top_p"] == 0.9
    assert body["metadata"] == {"user_id": "u-42"}
    assert body["stream"] is True
    assert "seed" not in body
    assert body_for({"messages": [user("x")], "stop": ["a", "b"]})["stop_sequences"] == ["a", "b"]


def test_response_format_mapping() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    strict = body_for(
        {
            "messages": [user("x")],
            "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": schema, "strict": True}},
        }
    )
    assert strict["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "system" not in strict

    loose = body_for(
        {
            "messages": [{"role": "system", "content": "Be brief."}, user("x")],
            "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": schema}},
        }
    )
    assert "output_config" not in loose
    assert loose["system"][0] == {"type": "text", "text": "Be brief."}
    assert json.dumps(schema) in loose["system"][1]["text"]

    json_object = body_for({"messages": [user("x")], "response_format": {"type": "json_object"}})
    assert json_object["system"] == JSON_OBJECT_INSTRUCTION
    assert "system" not in body_for({"messages": [user("x")], "response_format": {"type": "text"}})


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"audio": {"voice": "alloy"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"stop": 5}, "stop"),
        ({"temperature": "hot"}, "temperature"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "only system"}]}, "messages"),
    ],
)
def test_unsupported_or_malformed_requests_are_bad_requests(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as err:
        body_for({"messages": [user("x")], **extra})
    assert err.value.status == 400
    assert err.value.param == param


def test_harmless_openai_fields_are_ignored() -> None:
    extra = {"n": 1, "seed": 1, "frequency_penalty": 0.5, "presence_penalty": 0.1, "logprobs": False, "store": True}
    body = body_for({"messages": [user("x")], **extra})
    assert set(body) == {"model", "max_tokens", "messages"}


# --- response --------------------------------------------------------------------------------

# From the Messages API reference (a tool_use answer), with prompt caching counts added.
TOOL_USE_MESSAGE: dict[str, Any] = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "The user wants weather.", "signature": "EqQB"},
        {"type": "text", "text": "I'll check "},
        {"type": "text", "text": "the weather."},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "SF"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 100,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 30,
        "output_tokens": 40,
    },
}


def test_chat_response_with_text_and_tool_use() -> None:
    response, usage = make_translator().chat_response(json.dumps(TOOL_USE_MESSAGE).encode())
    ChatCompletion.model_validate(response)  # the OpenAI SDK reads it
    assert response["id"] == "chatcmpl-msg_01Aq9w938a90dw8q"
    assert response["object"] == "chat.completion"
    assert response["model"] == "claude-sonnet-4-5-20250929"
    assert isinstance(response["created"], int)
    choice = response["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check the weather."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_01A09q90qw90lq917835lq9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location": "SF"}'},
        }
    ]
    # The prompt whole, its cache reads a detail, as OpenAI documents it; the writes kept for the
    # Anthropic front end under an internal key that the OpenAI front end leaves out.
    assert public_usage(response)["usage"] == {
        "prompt_tokens": 150,
        "completion_tokens": 40,
        "total_tokens": 190,
        "prompt_tokens_details": {"cached_tokens": 30},
    }
    assert response["usage"][CACHE_WRITE_TOKENS] == 20
    assert (usage.input_tokens, usage.output_tokens) == (150, 40)
    assert (usage.cached_input_tokens, usage.cache_write_input_tokens) == (30, 20)


def test_chat_response_with_only_tool_calls_has_null_content() -> None:
    message = {**TOOL_USE_MESSAGE, "content": [TOOL_USE_MESSAGE["content"][3]]}
    response, _ = make_translator().chat_response(json.dumps(message).encode())
    assert response["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_finish_reason_mapping(stop_reason: str, finish_reason: str) -> None:
    message = {**TOOL_USE_MESSAGE, "content": [{"type": "text", "text": "hi"}], "stop_reason": stop_reason}
    response, _ = make_translator().chat_response(json.dumps(message).encode())
    assert response["choices"][0]["finish_reason"] == finish_reason


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        json.dumps({**TOOL_USE_MESSAGE, "content": "text"}).encode(),
        json.dumps({**TOOL_USE_MESSAGE, "usage": None}).encode(),
        json.dumps({**TOOL_USE_MESSAGE, "usage": {"input_tokens": "many", "output_tokens": 1}}).encode(),
        json.dumps({**TOOL_USE_MESSAGE, "content": [{"type": "text"}]}).encode(),
        json.dumps({**TOOL_USE_MESSAGE, "id": None}).encode(),
        json.dumps({"type": "error", "error": {"type": "api_error", "message": "boom"}}).encode(),
    ],
)
def test_garbage_responses_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        make_translator().chat_response(body)


def test_embeddings_are_unsupported() -> None:
    with pytest.raises(UnsupportedOperation):
        make_translator().embeddings_request({"input": "x"}, model="m")
    with pytest.raises(UnsupportedOperation):
        make_translator().embeddings_response(b"{}", model="m")


def test_error_message() -> None:
    translator = make_translator()
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert translator.error_message(529, json.dumps(body).encode()) == "Overloaded"
    assert translator.error_message(502, b"<html>" + b"x" * 300) == ("<html>" + "x" * 300)[:200]


def test_assistant_refusal_parts_are_sent_as_text() -> None:
    refusal = {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]}
    body = body_for({"messages": [user("x"), refusal, user("ok")]})
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "I can't help with that."}],
    }
