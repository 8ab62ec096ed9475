"""The fake providers are faithful, OpenAI and Azure OpenAI (Anthropic, Gemini and the
cross-provider checks are in test_fakes_anthropic_gemini.py): the official SDK accepts
what they send and surfaces scripted failures as the right errors."""

from __future__ import annotations

import base64
import json
import struct
import time
import urllib.error
import urllib.request
from typing import Any

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

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a place",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}


# --------------------------------------------------------------------------- OpenAI


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
        model="gpt-4o",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
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
    status, headers, data = raw(
        fake_openai.base_url + "/v1/chat/completions", body, {"Authorization": f"Bearer {fake_openai.api_key}"}
    )
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

    history: Any = [
        *ask,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny and warm"},
    ]
    again = direct_oai.chat.completions.create(model="gpt-4o", messages=history, tools=[WEATHER_TOOL])
    assert again.choices[0].message.content == "tool said: sunny and warm"


def test_openai_streamed_tool_call(direct_oai: openai.OpenAI) -> None:
    stream = direct_oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "use tool news today"}], tools=[WEATHER_TOOL], stream=True
    )
    chunks = list(stream)
    first = chunks[0].choices[0].delta.tool_calls or []
    assert first[0].id and first[0].id.startswith("call_") and first[0].function.name == "get_weather"
    pieces = [
        tc.function.arguments
        for c in chunks[1:]
        if c.choices
        for tc in c.choices[0].delta.tool_calls or []
        if tc.function and tc.function.arguments
    ]
    assert len(pieces) >= 2
    assert json.loads("".join(pieces)) == {"query": "news today"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_tool_choice_and_limits(direct_oai: openai.OpenAI) -> None:
    forced = direct_oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "what now"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    [forced_call] = forced.choices[0].message.tool_calls or []
    assert json.loads(forced_call.function.arguments) == {"query": "what now"}
    short = direct_oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "a b c d"}], max_completion_tokens=2
    )
    assert (short.choices[0].message.content, short.choices[0].finish_reason) == ("echo: a", "length")
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}
    structured = direct_oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Oslo"}],
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": schema}},
    )
    assert json.loads(structured.choices[0].message.content or "") == {"city": "echo: Oslo", "days": 1}


def test_openai_rejects_what_openai_rejects(direct_oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        direct_oai.chat.completions.create(
            model="gpt-4o", messages=[{"role": "tool", "tool_call_id": "x", "content": "y"}]
        )
    assert bad.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert "preceeding message with 'tool_calls'" in bad.value.message
    with pytest.raises(openai.BadRequestError):
        direct_oai.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream_options={"include_usage": True}
        )
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
    _status, _, data = raw(
        fake_openai.base_url + "/v1/embeddings",
        {"model": "m", "input": "alpha", "encoding_format": "base64"},
        {"Authorization": f"Bearer {fake_openai.api_key}"},
    )
    encoded = json.loads(data)["data"][0]["embedding"]
    assert list(struct.unpack("<8f", base64.b64decode(encoded))) == embedding("alpha")
    floats = direct_oai.embeddings.create(model="m", input="alpha", encoding_format="float", dimensions=4)
    assert floats.data[0].embedding == embedding("alpha", 4)


def test_openai_models(direct_oai: openai.OpenAI) -> None:
    assert "gpt-4o" in [m.id for m in direct_oai.models.list()]


# --------------------------------------------------------------------------- Azure OpenAI


@pytest.fixture
def direct_azure(fake_openai: FakeProviderProcess) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=fake_openai.base_url, api_key=fake_openai.api_key, api_version="2024-10-21", max_retries=0
    )


def test_azure_chat_stream_and_embeddings(direct_azure: openai.AzureOpenAI, fake_openai: FakeProviderProcess) -> None:
    resp = direct_azure.chat.completions.create(model="prod-gpt4o", messages=[{"role": "user", "content": "hi azure"}])
    assert resp.model == "prod-gpt4o" and resp.choices[0].message.content == "echo: hi azure"
    stream = direct_azure.chat.completions.create(
        model="prod-gpt4o",
        messages=[{"role": "user", "content": "hi azure"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices == []  # Azure's prompt-filter chunk comes first
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hi azure"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    emb = direct_azure.embeddings.create(model="prod-embed", input="alpha")
    assert emb.data[0].embedding == embedding("alpha") and emb.model == "prod-embed"
    seen = fake_openai.requests()
    assert [r["path"] for r in seen] == ["/openai/deployments/prod-gpt4o/chat/completions"] * 2 + [
        "/openai/deployments/prod-embed/embeddings"
    ]
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
    fake_openai.script([{"status": 429, "retry_after": "1"}, {"status": 500}, {"status": 503}, {"delay": 0.05}])
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
