"""The Responses API front end without sockets: requests to the internal form, answers and streams back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.errors import ApiError
from proxy.frontends.openai_responses import ResponsesFrontend

TOOL = {"type": "function", "name": "get", "description": "gets", "parameters": {"type": "object"}, "strict": True}


def parse(body: dict[str, Any]) -> tuple[ResponsesFrontend, dict[str, Any]]:
    frontend = ResponsesFrontend()
    parsed = frontend.parse_chat({"model": "m", **body})
    return frontend, parsed.request


def refused(body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        ResponsesFrontend().parse_chat(body)
    assert caught.value.status == 400
    return caught.value


def test_a_string_input_and_instructions_become_system_and_user_messages():
    _, request = parse({"instructions": "be brief", "input": "hi", "max_output_tokens": 9, "temperature": 0.2})
    assert request == {
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "max_completion_tokens": 9,
        "temperature": 0.2,
    }


def test_items_become_chat_messages_with_calls_joined_to_their_assistant_turn():
    _, request = parse(
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "look"},
                        {"type": "input_image", "image_url": "https://x/a.png"},
                    ],
                },
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
                {"type": "function_call", "call_id": "c1", "name": "get", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "get", "arguments": '{"q":1}'},
                {"type": "function_call_output", "call_id": "c1", "output": "one"},
                {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
            ]
        }
    )
    assert request["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "get", "arguments": '{"q":1}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "two"}]},
    ]


def test_tools_choice_and_text_format_take_their_chat_shapes():
    _, request = parse(
        {
            "input": "hi",
            "tools": [TOOL],
            "tool_choice": {"type": "function", "name": "get"},
            "parallel_tool_calls": False,
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}},
            "reasoning": {"effort": "low"},
        }
    )
    assert request["tools"] == [
        {
            "type": "function",
            "function": {"name": "get", "description": "gets", "parameters": {"type": "object"}, "strict": True},
        }
    ]
    assert request["tool_choice"] == {"type": "function", "function": {"name": "get"}}
    assert request["parallel_tool_calls"] is False
    assert request["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    }
    assert request["reasoning_effort"] == "low"


@pytest.mark.parametrize(
    "body,param",
    [
        ({"model": "m", "input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"model": "m", "input": "x", "store": True}, "store"),
        ({"model": "m", "input": "x", "conversation": "conv_1"}, "conversation"),
        ({"model": "m", "input": "x", "background": True}, "background"),
        ({"model": "m", "input": "x", "tools": [{"type": "file_search"}]}, "tools[0].type"),
        ({"model": "m", "input": "x", "tool_choice": {"type": "web_search_preview"}}, "tool_choice.type"),
        ({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"model": "m", "input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
        ),
    ],
)
def test_what_needs_the_provider_to_keep_or_run_things_is_kept_as_a_400_by_name(body, param):
    # Parsed (a backend serving the Responses API takes the body as sent); the 400 for the others
    frontend = ResponsesFrontend()
    parsed = frontend.parse_chat(body)
    error = frontend.provider_only
    assert error is not None and error.status == 400
    assert (error.param, error.code) == (param, "unsupported_parameter")
    assert param in error.message
    assert parsed.original is body and parsed.request["messages"]  # classified and estimated as any request


def test_a_request_needing_the_provider_keeps_its_translatable_part_for_classification():
    frontend = ResponsesFrontend()
    body = {
        "model": "m",
        "previous_response_id": "resp_1",
        "tools": [{"type": "web_search"}, TOOL],
        "input": [
            {"type": "item_reference", "id": "msg_1"},
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}, {"type": "input_file", "file_id": "f"}]},
        ],
    }
    parsed = frontend.parse_chat(body)
    assert frontend.provider_only is not None and frontend.provider_only.param == "previous_response_id"
    assert parsed.request["messages"][0]["content"][0] == {"type": "text", "text": "hi"}
    assert len(parsed.request["messages"]) == 1  # the item reference left out
    assert [t["function"]["name"] for t in parsed.request["tools"]] == ["get"]
    assert body["tools"][0] == {"type": "web_search"}  # the app's body untouched


def test_a_translatable_request_needs_no_provider():
    frontend = ResponsesFrontend()
    parsed = frontend.parse_chat({"model": "m", "input": "x", "store": False})
    assert frontend.provider_only is None and parsed.original == {"model": "m", "input": "x", "store": False}


@pytest.mark.parametrize(
    "body,param",
    [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "nope"}]}]}, "input[0].content[0].type"),
        ({"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
        ({"model": "m", "input": "x", "stream": "yes"}, "stream"),
        ({"model": "m", "input": "x", "max_output_tokens": -1}, "max_output_tokens"),
        (
            {"model": "m", "input": "x", "tools": [{"type": "function", "name": "f", "parameters": []}]},
            "tools[0].parameters",
        ),
        ({"model": "m", "input": "x", "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema"),
        ({"model": "m", "input": "x", "text": {"format": {"type": []}}}, "text.format.type"),
    ],
)
def test_malformed_requests_name_the_field(body, param):
    assert refused(body).param == param


CHAT = {
    "id": "chatcmpl-abc",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "up-model",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "hello",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{}"}}],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "total_tokens": 14,
        "prompt_tokens_details": {"cached_tokens": 6},
        "completion_tokens_details": {"reasoning_tokens": 2},
    },
}


def test_a_chat_completion_renders_as_a_response_echoing_the_request():
    frontend, _ = parse({"instructions": "be brief", "input": "hi", "tools": [TOOL], "temperature": 0.3})
    response = frontend.render_chat(CHAT)
    assert (response["id"], response["object"], response["status"]) == ("resp_abc", "response", "completed")
    assert (response["created_at"], response["model"]) == (1700000000, "up-model")
    assert response["output"] == [
        {
            "type": "message",
            "id": "msg_abc",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "hello", "annotations": [], "logprobs": []}],
        },
        {
            "type": "function_call",
            "id": "fc_abc_0",
            "call_id": "call_1",
            "name": "get",
            "arguments": "{}",
            "status": "completed",
        },
    ]
    assert response["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 6},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 14,
    }
    assert (response["instructions"], response["tools"], response["temperature"]) == ("be brief", [TOOL], 0.3)
    assert response["store"] is False and response["previous_response_id"] is None


def test_an_answer_cut_by_the_output_bound_is_incomplete():
    frontend, _ = parse({"input": "hi", "max_output_tokens": 1})
    chat = {
        **CHAT,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "he"}, "finish_reason": "length"}],
    }
    response = frontend.render_chat(chat)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}


def events(data: bytes) -> list[dict[str, Any]]:
    """SSE bytes -> the events' data; each event's name must be its data's type."""
    out = []
    for block in data.decode().split("\n\n"):
        if not block:
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        payload = json.loads(lines["data"])
        assert lines["event"] == payload["type"]
        out.append(payload)
    return out


