"""The Gemini translator: OpenAI-shaped requests out, Gemini wire format in, and back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from proxy.errors import ApiError
from proxy.providers.base import UpstreamProtocolError, Usage
from proxy.providers.gemini import GeminiTranslator
from proxy.providers.gemini_request import DUMMY_THOUGHT_SIGNATURE
from proxy.snapshot import Provider, parse_struct

MODEL = "gemini-2.5-flash"


def translator(api_key: str | None = "AIza-test") -> GeminiTranslator:
    provider = parse_struct(
        Provider,
        {
            "name": "gemini",
            "type": "gemini",
            "baseUrl": "https://generativelanguage.googleapis.com/",
            "apiKey": api_key,
        },
    )
    return GeminiTranslator(provider)


def body_of(request: dict[str, Any], *, stream: bool = False) -> dict[str, Any]:
    upstream = translator().chat_request(request, model=MODEL, stream=stream)
    body: dict[str, Any] = json.loads(upstream.body)
    return body


def reply(data: dict[str, Any]) -> tuple[dict[str, Any], Usage]:
    return translator().chat_response(json.dumps(data).encode())


# --- requests -------------------------------------------------------------------------------


def test_plain_chat_goes_to_generate_content_with_the_api_key_header() -> None:
    upstream = translator().chat_request({"messages": [{"role": "user", "content": "hi"}]}, model=MODEL, stream=False)

    assert upstream.url == f"https://generativelanguage.googleapis.com/v1beta/models/{MODEL}:generateContent"
    assert upstream.headers["x-goog-api-key"] == "AIza-test"
    assert "authorization" not in upstream.headers
    assert upstream.headers["content-type"] == "application/json"
    assert upstream.stream is False
    assert json.loads(upstream.body) == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_streaming_uses_the_sse_endpoint() -> None:
    upstream = translator().chat_request({"messages": [{"role": "user", "content": "hi"}]}, model=MODEL, stream=True)

    assert upstream.url.endswith(f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse")
    assert upstream.headers["accept"] == "text/event-stream"
    assert upstream.stream is True


def test_no_api_key_sends_no_auth_header_and_server_comes_from_base_url() -> None:
    t = translator(api_key=None)
    upstream = t.chat_request({"messages": [{"role": "user", "content": "hi"}]}, model=MODEL, stream=False)

    assert "x-goog-api-key" not in upstream.headers
    assert (t.system, t.server_address, t.server_port) == ("gcp.gemini", "generativelanguage.googleapis.com", 443)


def test_system_and_developer_messages_become_the_system_instruction() -> None:
    body = body_of(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Bonjour"},
                {"role": "user", "content": "How are you?"},
            ]
        }
    )

    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Hello"}]},
        {"role": "model", "parts": [{"text": "Bonjour"}]},
        {"role": "user", "parts": [{"text": "How are you?"}]},
    ]


def conversation_with_tools() -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_b", "type": "function", "function": {"name": "forecast", "arguments": '{"city":"Rome"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_b", "content": '{"sky": "sunny"}'},
        {"role": "tool", "tool_call_id": "call_a", "content": "18 degrees"},
        {"role": "user", "content": "Thanks"},
    ]


def test_tool_calls_and_results_map_to_function_call_and_response_parts() -> None:
    contents = body_of({"messages": conversation_with_tools()})["contents"]

    model_turn, results, follow_up = contents[1], contents[2], contents[3]
    assert model_turn["role"] == "model"
    assert [p["functionCall"] for p in model_turn["parts"]] == [
        {"name": "weather", "args": {"city": "Paris"}},
        {"name": "forecast", "args": {"city": "Rome"}},
    ]
    # Both results answer one model turn, each named after the call its id points to.
    assert results == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "forecast", "response": {"sky": "sunny"}}},
            {"functionResponse": {"name": "weather", "response": {"output": "18 degrees"}}},
        ],
    }
    assert follow_up == {"role": "user", "parts": [{"text": "Thanks"}]}


def test_history_without_thought_signatures_gets_the_documented_dummy_on_the_first_call() -> None:
    parts = body_of({"messages": conversation_with_tools()})["contents"][1]["parts"]

    assert parts[0]["thoughtSignature"] == DUMMY_THOUGHT_SIGNATURE
    assert "thoughtSignature" not in parts[1]


def test_tool_result_for_an_unknown_call_id_is_a_bad_request() -> None:
    messages = [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_zzz", "content": "1"}]

    with pytest.raises(ApiError) as caught:
        body_of({"messages": messages})
    assert caught.value.status == 400
    assert "call_zzz" in caught.value.message


def test_tool_call_arguments_that_are_not_a_json_object_are_a_bad_request() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [call]}]

    with pytest.raises(ApiError) as caught:
        body_of({"messages": messages})
    assert caught.value.status == 400


def test_images_inline_from_data_urls_and_by_reference_from_https_urls() -> None:
    content = [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.WEBP?size=large", "detail": "low"}},
    ]
    parts = body_of({"messages": [{"role": "user", "content": content}]})["contents"][0]["parts"]

    assert parts == [
        {"text": "Compare"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.WEBP?size=large"}},
    ]


@pytest.mark.parametrize("url", ["ftp://example.com/a.png", "data:image/png,notbase64"])
def test_images_gemini_cannot_take_are_a_bad_request(url: str) -> None:
    content = [{"type": "image_url", "image_url": {"url": url}}]

    with pytest.raises(ApiError):
        body_of({"messages": [{"role": "user", "content": content}]})


def test_pdf_and_audio_parts_are_sent_inline() -> None:
    content = [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]
    parts = body_of({"messages": [{"role": "user", "content": content}]})["contents"][0]["parts"]

    assert parts == [
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
    ]


STRICT_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": ["string", "null"]}},
    "required": ["city"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("tool_choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "weather"}}, {"mode": "ANY", "allowedFunctionNames": ["weather"]}),
    ],
)
def test_tools_and_tool_choice(tool_choice: Any, config: dict[str, Any]) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Current weather",
                "parameters": STRICT_SCHEMA,
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "now"}},
    ]
    body = body_of({"messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": tool_choice})

    assert body["tools"] == [
        {
            "functionDeclarations": [
                # JSON Schema untouched: additionalProperties and type arrays survive.
                {"name": "weather", "description": "Current weather", "parametersJsonSchema": STRICT_SCHEMA},
                {"name": "now"},
            ]
        }
    ]
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_json_schema_response_format_asks_for_json_with_that_schema() -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "city", "schema": STRICT_SCHEMA, "strict": True}}
    config = body_of({"messages": [{"role": "user", "content": "x"}], "response_format": response_format})[
        "generationConfig"
    ]

    assert config == {"responseMimeType": "application/json", "responseJsonSchema": STRICT_SCHEMA}


def test_json_object_response_format_asks_for_json() -> None:
    request = {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}

    assert body_of(request)["generationConfig"] == {"responseMimeType": "application/json"}


def test_sampling_limits_and_stop_map_to_generation_config() -> None:
    request = {
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 10,
        "max_completion_tokens": 256,
        "stop": "END",
        "temperature": 0.2,
        "top_p": 0.9,
        "n": 2,
    }

    assert body_of(request)["generationConfig"] == {
        "maxOutputTokens": 256,
        "stopSequences": ["END"],
        "temperature": 0.2,
        "topP": 0.9,
        "candidateCount": 2,
    }


# --- responses ------------------------------------------------------------------------------


def test_text_response_becomes_a_chat_completion_with_usage_including_thoughts() -> None:
    response, usage = reply(
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {"text": "Thinking about it", "thought": True},
                            {"text": "Hello "},
                            {"text": "there"},
                        ],
                    },
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 7,
                "candidatesTokenCount": 3,
                "thoughtsTokenCount": 20,
                "totalTokenCount": 30,
            },
            "modelVersion": "gemini-2.5-flash-001",
            "responseId": "abc123",
        }
    )

    completion = ChatCompletion.model_validate(response)  # what the OpenAI SDK will see
    assert completion.id == "chatcmpl-abc123"
    assert completion.model == "gemini-2.5-flash-001"
    assert completion.choices[0].message.content == "Hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 23)
    assert completion.usage.total_tokens == 30
    assert completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 20
    assert usage == Usage(input_tokens=7, output_tokens=23)


def gemini_function_call_reply() -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {
                            "functionCall": {"name": "weather", "args": {"city": "Paris"}},
                            "thoughtSignature": "c2lnMQ==",
                        },
                        {"functionCall": {"name": "weather", "args": {"city": "Rome"}}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 9, "totalTokenCount": 14},
        "responseId": "r1",
    }


def test_function_calls_become_tool_calls_with_finish_reason_tool_calls() -> None:
    response, _ = reply(gemini_function_call_reply())

    choice = ChatCompletion.model_validate(response).choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = response["choices"][0]["message"]["tool_calls"]
    assert [(c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("function", "weather", {"city": "Paris"}),
        ("function", "weather", {"city": "Rome"}),
    ]
    ids = [c["id"] for c in calls]
    assert len(set(ids)) == 2
    assert all(i.startswith("call_") for i in ids)
    # Same upstream response, same ids: retries and logs agree.
    assert [c["id"] for c in reply(gemini_function_call_reply())[0]["choices"][0]["message"]["tool_calls"]] == ids


def test_thought_signature_survives_the_round_trip_through_the_client() -> None:
    response, _ = reply(gemini_function_call_reply())
    assistant = response["choices"][0]["message"]
    results = [{"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in assistant["tool_calls"]]

    contents = body_of({"messages": [{"role": "user", "content": "x"}, assistant, *results]})["contents"]

    assert contents[1]["parts"][0]["thoughtSignature"] == "c2lnMQ=="
    assert "thoughtSignature" not in contents[1]["parts"][1]
    assert [p["functionResponse"]["name"] for p in contents[2]["parts"]] == ["weather", "weather"]


@pytest.mark.parametrize(
    ("gemini", "openai"),
    [
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons(gemini: str, openai: str) -> None:
    response, _ = reply({"candidates": [{"content": {"parts": [{"text": "par"}]}, "finishReason": gemini}]})

    assert ChatCompletion.model_validate(response).choices[0].finish_reason == openai


def test_blocked_prompt_is_an_empty_content_filtered_completion() -> None:
    response, usage = reply(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}}
    )

    choice = ChatCompletion.model_validate(response).choices[0]
    assert (choice.message.content, choice.finish_reason) == ("", "content_filter")
    assert usage.input_tokens == 4


@pytest.mark.parametrize(
    "body", [b"<html>502</html>", b"[]", b"{}", b'{"candidates": [{"content": {"parts": "text"}}]}']
)
def test_garbage_responses_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        translator().chat_response(body)


# --- embeddings -----------------------------------------------------------------------------


def test_single_input_uses_embed_content_with_dimensions() -> None:
    upstream = translator().embeddings_request(
        {"input": "hello", "model": "ignored", "dimensions": 256, "encoding_format": "base64"},
        model="gemini-embedding-001",
    )

    assert upstream.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-embedding-001:embedContent"
    assert upstream.headers["x-goog-api-key"] == "AIza-test"
    assert json.loads(upstream.body) == {"content": {"parts": [{"text": "hello"}]}, "outputDimensionality": 256}


def test_list_input_uses_batch_embed_contents() -> None:
    upstream = translator().embeddings_request({"input": ["a", "b"]}, model="gemini-embedding-001")

    assert upstream.url.endswith("/v1beta/models/gemini-embedding-001:batchEmbedContents")
    assert json.loads(upstream.body) == {
        "requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}},
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}},
        ]
    }


@pytest.mark.parametrize("inputs", [[1, 2, 3], [[1, 2], [3]], []])
def test_token_array_inputs_are_a_bad_request(inputs: Any) -> None:
    with pytest.raises(ApiError) as caught:
        translator().embeddings_request({"input": inputs}, model="gemini-embedding-001")
    assert caught.value.status == 400


def test_embed_content_response_becomes_an_openai_embedding_list() -> None:
    body = json.dumps({"embedding": {"values": [0.5, -0.25]}}).encode()
    response, usage = translator().embeddings_response(body, model="gemini-embedding-001")

    parsed = CreateEmbeddingResponse.model_validate(response)
    assert [(d.index, d.embedding) for d in parsed.data] == [(0, [0.5, -0.25])]
    assert parsed.model == "gemini-embedding-001"
    assert usage == Usage(None, None)


def test_batch_response_keeps_input_order() -> None:
    body = json.dumps({"embeddings": [{"values": [1.0]}, {"values": [2.0]}]}).encode()
    response, _ = translator().embeddings_response(body, model="gemini-embedding-001")

    assert [(d["index"], d["embedding"]) for d in response["data"]] == [(0, [1.0]), (1, [2.0])]


def test_embeddings_garbage_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        translator().embeddings_response(b'{"embedding": {"vector": []}}', model="m")


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": {"code": 400, "message": "Bad key.", "status": "INVALID_ARGUMENT"}}', "Bad key."),
        (b'[{"error": {"code": 429, "message": "Quota hit.", "status": "RESOURCE_EXHAUSTED"}}]', "Quota hit."),
        (b"upstream connect error", "upstream connect error"),
    ],
)
def test_error_message_is_the_providers_own(body: bytes, message: str) -> None:
    assert translator().error_message(400, body) == message
