"""The fake providers are faithful, Anthropic and Gemini (the OpenAI and Azure fakes
are in test_fakes.py): the official SDK (and raw HTTP for Gemini) accepts what they
send and surfaces scripted failures as the right errors; and all three fakes agree."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from tests.fakes.answers import embedding
from tests.fakes.process import FakeProviderProcess
from tests.integration.fakes_common import *  # noqa: F403  (the direct_oai fixture)
from tests.integration.fakes_common import raw, sse_events

# fake_openai / fake_anthropic / fake_gemini come from tests.fakes.fixtures, which
# tests/integration/conftest.py star-imports. The clients below talk to the fakes
# directly (no sidecar), hence "direct_".

pytestmark = pytest.mark.timeout(30)

CLAUDE_TOOL: Any = {
    "name": "get_weather",
    "description": "Weather for a place",
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
}
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def text_of(message: Any) -> str:
    """The text of an Anthropic message whose first block is text."""
    block = message.content[0]
    assert block.type == "text"
    return str(block.text)


# --------------------------------------------------------------------------- Anthropic


@pytest.fixture
def direct_claude(fake_anthropic: FakeProviderProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake_anthropic.base_url, api_key=fake_anthropic.api_key, max_retries=0)


def test_anthropic_plain(direct_claude: anthropic.Anthropic, fake_anthropic: FakeProviderProcess) -> None:
    msg = direct_claude.messages.create(
        model="direct_claude-test-1",
        max_tokens=100,
        system="be brief",
        messages=[{"role": "user", "content": "hello there"}],
    )
    assert msg.type == "message" and msg.id.startswith("msg_") and msg.model == "direct_claude-test-1"
    assert msg.content[0].type == "text" and msg.content[0].text == "echo: hello there"
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (4, 3)
    [seen] = fake_anthropic.requests()
    # anthropic SDK 2.x sends the key as a Bearer token, not the documented x-api-key.
    sent_key = seen["headers"].get("x-api-key") or seen["headers"]["authorization"].removeprefix("Bearer ")
    assert sent_key == fake_anthropic.api_key
    assert seen["headers"]["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION


def test_anthropic_stream_helper(direct_claude: anthropic.Anthropic, fake_anthropic: FakeProviderProcess) -> None:
    with direct_claude.messages.stream(
        model="direct_claude-test-2",
        max_tokens=100,
        system=[{"type": "text", "text": "be brief"}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "one two"}, {"type": "text", "text": " three"}]}
        ],
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "echo: one two three" == text_of(final)
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 4)
    assert fake_anthropic.requests()[0]["json"]["stream"] is True


def test_anthropic_stream_wire_format(fake_anthropic: FakeProviderProcess) -> None:
    body = {"model": "m", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "a b"}]}
    status, headers, data = raw(
        fake_anthropic.base_url + "/v1/messages",
        body,
        {"x-api-key": fake_anthropic.api_key, "anthropic-version": "2023-06-01"},
    )
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(data)
    names = [name for name, _ in events]
    assert names == ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * 3 + [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(json.loads(d)["type"] == name for name, d in events)  # data.type repeats the event name
    start = json.loads(events[0][1])["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] == 2
    delta = json.loads(events[-2][1])
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 3


def test_anthropic_streamed_tool_use_and_result(direct_claude: anthropic.Anthropic) -> None:
    ask: Any = [{"role": "user", "content": "use tool weather in Oslo"}]
    with direct_claude.messages.stream(model="m", max_tokens=100, tools=[CLAUDE_TOOL], messages=ask) as s:
        events = list(s)
        final = s.get_final_message()
    json_pieces = [
        e.delta.partial_json for e in events if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert len([p for p in json_pieces if p]) >= 2
    [block] = final.content
    assert block.type == "tool_use" and block.id.startswith("toolu_") and block.name == "get_weather"
    assert block.input == {"query": "weather in Oslo"}
    assert final.stop_reason == "tool_use"

    history = [
        *ask,
        {"role": "assistant", "content": [block.model_dump()]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": block.id, "content": [{"type": "text", "text": "cold"}]}
            ],
        },
    ]
    answer = direct_claude.messages.create(model="m", max_tokens=100, tools=[CLAUDE_TOOL], messages=history)
    assert text_of(answer) == "tool said: cold"


def test_anthropic_images_limits_and_rejections(
    direct_claude: anthropic.Anthropic, fake_anthropic: FakeProviderProcess
) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}}
    msg = direct_claude.messages.create(
        model="m",
        max_tokens=2,
        stop_sequences=["zzz"],
        messages=[{"role": "user", "content": [image, {"type": "text", "text": "what is this picture"}]}],
    )
    assert text_of(msg) == "echo: what" and msg.stop_reason == "max_tokens"
    stopped = direct_claude.messages.create(
        model="m", max_tokens=50, stop_sequences=["there"], messages=[{"role": "user", "content": "hello there"}]
    )
    assert (text_of(stopped), stopped.stop_reason, stopped.stop_sequence) == ("echo: hello ", "stop_sequence", "there")

    bad_image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "###"}}
    orphan = {"type": "tool_result", "tool_use_id": "toolu_x", "content": "y"}
    for content in ([bad_image], [orphan]):
        with pytest.raises(anthropic.BadRequestError) as bad:
            direct_claude.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": content}])  # type: ignore[misc]
        assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    headers = {"x-api-key": fake_anthropic.api_key, "anthropic-version": "2023-06-01"}
    status, _, data = raw(
        fake_anthropic.base_url + "/v1/messages",
        {"model": "m", "messages": [{"role": "user", "content": "x"}]},
        headers,
    )
    assert status == 400
    assert json.loads(data)["type"] == "error"
    assert json.loads(data)["error"] == {"type": "invalid_request_error", "message": "max_tokens: Field required"}
    status, _, data = raw(fake_anthropic.base_url + "/v1/messages", {"model": "m"}, {"x-api-key": "k"})
    assert status == 401 and json.loads(data)["error"]["type"] == "authentication_error"
    status, _, _ = raw(fake_anthropic.base_url + "/v1/messages", {"model": "m"}, {"x-api-key": fake_anthropic.api_key})
    assert status == 400  # anthropic-version missing


def test_anthropic_scripted_failures(direct_claude: anthropic.Anthropic, fake_anthropic: FakeProviderProcess) -> None:
    msgs: Any = [{"role": "user", "content": "a b c"}]
    fake_anthropic.script([{"status": 500}, {"status": 529}, {"status": 429, "retry_after": "2"}])
    with pytest.raises(anthropic.InternalServerError) as failed:
        direct_claude.messages.create(model="m", max_tokens=10, messages=msgs)
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    with pytest.raises(anthropic.OverloadedError):
        direct_claude.messages.create(model="m", max_tokens=10, messages=msgs)
    with pytest.raises(anthropic.RateLimitError) as limited:
        direct_claude.messages.create(model="m", max_tokens=10, messages=msgs)
    assert limited.value.response.headers["retry-after"] == "2"

    fake_anthropic.script([{"cut_after_chunks": 3}])
    # Unlike openai, the anthropic SDK lets the transport error through unwrapped.
    with (
        pytest.raises(Exception, match="incomplete chunked read"),
        direct_claude.messages.stream(model="m", max_tokens=10, messages=msgs) as s,
    ):
        s.get_final_message()

    fake_anthropic.script([{"error_after_chunks": 4}])
    with (
        pytest.raises(anthropic.APIStatusError, match="overloaded_error"),
        direct_claude.messages.stream(model="m", max_tokens=10, messages=msgs) as s,
    ):
        s.get_final_message()

    fake_anthropic.script([{"stall": 2.0}])
    with pytest.raises(anthropic.APITimeoutError):
        direct_claude.with_options(timeout=0.3).messages.create(model="m", max_tokens=10, messages=msgs)
    assert text_of(direct_claude.messages.create(model="m", max_tokens=10, messages=msgs)) == "echo: a b c"


# --------------------------------------------------------------------------- Gemini (raw HTTP)


def gemini_url(fake: FakeProviderProcess, model: str, method: str, query: str = "") -> str:
    return f"{fake.base_url}/v1beta/models/{model}:{method}{query}"


async def gemini_post(
    fake: FakeProviderProcess, model: str, method: str, body: Any, query: str = "", key: str | None = None
) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session:
        headers = {"x-goog-api-key": key if key is not None else fake.api_key}
        async with session.post(gemini_url(fake, model, method, query), json=body, headers=headers) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def test_gemini_generate_content(fake_gemini: FakeProviderProcess) -> None:
    body = {
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "contents": [{"role": "user", "parts": [{"text": "hello "}, {"text": "there"}]}],
        "generationConfig": {"temperature": 0.2, "maxOutputTokens": 100},
    }
    status, _, data = await gemini_post(fake_gemini, "gemini-2.0-flash", "generateContent", body)
    assert status == 200
    resp = json.loads(data)
    [candidate] = resp["candidates"]
    assert candidate["content"] == {"parts": [{"text": "echo: hello there"}], "role": "model"}
    assert candidate["finishReason"] == "STOP" and candidate["index"] == 0
    usage = resp["usageMetadata"]
    assert (usage["promptTokenCount"], usage["candidatesTokenCount"], usage["totalTokenCount"]) == (4, 3, 7)
    assert resp["modelVersion"] == "gemini-2.0-flash"
    assert fake_gemini.requests()[0]["headers"]["x-goog-api-key"] == fake_gemini.api_key


async def test_gemini_stream_sse(fake_gemini: FakeProviderProcess) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "one two three"}]}]}
    status, ctype, data = await gemini_post(fake_gemini, "gemini-2.5-flash", "streamGenerateContent", body, "?alt=sse")
    assert status == 200 and ctype.startswith("text/event-stream")
    assert b"\r\n\r\n" in data
    chunks = [json.loads(d) for _, d in sse_events(data)]
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == "echo: one two three"
    assert len(chunks) == 4
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 4
    _, ctype, data = await gemini_post(fake_gemini, "gemini-2.5-flash", "streamGenerateContent", body)
    assert ctype.startswith("application/json") and len(json.loads(data)) == 4  # without alt=sse: a JSON array


async def test_gemini_function_call_and_response(fake_gemini: FakeProviderProcess) -> None:
    tools = [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "d",
                    "parameters": {"type": "OBJECT", "properties": {"query": {"type": "STRING"}}},
                }
            ]
        }
    ]
    ask = {"role": "user", "parts": [{"text": "use tool weather in Rome"}]}
    for method, query in (("generateContent", ""), ("streamGenerateContent", "?alt=sse")):
        _, _, data = await gemini_post(fake_gemini, "g", method, {"contents": [ask], "tools": tools}, query)
        resp = json.loads(data) if not query else json.loads(sse_events(data)[-1][1])
        part = resp["candidates"][0]["content"]["parts"][0]
        assert part == {"functionCall": {"name": "get_weather", "args": {"query": "weather in Rome"}}}
        assert resp["candidates"][0]["finishReason"] == "STOP"
    history = [
        ask,
        {"role": "model", "parts": [part]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "warm"}}}]},
    ]
    auto = {"functionCallingConfig": {"mode": "AUTO"}}
    _, _, data = await gemini_post(
        fake_gemini, "g", "generateContent", {"contents": history, "tools": tools, "toolConfig": auto}
    )
    assert json.loads(data)["candidates"][0]["content"]["parts"] == [{"text": "tool said: warm"}]


async def test_gemini_json_output_and_inline_data(fake_gemini: FakeProviderProcess) -> None:
    body = {
        "contents": [
            {"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": PNG_1PX}}, {"text": "Lima"}]}
        ],
        "generationConfig": {
            "responseMimeType": "application/json",
            "responseSchema": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}},
        },
    }
    _, _, data = await gemini_post(fake_gemini, "g", "generateContent", body)
    text = json.loads(data)["candidates"][0]["content"]["parts"][0]["text"]
    assert json.loads(text) == {"city": "echo: Lima"}


async def test_gemini_errors(fake_gemini: FakeProviderProcess) -> None:
    ok = {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}
    cases = [
        ({**ok, "messages": []}, None, 400, "INVALID_ARGUMENT", 'Unknown name "messages"'),
        ({**ok, "generationConfig": {"max_tokens": 5}}, None, 400, "INVALID_ARGUMENT", 'Unknown name "max_tokens"'),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, None, 400, "INVALID_ARGUMENT", "valid role"),
        ({"contents": []}, None, 400, "INVALID_ARGUMENT", "contents is not specified"),
        (ok, "", 403, "PERMISSION_DENIED", "unregistered callers"),
        (ok, "wrong", 400, "INVALID_ARGUMENT", "API key not valid"),
    ]
    for body, key, code, name, text in cases:
        status, _, data = await gemini_post(fake_gemini, "g", "generateContent", body, key=key)
        error = json.loads(data)["error"]
        assert (status, error["code"], error["status"]) == (code, code, name)
        assert text in error["message"]
    status, _, _ = raw(gemini_url(fake_gemini, "g", "generateContent", f"?key={fake_gemini.api_key}"), ok)
    assert status == 200  # the key may come as a query parameter


async def test_gemini_embeddings(fake_gemini: FakeProviderProcess) -> None:
    one = {"content": {"parts": [{"text": "alpha"}]}, "taskType": "RETRIEVAL_QUERY"}
    _, _, data = await gemini_post(fake_gemini, "text-embedding-004", "embedContent", one)
    assert json.loads(data) == {"embedding": {"values": embedding("alpha")}}
    batch = {
        "requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": t}]}} for t in ("alpha", "beta")
        ]
    }
    _, _, data = await gemini_post(fake_gemini, "text-embedding-004", "batchEmbedContents", batch)
    assert json.loads(data) == {"embeddings": [{"values": embedding("alpha")}, {"values": embedding("beta")}]}
    batch["requests"][0]["model"] = "models/other"
    status, _, _ = await gemini_post(fake_gemini, "text-embedding-004", "batchEmbedContents", batch)
    assert status == 400


async def test_gemini_scripted_failures(fake_gemini: FakeProviderProcess) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "a b c"}]}]}
    fake_gemini.script([{"status": 429, "retry_after": "3"}, {"cut_after_chunks": 2}, {"status": 503}])
    async with aiohttp.ClientSession() as session:
        headers = {"x-goog-api-key": fake_gemini.api_key}
        async with session.post(gemini_url(fake_gemini, "g", "generateContent"), json=body, headers=headers) as resp:
            error = (await resp.json())["error"]
            assert resp.status == 429 and resp.headers["Retry-After"] == "3"
            assert error["status"] == "RESOURCE_EXHAUSTED" and error["details"][0]["retryDelay"] == "3s"
        url = gemini_url(fake_gemini, "g", "streamGenerateContent", "?alt=sse")
        async with session.post(url, json=body, headers=headers) as resp:
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    status, _, data = await gemini_post(fake_gemini, "g", "generateContent", body)
    assert status == 503 and json.loads(data)["error"]["status"] == "UNAVAILABLE"


# --------------------------------------------------------------------------- across providers


def test_same_answer_and_usage_everywhere(
    direct_oai: openai.OpenAI, direct_claude: anthropic.Anthropic, fake_gemini: FakeProviderProcess
) -> None:
    a = direct_oai.chat.completions.create(
        model="m", messages=[{"role": "system", "content": "sys one"}, {"role": "user", "content": "same words here"}]
    )
    b = direct_claude.messages.create(
        model="m", max_tokens=50, system="sys one", messages=[{"role": "user", "content": "same words here"}]
    )
    _, _, data = raw(
        gemini_url(fake_gemini, "m", "generateContent"),
        {
            "systemInstruction": {"parts": [{"text": "sys one"}]},
            "contents": [{"role": "user", "parts": [{"text": "same words here"}]}],
        },
        {"x-goog-api-key": fake_gemini.api_key},
    )
    g = json.loads(data)
    assert a.choices[0].message.content == text_of(b) == g["candidates"][0]["content"]["parts"][0]["text"]
    assert a.usage is not None
    assert (
        (a.usage.prompt_tokens, a.usage.completion_tokens)
        == (b.usage.input_tokens, b.usage.output_tokens)
        == (g["usageMetadata"]["promptTokenCount"], g["usageMetadata"]["candidatesTokenCount"])
        == (5, 4)
    )


def test_count_tokens_and_malformed_requests(
    direct_claude: anthropic.Anthropic, direct_oai: openai.OpenAI, fake_gemini: FakeProviderProcess
) -> None:
    counted = direct_claude.messages.count_tokens(
        model="m", system="a b", messages=[{"role": "user", "content": "c d e"}]
    )
    assert counted.input_tokens == 5
    _, _, data = raw(
        gemini_url(fake_gemini, "m", "countTokens"),
        {"contents": [{"role": "user", "parts": [{"text": "c d e"}]}]},
        {"x-goog-api-key": fake_gemini.api_key},
    )
    assert json.loads(data) == {"totalTokens": 3}
    # A shape the fake cannot read is the provider's 400, never a retryable 500.
    with pytest.raises(openai.BadRequestError):
        direct_oai.chat.completions.create(model="m", messages=["not a message"])


async def test_in_process_server_and_script_queue() -> None:
    from tests.fakes.server import build_app, serve

    app = build_app("anthropic", "k")
    async with serve(app) as serving, aiohttp.ClientSession() as session:
        async with session.post(serving.base_url + "/_fake/script", json=[{"status": 529}, {"delay": 0.01}]) as r:
            assert (await r.json()) == {"queued": 2}
        async with session.get(serving.base_url + "/_fake/script") as r:
            assert await r.json() == [{"status": 529}, {"delay": 0.01}]
        headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
        body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        statuses = []
        for _ in range(3):
            async with session.post(serving.base_url + "/v1/messages", json=body, headers=headers) as r:
                statuses.append(r.status)
        assert statuses == [529, 200, 200]
