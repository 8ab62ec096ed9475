"""The fake providers are faithful: the official SDKs (and raw HTTP for Gemini)
accept what they send and surface scripted failures as the right errors."""

from __future__ import annotations

import base64
import json
import struct
import time
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from tests.fakes.answers import embedding
from tests.fakes.process import FakeProviderProcess

# fake_openai / fake_anthropic / fake_gemini come from tests.fakes.fixtures, which
# tests/integration/conftest.py star-imports. The clients below talk to the fakes
# directly (no sidecar), hence "direct_".

pytestmark = pytest.mark.timeout(30)

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather for a place",
                 "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}},
}
CLAUDE_TOOL: Any = {"name": "get_weather", "description": "Weather for a place",
               "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}
PNG_1PX = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def raw(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """POST (or GET without body) with urllib; returns status, headers, body even for errors."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def text_of(message: Any) -> str:
    """The text of an Anthropic message whose first block is text."""
    block = message.content[0]
    assert block.type == "text"
    return str(block.text)


def sse_events(body: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) pairs of an SSE body, whatever the line ending."""
    text = body.decode().replace("\r\n", "\n")
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields.get("event"), fields["data"]))
    return events


# --------------------------------------------------------------------------- OpenAI


@pytest.fixture
def direct_oai(fake_openai: FakeProviderProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake_openai.base_url + "/v1", api_key=fake_openai.api_key, max_retries=0)


def test_openai_plain_chat(direct_oai: openai.OpenAI, fake_openai: FakeProviderProcess) -> None:
    resp = direct_oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        extra_headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-")
    assert resp.model == "gpt-4o-mini"
    assert resp.choices[0].message.content == "echo: hello there"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (4, 3, 7)
    [seen] = fake_openai.requests()
    assert seen["path"] == "/v1/chat/completions"
    assert seen["headers"]["authorization"] == f"Bearer {fake_openai.api_key}"
    assert seen["headers"]["traceparent"].startswith("00-0af7651916cd43dd")
    assert seen["json"]["messages"][1] == {"role": "user", "content": "hello there"}


def test_openai_stream_with_usage(direct_oai: openai.OpenAI) -> None:
    stream = direct_oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "one two three"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == "echo: one two three"
    assert len([p for p in pieces if p]) == 4  # one chunk per word
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (3, 4)


def test_openai_stream_wire_format(fake_openai: FakeProviderProcess) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    status, headers, data = raw(fake_openai.base_url + "/v1/chat/completions", body,
                                {"Authorization": f"Bearer {fake_openai.api_key}"})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(data)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert all("usage" not in c for c in chunks)  # only with stream_options.include_usage


def test_openai_tool_call_and_result(direct_oai: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "use tool weather in Paris"}]
    resp = direct_oai.chat.completions.create(model="gpt-4o", messages=ask, tools=[WEATHER_TOOL])
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"query": "weather in Paris"}

    history: Any = [*ask, choice.message.model_dump(exclude_none=True),
                    {"role": "tool", "tool_call_id": call.id, "content": "sunny and warm"}]
    again = direct_oai.chat.completions.create(model="gpt-4o", messages=history, tools=[WEATHER_TOOL])
    assert again.choices[0].message.content == "tool said: sunny and warm"


def test_openai_streamed_tool_call(direct_oai: openai.OpenAI) -> None:
    stream = direct_oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "use tool news today"}],
        tools=[WEATHER_TOOL], stream=True,
    )
    chunks = list(stream)
    first = chunks[0].choices[0].delta.tool_calls or []
    assert first[0].id and first[0].id.startswith("call_") and first[0].function.name == "get_weather"
    pieces = [tc.function.arguments for c in chunks[1:] if c.choices
              for tc in c.choices[0].delta.tool_calls or [] if tc.function and tc.function.arguments]
    assert len(pieces) >= 2
    assert json.loads("".join(pieces)) == {"query": "news today"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_tool_choice_and_limits(direct_oai: openai.OpenAI) -> None:
    forced = direct_oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "what now"}], tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    [forced_call] = forced.choices[0].message.tool_calls or []
    assert json.loads(forced_call.function.arguments) == {"query": "what now"}
    short = direct_oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "a b c d"}],
                                        max_completion_tokens=2)
    assert (short.choices[0].message.content, short.choices[0].finish_reason) == ("echo: a", "length")
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}
    structured = direct_oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Oslo"}],
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": schema}},
    )
    assert json.loads(structured.choices[0].message.content or "") == {"city": "echo: Oslo", "days": 1}


