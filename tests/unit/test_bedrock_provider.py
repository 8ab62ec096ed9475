"""The Bedrock translator without sockets: Converse bodies out, Converse / ConverseStream answers in,
requests signed with the translator's clock."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from proxy.auth.aws_credentials import StaticCredentials
from proxy.auth.sigv4 import AwsCredentials, Signer
from proxy.errors import ApiError
from proxy.providers.aws_eventstream import encode_message
from proxy.providers.base import UnsupportedOperation, UpstreamProtocolError
from proxy.providers.bedrock import BedrockTranslator
from proxy.providers.bedrock_endpoint import BedrockStreamException
from proxy.snapshot import AwsKeys, BedrockSettings, Provider
from shared.scrub import Scrubber

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
KEY_ID, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
NOW = 1_700_000_000.0


def provider(**changes: Any) -> Provider:
    settings = BedrockSettings(
        region="eu-central-1", credentials=AwsKeys(access_key_id=KEY_ID, secret_access_key=SECRET)
    )
    fields: dict[str, Any] = {
        "name": "ns.bedrock",
        "type": "bedrock",
        "base_url": "https://bedrock-runtime.eu-central-1.amazonaws.com",
        "bedrock": settings,
        **changes,
    }
    return Provider(**fields)


def translator(**changes: Any) -> BedrockTranslator:
    return BedrockTranslator(provider(**changes), clock=lambda: NOW)


def body_of(request: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(translator().chat_request(request, model=MODEL, stream=False).body)  # type: ignore[no-any-return]


# --- requests --------------------------------------------------------------------------------


def test_url_encodes_the_model_id_whole() -> None:
    t = translator()
    request = {"messages": [{"role": "user", "content": "hi"}]}
    plain = t.chat_request(request, model=MODEL, stream=False)
    assert plain.url == (
        "https://bedrock-runtime.eu-central-1.amazonaws.com/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    )
    arn = "arn:aws:bedrock:eu-central-1:123456789012:inference-profile/eu.anthropic.claude"
    streamed = t.chat_request(request, model=arn, stream=True)
    assert streamed.url.endswith(
        "/model/arn%3Aaws%3Abedrock%3Aeu-central-1%3A123456789012%3Ainference-profile%2Feu.anthropic.claude/converse-stream"
    )
    assert streamed.stream and streamed.headers["accept"] == "application/vnd.amazon.eventstream"


def test_requests_are_signed_for_the_region_with_the_injected_clock() -> None:
    upstream = translator().chat_request({"messages": [{"role": "user", "content": "hi"}]}, model=MODEL, stream=False)
    headers = upstream.headers
    assert headers["x-amz-date"] == "20231114T221320Z"
    assert headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={KEY_ID}/20231114/eu-central-1/bedrock/aws4_request, "
        "SignedHeaders=accept;content-type;host;x-amz-content-sha256;x-amz-date, Signature="
    )
    # the same signer, given the same request, agrees (the fake Bedrock checks it with botocore)
    expected = Signer(region="eu-central-1", service="bedrock").sign(
        method="POST",
        url=upstream.url,
        headers={"content-type": "application/json", "accept": "application/json"},
        body=upstream.body,
        credentials=AwsCredentials(KEY_ID, SECRET),
        now=NOW,
    )
    assert headers["authorization"] == expected.headers["authorization"]
    assert SECRET not in json.dumps(headers)


def test_session_credentials_send_their_token() -> None:
    keys = AwsKeys(access_key_id=KEY_ID, secret_access_key=SECRET, session_token="session-token-value")
    t = translator(bedrock=BedrockSettings(region="eu-central-1", credentials=keys))
    headers = t.chat_request({"messages": [{"role": "user", "content": "hi"}]}, model=MODEL, stream=False).headers
    assert headers["x-amz-security-token"] == "session-token-value"
    assert "x-amz-security-token" in headers["authorization"].split("SignedHeaders=")[1].split(",")[0]


def test_without_keys_the_pods_identity_signs() -> None:
    identity = StaticCredentials(AwsCredentials("ASIAPODIDENTITY00000", "pod-secret", "pod-token"))
    t = BedrockTranslator(provider(bedrock=BedrockSettings(region="eu-central-1")), pod_identity=identity)
    headers = t.chat_request({"messages": [{"role": "user", "content": "hi"}]}, model=MODEL, stream=False).headers
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=ASIAPODIDENTITY00000/")
    assert headers["x-amz-security-token"] == "pod-token"
    # the provider's own keys win over the pod's identity
    own = BedrockTranslator(provider(), pod_identity=identity).chat_request(
        {"messages": [{"role": "user", "content": "hi"}]}, model=MODEL, stream=False
    )
    assert own.headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")


def test_a_bedrock_api_key_is_a_bearer_token() -> None:
    t = translator(bedrock=BedrockSettings(region="us-east-1"), api_key="ABSKQmVkcm9ja0FQSUtleQ==")
    headers = t.chat_request({"messages": [{"role": "user", "content": "hi"}]}, model=MODEL, stream=False).headers
    assert headers["authorization"] == "Bearer ABSKQmVkcm9ja0FQSUtleQ=="
    assert "x-amz-date" not in headers


def test_a_conversation_with_tools_becomes_a_converse_body() -> None:
    body = body_of(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "24C"}]},
                {"role": "user", "content": "Thanks"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "weather",
                        "description": "Current weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                    },
                }
            ],
            "tool_choice": "required",
            "max_tokens": 100,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "END",
        }
    )
    assert body == {
        "system": [{"text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [{"text": "Weather in Paris and Rome?"}]},
            {
                "role": "assistant",
                "content": [
                    {"toolUse": {"toolUseId": "call_1", "name": "weather", "input": {"city": "Paris"}}},
                    {"toolUse": {"toolUseId": "call_2", "name": "weather", "input": {"city": "Rome"}}},
                ],
            },
            {
                "role": "user",  # both results and the remark after them: one user turn
                "content": [
                    {"toolResult": {"toolUseId": "call_1", "content": [{"text": "18C"}]}},
                    {"toolResult": {"toolUseId": "call_2", "content": [{"text": "24C"}]}},
                    {"text": "Thanks"},
                ],
            },
        ],
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "weather",
                        "description": "Current weather",
                        "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}},
                    }
                }
            ],
            "toolChoice": {"any": {}},
        },
        "inferenceConfig": {"maxTokens": 100, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", {"auto": {}}), ({"type": "function", "function": {"name": "weather"}}, {"tool": {"name": "weather"}})],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "weather"}}]
    body = body_of({"messages": [{"role": "user", "content": "hi"}], "tools": tools, "tool_choice": choice})
    assert body["toolConfig"]["toolChoice"] == expected
    assert body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {"json": {"type": "object", "properties": {}}}


def test_tool_choice_none_leaves_the_tools_out() -> None:
    tools = [{"type": "function", "function": {"name": "weather"}}]
    body = body_of({"messages": [{"role": "user", "content": "hi"}], "tools": tools, "tool_choice": "none"})
    assert "toolConfig" not in body


def test_images_go_as_bytes() -> None:
    content = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    body = body_of({"messages": [{"role": "user", "content": content}]})
    assert body["messages"][0]["content"] == [{"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"n": 2}, "n"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"max_tokens": "ten"}, "max_tokens"),
        ({"temperature": "hot"}, "temperature"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
                ]
            },
            "messages[0].content[0].image_url",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{"}}]}
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ],
)
def test_what_cannot_cross_is_a_400_naming_the_field(change: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as caught:
        body_of({"messages": [{"role": "user", "content": "hi"}], **change})
    assert (caught.value.status, caught.value.param) == (400, param)


def test_no_embeddings() -> None:
    with pytest.raises(UnsupportedOperation):
        translator().embeddings_request({"input": "x"}, model=MODEL)


# --- Converse answers ------------------------------------------------------------------------

ANSWER = {
    "output": {
        "message": {
            "role": "assistant",
            "content": [
                {"reasoningContent": {"reasoningText": {"text": "User wants weather.", "signature": "sig"}}},
                {"text": "Checking."},
                {"toolUse": {"toolUseId": "tooluse_1", "name": "weather", "input": {"city": "Paris"}}},
            ],
        }
    },
    "stopReason": "tool_use",
    "usage": {"inputTokens": 10, "outputTokens": 7, "totalTokens": 117, "cacheReadInputTokens": 100},
    "metrics": {"latencyMs": 321},
}


def test_a_converse_answer_is_a_chat_completion() -> None:
    response, usage = translator().chat_response(orjson.dumps(ANSWER))
    completion = ChatCompletion.model_validate(response)
    message = completion.choices[0].message
    assert message.content == "Checking."
    assert message.tool_calls is not None and message.tool_calls[0].id == "tooluse_1"
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert response["choices"][0]["message"]["reasoning_content"] == "User wants weather."
    # prompt_tokens is the whole prompt: Bedrock counts cache reads apart from inputTokens
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        110,
        7,
        117,
    )
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 100
    assert (usage.input_tokens, usage.output_tokens) == (110, 7)


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    answer = {**ANSWER, "stopReason": stop, "output": {"message": {"role": "assistant", "content": [{"text": "x"}]}}}
    response, _ = translator().chat_response(orjson.dumps(answer))
    assert response["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize(
    "answer",
    [
        b"not json",
        b"[]",
        b'{"output": {}}',
        b'{"output": {"message": {"content": [{"text": 5}]}}, "usage": {}}',
        b'{"output": {"message": {"content": [{"text": "x"}]}}, "usage": {"inputTokens": -1}}',
        b'{"output": {"message": {"content": [{"text": "x"}]}}}',
        b'{"output": {"message": {"content": [{"toolUse": {"name": "f"}}]}}, "usage": {}}',
    ],
)
def test_malformed_answers_are_bad_answers(answer: bytes) -> None:
    with pytest.raises(UpstreamProtocolError):
        translator().chat_response(answer)


def test_error_messages() -> None:
    t = translator()
    assert t.error_message(429, b'{"message":"Too many requests, please wait before trying again."}') == (
        "Too many requests, please wait before trying again."
    )
    assert t.error_message(403, b'{"Message":"User: arn:aws:iam::1:user/x is not authorized"}').startswith("User:")
    assert t.error_message(502, b"<html>bad gateway</html>") == "<html>bad gateway</html>"


def test_the_keys_reach_the_scrubber() -> None:
    keys = provider().secrets()
    assert SECRET in keys and KEY_ID in keys
    scrub = Scrubber(keys)
    assert SECRET not in scrub(f"signature mismatch for {SECRET} and {KEY_ID}")
    assert KEY_ID not in scrub(f"key {KEY_ID}")


# --- ConverseStream --------------------------------------------------------------------------


def event(kind: str, payload: dict[str, Any]) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, orjson.dumps({**payload, "p": "abcdefghij"}))  # Bedrock pads payloads with "p"


STREAM = b"".join(
    [
        event("messageStart", {"role": "assistant"}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Hmm."}}}),
        event("contentBlockStop", {"contentBlockIndex": 0}),
        event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Let me "}}),
        event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "check été."}}),
        event("contentBlockStop", {"contentBlockIndex": 1}),
        event(
            "contentBlockStart",
            {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tooluse_9", "name": "weather"}}},
        ),
        event("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": '{"city":'}}}),
        event("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": '"Paris"}'}}}),
        event("contentBlockStop", {"contentBlockIndex": 2}),
        event("messageStop", {"stopReason": "tool_use"}),
        event(
            "metadata",
            {"usage": {"inputTokens": 20, "outputTokens": 9, "totalTokens": 29}, "metrics": {"latencyMs": 100}},
        ),
    ]
)


def decode(stream: bytes, step: int = 7) -> tuple[list[dict[str, Any]], Any]:
    decoder = translator().stream_decoder(model=MODEL)
    chunks = []
    for start in range(0, len(stream), step):
        chunks.extend(decoder.feed(stream[start : start + step]))
    chunks.extend(decoder.close())
    return chunks, decoder.state


@pytest.mark.parametrize("step", [1, 7, 64, 100_000])
def test_a_converse_stream_becomes_openai_chunks(step: int) -> None:
    chunks, state = decode(STREAM, step)
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    assert parsed[0].choices[0].delta.role == "assistant" and parsed[0].model == MODEL
    assert "".join(c.choices[0].delta.content or "" for c in parsed if c.choices) == "Let me check été."
    assert "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks if c["choices"]) == "Hmm."
    calls = [tc for c in parsed if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].id == "tooluse_9" and calls[0].function is not None and calls[0].function.name == "weather"
    assert {tc.index for tc in calls} == {0}
    assert json.loads("".join(tc.function.arguments or "" for tc in calls if tc.function)) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in parsed if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert parsed[-1].choices == [] and parsed[-1].usage is not None and parsed[-1].usage.prompt_tokens == 20
    assert (state.usage.input_tokens, state.usage.output_tokens, state.finish_reason) == (20, 9, "tool_calls")
    assert state.done
    assert len({c.id for c in parsed}) == 1


def test_a_stream_without_message_stop_is_cut() -> None:
    cut = STREAM[: STREAM.index(event("messageStop", {"stopReason": "tool_use"}))]
    with pytest.raises(UpstreamProtocolError, match="messageStop"):
        decode(cut)


def test_a_stream_cut_inside_a_frame_is_cut() -> None:
    with pytest.raises(UpstreamProtocolError, match="inside a message"):
        decode(STREAM[:-3])


def test_a_corrupted_frame_is_a_bad_answer() -> None:
    broken = bytearray(STREAM)
    broken[40] ^= 0xFF
    with pytest.raises(UpstreamProtocolError, match="CRC"):
        decode(bytes(broken))


@pytest.mark.parametrize(
    ("exception", "status"),
    [("throttlingException", 429), ("validationException", 400), ("modelStreamErrorException", 424)],
)
def test_an_exception_in_the_stream_ends_it_with_its_type(exception: str, status: int) -> None:
    headers = {":exception-type": exception, ":content-type": "application/json", ":message-type": "exception"}
    stream = event("messageStart", {"role": "assistant"}) + encode_message(headers, b'{"message":"Slow down"}')
    with pytest.raises(BedrockStreamException, match=f"{exception} mid-stream: Slow down") as caught:
        decode(stream)
    assert caught.value.status == status


def test_an_oversized_event_is_refused_by_the_callers_limit() -> None:
    decoder = translator().stream_decoder(model=MODEL, max_event_bytes=100)
    with pytest.raises(UpstreamProtocolError, match="over the limit"):
        decoder.feed(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x" * 200}})[:12])


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"contentBlockIndex": 0, "delta": {"text": 5}}',
        b'{"contentBlockIndex": 5, "delta": {"toolUse": {"input": "{}"}}}',
        b'{"delta": {"toolUse": {"input": "{}"}}}',
    ],
)
def test_malformed_stream_events_are_bad_answers(payload: bytes) -> None:
    headers = {":event-type": "contentBlockDelta", ":content-type": "application/json", ":message-type": "event"}
    with pytest.raises(UpstreamProtocolError):
        decode(encode_message(headers, payload))


def test_aws_keys_are_masked_in_dumps_and_kept_on_the_wire() -> None:
    from proxy.snapshot import Snapshot, parse_snapshot, to_wire

    keys = AwsKeys(access_key_id=KEY_ID, secret_access_key=SECRET, session_token="session-token-value")
    snapshot = Snapshot(providers=(provider(bedrock=BedrockSettings(region="eu-central-1", credentials=keys)),))
    dumped = json.dumps(snapshot.masked())
    assert SECRET not in dumped and KEY_ID not in dumped and "session-token-value" not in dumped
    assert snapshot.masked()["providers"][0]["bedrock"]["credentials"]["secretAccessKey"] == "<redacted>"
    again = parse_snapshot(to_wire(snapshot)).providers[0]
    assert again.secrets() == [KEY_ID, SECRET, "session-token-value"]
    rotated = Snapshot(providers=(provider(),))  # a new secret key is a new version
    assert parse_snapshot(to_wire(rotated)).version != parse_snapshot(to_wire(snapshot)).version