def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-s1", "created": 1, "model": "up-model", "choices": choices, "usage": usage}


def test_a_stream_of_text_and_a_call_becomes_the_responses_events_in_order():
    frontend, _ = parse({"input": "hi", "tools": [TOOL], "stream": True})
    encoder = frontend.stream_encoder(include_usage=True)
    raw = b"".join(
        [
            encoder.encode(chunk({"role": "assistant", "content": "he"})),
            encoder.encode(chunk({"content": "llo"})),
            encoder.encode(
                chunk({"tool_calls": [{"index": 0, "id": "call_9", "function": {"name": "get", "arguments": '{"q"'}}]})
            ),
            encoder.encode(chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}, "tool_calls")),
            encoder.encode(chunk({}, usage={"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8})),
            encoder.finish(),
        ]
    )
    got = events(raw)
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    assert [e["type"] for e in got] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert got[0]["response"]["status"] == "in_progress" and got[0]["response"]["output"] == []
    assert got[6]["text"] == "hello" and got[6]["item_id"] == got[2]["item"]["id"] == "msg_s1"
    assert got[9]["item"] == {
        "type": "function_call",
        "id": "fc_s1_0",
        "call_id": "call_9",
        "name": "get",
        "arguments": "",
        "status": "in_progress",
    }
    assert got[12]["arguments"] == '{"q": 1}'
    final = got[-1]["response"]
    assert final["status"] == "completed" and final["id"] == "resp_s1"
    assert [item["type"] for item in final["output"]] == ["message", "function_call"]
    assert final["usage"]["input_tokens"] == 3 and final["usage"]["output_tokens"] == 5
    assert final["tools"] == [TOOL]


def test_a_stream_that_fails_midway_ends_with_error_and_response_failed():
    frontend, _ = parse({"input": "hi", "stream": True})
    encoder = frontend.stream_encoder(include_usage=True)
    raw = encoder.encode(chunk({"content": "he"})) + encoder.error(
        ApiError(502, "provider p failed mid-stream: cut", "api_error", "stream_cut")
    )
    got = events(raw)
    assert [e["type"] for e in got[-2:]] == ["error", "response.failed"]
    assert got[-2]["code"] == "stream_cut" and "mid-stream" in got[-2]["message"]
    assert got[-1]["response"]["status"] == "failed"
    assert got[-1]["response"]["error"] == {"code": "stream_cut", "message": "provider p failed mid-stream: cut"}


def test_a_stream_cut_by_the_output_bound_ends_incomplete():
    frontend, _ = parse({"input": "hi", "stream": True, "max_output_tokens": 1})
    encoder = frontend.stream_encoder(include_usage=True)
    got = events(encoder.encode(chunk({"content": "he"}, "length")) + encoder.finish())
    assert got[-1]["type"] == "response.incomplete"
    assert got[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