def test_openai_rejects_what_openai_rejects(direct_oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        direct_oai.chat.completions.create(model="gpt-4o", messages=[{"role": "tool", "tool_call_id": "x", "content": "y"}])
    assert bad.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert "preceeding message with 'tool_calls'" in bad.value.message
    with pytest.raises(openai.BadRequestError):
        direct_oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}],
                                    stream_options={"include_usage": True})
    wrong = openai.OpenAI(base_url=str(direct_oai.base_url), api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        wrong.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert auth.value.code == "invalid_api_key"
    assert set(auth.value.body) == {"message", "type", "param", "code"}  # type: ignore[arg-type]


def test_openai_embeddings_base64_by_default(direct_oai: openai.OpenAI, fake_openai: FakeProviderProcess) -> None:
    resp = direct_oai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta gamma"])
    assert [d.embedding for d in resp.data] == [embedding("alpha"), embedding("beta gamma")]
    assert resp.usage.prompt_tokens == 3
    assert fake_openai.requests()[-1]["json"]["encoding_format"] == "base64"  # what the SDK sends by default
    status, _, data = raw(fake_openai.base_url + "/v1/embeddings",
                          {"model": "m", "input": "alpha", "encoding_format": "base64"},
                          {"Authorization": f"Bearer {fake_openai.api_key}"})
    encoded = json.loads(data)["data"][0]["embedding"]
    assert list(struct.unpack("<8f", base64.b64decode(encoded))) == embedding("alpha")
    floats = direct_oai.embeddings.create(model="m", input="alpha", encoding_format="float", dimensions=4)
    assert floats.data[0].embedding == embedding("alpha", 4)


def test_openai_models(direct_oai: openai.OpenAI) -> None:
    assert "gpt-4o" in [m.id for m in direct_oai.models.list()]


# --------------------------------------------------------------------------- Azure OpenAI


@pytest.fixture
def direct_azure(fake_openai: FakeProviderProcess) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(azure_endpoint=fake_openai.base_url, api_key=fake_openai.api_key,
                              api_version="2024-10-21", max_retries=0)


def test_azure_chat_stream_and_embeddings(direct_azure: openai.AzureOpenAI, fake_openai: FakeProviderProcess) -> None:
    resp = direct_azure.chat.completions.create(model="prod-gpt4o", messages=[{"role": "user", "content": "hi azure"}])
    assert resp.model == "prod-gpt4o" and resp.choices[0].message.content == "echo: hi azure"
    stream = direct_azure.chat.completions.create(model="prod-gpt4o", messages=[{"role": "user", "content": "hi azure"}],
                                           stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices == []  # Azure's prompt-filter chunk comes first
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hi azure"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    emb = direct_azure.embeddings.create(model="prod-embed", input="alpha")
    assert emb.data[0].embedding == embedding("alpha") and emb.model == "prod-embed"
    seen = fake_openai.requests()
    assert [r["path"] for r in seen] == ["/openai/deployments/prod-gpt4o/chat/completions"] * 2 + [
        "/openai/deployments/prod-embed/embeddings"]
    assert all(r["query"] == {"api-version": "2024-10-21"} for r in seen)
    assert all(r["headers"]["api-key"] == fake_openai.api_key and "authorization" not in r["headers"] for r in seen)


def test_azure_errors(fake_openai: FakeProviderProcess) -> None:
    url = fake_openai.base_url + "/openai/deployments/d/chat/completions"
    body = {"messages": [{"role": "user", "content": "x"}]}
    status, _, data = raw(url, body, {"api-key": fake_openai.api_key})
    assert (status, json.loads(data)) == (404, {"error": {"code": "404", "message": "Resource not found"}})
    status, _, data = raw(url + "?api-version=2024-10-21", body, {"api-key": "nope"})
    assert status == 401 and json.loads(data)["error"]["code"] == "401"


# --------------------------------------------------------------------------- OpenAI scripted behaviour


def test_openai_scripted_failures(direct_oai: openai.OpenAI, fake_openai: FakeProviderProcess) -> None:
    fake_openai.script([{"status": 429, "retry_after": "1"}, {"status": 500}, {"status": 503},
                        {"delay": 0.05}])
    msgs: Any = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.RateLimitError) as limited:
        direct_oai.chat.completions.create(model="gpt-4o", messages=msgs)
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        direct_oai.chat.completions.create(model="gpt-4o", messages=msgs)
    with pytest.raises(openai.InternalServerError) as unavailable:
        direct_oai.chat.completions.create(model="gpt-4o", messages=msgs)
    assert unavailable.value.status_code == 503
    assert direct_oai.chat.completions.create(model="gpt-4o", messages=msgs).choices[0].message.content == "echo: x"
    assert direct_oai.chat.completions.create(model="gpt-4o", messages=msgs).choices[0].message.content == "echo: x"


def test_openai_stall_cut_garbage_and_stream_error(direct_oai: openai.OpenAI, fake_openai: FakeProviderProcess) -> None:
    msgs: Any = [{"role": "user", "content": "a b c d e"}]
    fake_openai.script([{"stall": 2.0}])
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        direct_oai.with_options(timeout=0.3).chat.completions.create(model="gpt-4o", messages=msgs)
    assert time.monotonic() - started < 1.5

    fake_openai.script([{"stall_after_chunks": 2, "stall": 2.0}])
    stream = direct_oai.with_options(timeout=0.3).chat.completions.create(model="gpt-4o", messages=msgs, stream=True)
    got = []
    with pytest.raises(openai.APITimeoutError):
        for chunk in stream:
            got.append(chunk)
    assert len(got) == 2

    fake_openai.script([{"cut_after_chunks": 2}])
    stream = direct_oai.chat.completions.create(model="gpt-4o", messages=msgs, stream=True)
    got = []
    with pytest.raises(openai.APIConnectionError) as cut:
        for chunk in stream:
            got.append(chunk)
    assert len(got) == 2
    assert "incomplete chunked read" in str(cut.value.__cause__)

    fake_openai.script([{"cut_after_chunks": 0}])  # a non-streamed body cut half-way
    with pytest.raises(openai.APIConnectionError) as cut:
        direct_oai.chat.completions.create(model="gpt-4o", messages=msgs)
    assert "peer closed connection" in str(cut.value.__cause__)

    fake_openai.script([{"garbage": True}, {"garbage": True}])  # the SDK lets the decode error through
    with pytest.raises(json.JSONDecodeError):
        direct_oai.chat.completions.create(model="gpt-4o", messages=msgs)
    with pytest.raises(json.JSONDecodeError):
        list(direct_oai.chat.completions.create(model="gpt-4o", messages=msgs, stream=True))

    fake_openai.script([{"error_after_chunks": 2}])
    with pytest.raises(openai.APIError, match="server had an error"):
        list(direct_oai.chat.completions.create(model="gpt-4o", messages=msgs, stream=True))
    assert len(fake_openai.requests()) == 7


def test_script_is_validated(fake_openai: FakeProviderProcess) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        fake_openai.script([{"stauts": 500}])
    assert err.value.code == 400


# --------------------------------------------------------------------------- Anthropic


@pytest.fixture
def direct_claude(fake_anthropic: FakeProviderProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake_anthropic.base_url, api_key=fake_anthropic.api_key, max_retries=0)


def test_anthropic_plain(direct_claude: anthropic.Anthropic, fake_anthropic: FakeProviderProcess) -> None:
    msg = direct_claude.messages.create(model="direct_claude-test-1", max_tokens=100, system="be brief",
                                 messages=[{"role": "user", "content": "hello there"}])
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
    with direct_claude.messages.stream(model="direct_claude-test-2", max_tokens=100,
                                system=[{"type": "text", "text": "be brief"}],
                                messages=[{"role": "user", "content": [{"type": "text", "text": "one two"},
                                                                        {"type": "text", "text": " three"}]}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "echo: one two three" == text_of(final)
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 4)
    assert fake_anthropic.requests()[0]["json"]["stream"] is True


def test_anthropic_stream_wire_format(fake_anthropic: FakeProviderProcess) -> None:
    body = {"model": "m", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "a b"}]}
    status, headers, data = raw(fake_anthropic.base_url + "/v1/messages", body,
                                {"x-api-key": fake_anthropic.api_key, "anthropic-version": "2023-06-01"})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(data)
    names = [name for name, _ in events]
    assert names == ["message_start", "content_block_start", "ping"] + ["content_block_delta"] * 3 + [
        "content_block_stop", "message_delta", "message_stop"]
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
    json_pieces = [e.delta.partial_json for e in events
                   if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
    assert len([p for p in json_pieces if p]) >= 2
    [block] = final.content
    assert block.type == "tool_use" and block.id.startswith("toolu_") and block.name == "get_weather"
    assert block.input == {"query": "weather in Oslo"}
    assert final.stop_reason == "tool_use"

    history = [*ask, {"role": "assistant", "content": [block.model_dump()]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id,
                                             "content": [{"type": "text", "text": "cold"}]}]}]
    answer = direct_claude.messages.create(model="m", max_tokens=100, tools=[CLAUDE_TOOL], messages=history)
    assert text_of(answer) == "tool said: cold"


