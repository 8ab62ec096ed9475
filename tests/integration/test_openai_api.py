"""Apps using the official OpenAI SDK, pointed at the sidecar, reach every provider."""

from __future__ import annotations

import json

import openai
import pytest

from tests.fakes.server import DEFAULT_KEYS

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a thing up",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
]


@pytest.mark.parametrize(
    "route,upstream_model",
    [
        ("gpt", "gpt-4o"),
        ("claude", "claude-sonnet-4-5"),
        ("gemini", "gemini-2.5-flash"),
        ("azure", "my-gpt4o-deployment"),
        ("local", "llama3.1"),
    ],
)
def test_plain_chat_reaches_each_provider(oai, route, upstream_model):
    reply = oai.chat.completions.create(
        model=route, messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    )
    assert reply.choices[0].message.content == "echo: hello there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == upstream_model
    # "be brief hello there" = 4 words in, "echo: hello there" = 3 words out
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (4, 3)


@pytest.mark.parametrize("route", ["gpt", "claude", "gemini", "azure"])
def test_streaming_chat_is_translated_chunk_by_chunk(oai, route):
    stream = oai.chat.completions.create(
        model=route,
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three four"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 3  # really streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5


def test_stream_usage_is_asked_upstream_but_hidden_from_clients_that_did_not_ask(oai, fake_openai):
    chunks = list(oai.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert all(c.usage is None for c in chunks)
    sent = fake_openai.requests()[-1]["json"]
    assert sent["stream_options"] == {"include_usage": True}


def test_sidecar_adds_the_provider_credential_and_the_app_key_stays_home(oai, fake_openai, fake_anthropic):
    oai.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}])
    oai.chat.completions.create(model="claude", messages=[{"role": "user", "content": "x"}])
    openai_headers = {k.lower(): v for k, v in fake_openai.requests()[-1]["headers"].items()}
    anthropic_headers = {k.lower(): v for k, v in fake_anthropic.requests()[-1]["headers"].items()}
    assert openai_headers["authorization"] == "Bearer " + DEFAULT_KEYS["openai"]
    assert anthropic_headers["x-api-key"] == DEFAULT_KEYS["anthropic"]
    assert "placeholder" not in json.dumps(openai_headers) + json.dumps(anthropic_headers)


def test_azure_gets_deployment_url_api_version_and_api_key(oai, fake_openai):
    oai.chat.completions.create(model="azure", messages=[{"role": "user", "content": "x"}])
    request = fake_openai.requests()[-1]
    assert request["path"] == "/openai/deployments/my-gpt4o-deployment/chat/completions"
    assert request["query"]["api-version"] == "2024-10-21"
    assert {k.lower(): v for k, v in request["headers"].items()}["api-key"] == DEFAULT_KEYS["openai"]


@pytest.mark.parametrize("route", ["gpt", "claude", "gemini"])
def test_tool_call_round_trip(oai, route):
    messages = [{"role": "user", "content": "use tool weather in Paris"}]
    reply = oai.chat.completions.create(model=route, messages=messages, tools=TOOLS, tool_choice="auto")
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"query": "weather in Paris"}
    messages += [
        reply.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    final = oai.chat.completions.create(model=route, messages=messages, tools=TOOLS)
    assert final.choices[0].message.content == "tool said: sunny"


@pytest.mark.parametrize("route", ["gpt", "claude", "gemini"])
def test_tool_call_arguments_stream(oai, route):
    stream = oai.chat.completions.create(
        model=route, messages=[{"role": "user", "content": "use tool flights to Oslo"}], tools=TOOLS, stream=True
    )
    name, arguments, finish = "", "", None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                name += call.function.name or ""
                arguments += call.function.arguments or ""
            finish = choice.finish_reason or finish
    assert (name, json.loads(arguments), finish) == ("lookup", {"query": "flights to Oslo"}, "tool_calls")


def test_images_and_json_schema_reach_anthropic_translated(oai, fake_anthropic):
    pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    oai.chat.completions.create(
        model="claude",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + pixel}},
                ],
            }
        ],
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}},
    )
    body = fake_anthropic.requests()[-1]["json"]
    blocks = body["messages"][0]["content"]
    assert {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": pixel}} in blocks
    assert body["max_tokens"] > 0


def test_embeddings_float_and_base64_agree_across_providers(oai):
    for route in ("embed", "embed-gemini"):
        as_floats = oai.embeddings.create(model=route, input=["a cat", "a dog"], encoding_format="float")
        default = oai.embeddings.create(model=route, input=["a cat", "a dog"])  # the SDK asks for base64
        assert len(as_floats.data) == 2
        assert [round(x, 5) for x in default.data[1].embedding] == [round(x, 5) for x in as_floats.data[1].embedding]


def test_embeddings_on_a_provider_without_them_is_a_clear_400(oai):
    with pytest.raises(openai.BadRequestError) as caught:
        oai.embeddings.create(model="embed-claude", input="x")
    assert "no embeddings" in caught.value.message.lower()


def test_models_lists_the_routes(oai):
    ids = {m.id for m in oai.models.list()}
    assert {"gpt", "claude", "gemini", "azure", "embed", "tiered"} <= ids


def test_header_rules_pick_the_backend(oai):
    beta = oai.chat.completions.create(
        model="tiered", messages=[{"role": "user", "content": "x"}], extra_headers={"X-Tier": "beta"}
    )
    plain = oai.chat.completions.create(model="tiered", messages=[{"role": "user", "content": "x"}])
    assert (beta.model, plain.model) == ("claude-sonnet-4-5", "gpt-4o")