def test_anthropic_images_limits_and_rejections(
    direct_claude: anthropic.Anthropic, fake_anthropic: FakeProviderProcess
) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}}
    msg = direct_claude.messages.create(model="m", max_tokens=2, stop_sequences=["zzz"], messages=[
        {"role": "user", "content": [image, {"type": "text", "text": "what is this picture"}]}])
    assert text_of(msg) == "echo: what" and msg.stop_reason == "max_tokens"
    stopped = direct_claude.messages.create(model="m", max_tokens=50, stop_sequences=["there"],
                                     messages=[{"role": "user", "content": "hello there"}])
    assert (text_of(stopped), stopped.stop_reason, stopped.stop_sequence) == ("echo: hello ", "stop_sequence", "there")

    bad_image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "###"}}
    orphan = {"type": "tool_result", "tool_use_id": "toolu_x", "content": "y"}
    for content in ([bad_image], [orphan]):
        with pytest.raises(anthropic.BadRequestError) as bad:
            direct_claude.messages.create(model="m", max_tokens=5,
                                          messages=[{"role": "user", "content": content}])  # type: ignore[misc]
        assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    headers = {"x-api-key": fake_anthropic.api_key, "anthropic-version": "2023-06-01"}
    status, _, data = raw(fake_anthropic.base_url + "/v1/messages",
                          {"model": "m", "messages": [{"role": "user", "content": "x"}]}, headers)
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
    with pytest.raises(Exception, match="incomplete chunked read"):
        with direct_claude.messages.stream(model="m", max_tokens=10, messages=msgs) as s:
            s.get_final_message()

    fake_anthropic.script([{"error_after_chunks": 4}])
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        with direct_claude.messages.stream(model="m", max_tokens=10, messages=msgs) as s:
            s.get_final_message()

    fake_anthropic.script([{"stall": 2.0}])
    with pytest.raises(anthropic.APITimeoutError):
        direct_claude.with_options(timeout=0.3).messages.create(model="m", max_tokens=10, messages=msgs)
    assert text_of(direct_claude.messages.create(model="m", max_tokens=10, messages=msgs)) == "echo: a b c"


# --------------------------------------------------------------------------- Gemini (raw HTTP)


def gemini_url(fake: FakeProviderProcess, model: str, method: str, query: str = "") -> str:
    return f"{fake.base_url}/v1beta/models/{model}:{method}{query}"


async def gemini_post(fake: FakeProviderProcess, model: str, method: str, body: Any, query: str = "",
                      key: str | None = None) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session:
        headers = {"x-goog-api-key": key if key is not None else fake.api_key}
        async with session.post(gemini_url(fake, model, method, query), json=body, headers=headers) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def test_gemini_generate_content(fake_gemini: FakeProviderProcess) -> None:
    body = {"systemInstruction": {"parts": [{"text": "be brief"}]},
            "contents": [{"role": "user", "parts": [{"text": "hello "}, {"text": "there"}]}],
            "generationConfig": {"temperature": 0.2, "maxOutputTokens": 100}}
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
    status, ctype, data = await gemini_post(fake_gemini, "gemini-2.5-flash", "streamGenerateContent", body,
                                            "?alt=sse")
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
    tools = [{"functionDeclarations": [{"name": "get_weather", "description": "d",
                                        "parameters": {"type": "OBJECT", "properties": {"query": {"type": "STRING"}}}}]}]
    ask = {"role": "user", "parts": [{"text": "use tool weather in Rome"}]}
    for method, query in (("generateContent", ""), ("streamGenerateContent", "?alt=sse")):
        _, _, data = await gemini_post(fake_gemini, "g", method, {"contents": [ask], "tools": tools}, query)
        resp = json.loads(data) if not query else json.loads(sse_events(data)[-1][1])
        part = resp["candidates"][0]["content"]["parts"][0]
        assert part == {"functionCall": {"name": "get_weather", "args": {"query": "weather in Rome"}}}
        assert resp["candidates"][0]["finishReason"] == "STOP"
    history = [ask, {"role": "model", "parts": [part]},
               {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                                "response": {"result": "warm"}}}]}]
    auto = {"functionCallingConfig": {"mode": "AUTO"}}
    _, _, data = await gemini_post(fake_gemini, "g", "generateContent",
                                   {"contents": history, "tools": tools, "toolConfig": auto})
    assert json.loads(data)["candidates"][0]["content"]["parts"] == [{"text": "tool said: warm"}]


async def test_gemini_json_output_and_inline_data(fake_gemini: FakeProviderProcess) -> None:
    body = {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": PNG_1PX}},
                                                    {"text": "Lima"}]}],
            "generationConfig": {"responseMimeType": "application/json",
                                 "responseSchema": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}}}
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
    batch = {"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": t}]}}
                          for t in ("alpha", "beta")]}
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


def test_same_answer_and_usage_everywhere(direct_oai: openai.OpenAI, direct_claude: anthropic.Anthropic,
                                          fake_gemini: FakeProviderProcess) -> None:
    a = direct_oai.chat.completions.create(model="m", messages=[{"role": "system", "content": "sys one"},
                                                         {"role": "user", "content": "same words here"}])
    b = direct_claude.messages.create(model="m", max_tokens=50, system="sys one",
                               messages=[{"role": "user", "content": "same words here"}])
    _, _, data = raw(gemini_url(fake_gemini, "m", "generateContent"),
                     {"systemInstruction": {"parts": [{"text": "sys one"}]},
                      "contents": [{"role": "user", "parts": [{"text": "same words here"}]}]},
                     {"x-goog-api-key": fake_gemini.api_key})
    g = json.loads(data)
    assert a.choices[0].message.content == text_of(b) == g["candidates"][0]["content"]["parts"][0]["text"]
    assert a.usage is not None
    assert (a.usage.prompt_tokens, a.usage.completion_tokens) == (b.usage.input_tokens, b.usage.output_tokens) == (
        g["usageMetadata"]["promptTokenCount"], g["usageMetadata"]["candidatesTokenCount"]) == (5, 4)


def test_count_tokens_and_malformed_requests(direct_claude: anthropic.Anthropic, direct_oai: openai.OpenAI,
                                             fake_gemini: FakeProviderProcess) -> None:
    counted = direct_claude.messages.count_tokens(model="m", system="a b", messages=[{"role": "user", "content": "c d e"}])
    assert counted.input_tokens == 5
    _, _, data = raw(gemini_url(fake_gemini, "m", "countTokens"),
                     {"contents": [{"role": "user", "parts": [{"text": "c d e"}]}]},
                     {"x-goog-api-key": fake_gemini.api_key})
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
