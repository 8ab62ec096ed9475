"""Apps using the official OpenAI and Anthropic SDKs, pointed at the sidecar, served by a Bedrock backend:
the real sidecar process signs each request with SigV4 and the fake Bedrock checks the signature
(with botocore) as AWS would, and answers ConverseStream in the binary event-stream framing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.fakes.process import FakeProviderProcess
from tests.fakes.server import DEFAULT_KEYS
from tests.integration.sidecar import SidecarProcess

pytestmark = pytest.mark.timeout(60)

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
KEY_ID, _, SECRET = DEFAULT_KEYS["bedrock"].partition(":")
ONE_TRY = {"attempts": 1}
FAST_RETRY = {"attempts": 3, "backoffBaseSeconds": 0.01, "backoffMaxSeconds": 0.05}
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a thing up",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}


def _bedrock(name: str, url: str, *, secret: str = SECRET, api: str = "converse") -> dict[str, Any]:
    keys = {"accessKeyId": KEY_ID, "secretAccessKey": secret}
    return {
        "name": name,
        "type": "bedrock",
        "baseUrl": url,
        "bedrock": {"region": "eu-central-1", "credentials": keys, "api": api},
        "pricing": {MODEL: {"inputPerMillion": 0.8, "outputPerMillion": 4}},
    }


def _route(model: str, provider: str, *, fallback: str | None = None, retry: Any = ONE_TRY) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": "default", "backends": [{"provider": provider, "model": MODEL}], "retry": retry}
    if fallback:
        rule["fallbacks"] = [{"provider": fallback, "model": "gpt-4o"}]
    return {"name": model, "model": model, "rules": [rule]}


@pytest.fixture(scope="module")
def bedrock_sidecar(fake_bedrock_process: FakeProviderProcess, fake_openai_process: Any) -> Iterator[SidecarProcess]:
    url = fake_bedrock_process.base_url
    bearer = {"name": "bedrock-key", "type": "bedrock", "baseUrl": url, "bedrock": {"region": "eu-central-1"}}
    snapshot = {
        "providers": [
            _bedrock("bedrock", url),
            _bedrock("bedrock-wrong-secret", url, secret="wrong/secret/wrong/secret/wrong/secret00"),
            {**bearer, "apiKey": DEFAULT_KEYS["bedrock"]},
            _bedrock("bedrock-claude", url, api="anthropic-messages"),
            {
                "name": "oai",
                "type": "openai",
                "baseUrl": fake_openai_process.base_url + "/v1",
                "apiKey": DEFAULT_KEYS["openai"],
            },
        ],
        "routes": [
            _route("nova", "bedrock"),
            _route("nova-fallback", "bedrock", fallback="oai"),
            _route("nova-retrying", "bedrock", retry=FAST_RETRY),
            _route("nova-wrong-secret", "bedrock-wrong-secret", fallback="oai"),
            _route("nova-api-key", "bedrock-key"),
            _route("claude-invoke", "bedrock-claude", fallback="oai"),
        ],
    }
    with SidecarProcess(snapshot) as process:
        yield process


@pytest.fixture
def oai(bedrock_sidecar: SidecarProcess, fake_bedrock: FakeProviderProcess) -> openai.OpenAI:
    return bedrock_sidecar.openai_client()


@pytest.fixture
def claude(bedrock_sidecar: SidecarProcess, fake_bedrock: FakeProviderProcess) -> anthropic.Anthropic:
    return bedrock_sidecar.anthropic_client()


def test_openai_sdk_plain(oai: openai.OpenAI, fake_bedrock: FakeProviderProcess) -> None:
    answer = oai.chat.completions.create(
        model="nova",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        max_tokens=100,
        temperature=0.1,
    )
    assert answer.choices[0].message.content == "echo: hello there"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (4, 3)
    [seen] = fake_bedrock.requests()
    assert seen["path"] == f"/model/{MODEL}/converse"
    assert seen["json"]["inferenceConfig"] == {"maxTokens": 100, "temperature": 0.1}
    assert seen["json"]["system"] == [{"text": "be brief"}]
    assert seen["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")
    assert "/eu-central-1/bedrock/aws4_request" in seen["headers"]["authorization"]


def test_openai_sdk_stream(oai: openai.OpenAI, fake_bedrock: FakeProviderProcess) -> None:
    stream = oai.chat.completions.create(
        model="nova",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == "echo: one two three" and len(pieces) >= 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (3, 4)
    [seen] = fake_bedrock.requests()
    assert seen["path"] == f"/model/{MODEL}/converse-stream"
    assert seen["headers"]["accept"] == "application/vnd.amazon.eventstream"


def test_openai_sdk_tools_streamed_and_answered(oai: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "use tool trains to Bern"}]
    chunks = list(oai.chat.completions.create(model="nova", messages=messages, tools=[TOOL], stream=True))  # type: ignore[list-item]
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    first = calls[0]
    assert first.id and first.function is not None and first.function.name == "lookup"
    arguments = "".join(tc.function.arguments or "" for tc in calls if tc.function)
    assert json.loads(arguments) == {"query": "trains to Bern"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": first.id, "type": "function", "function": {"name": "lookup", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": first.id, "content": "at 9:00"},
    ]
    final = oai.chat.completions.create(model="nova", messages=messages, tools=[TOOL])  # type: ignore[list-item]
    assert final.choices[0].message.content == "tool said: at 9:00"


def test_anthropic_sdk_plain_and_streamed(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="nova", max_tokens=100, system="be brief", messages=[{"role": "user", "content": "hello there"}]
    )
    assert message.content[0].type == "text" and message.content[0].text == "echo: hello there"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 3)
    with claude.messages.stream(
        model="nova", max_tokens=100, messages=[{"role": "user", "content": "one two three"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "echo: one two three"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4


def _anthropic_tool_round_trip(claude: anthropic.Anthropic, model: str) -> None:
    """A streamed tool_use, then the tool's result sent back, through the Messages API on `model`."""
    tool: Any = {"name": "lookup", "input_schema": TOOL["function"]["parameters"]}  # type: ignore[index]
    messages: list[Any] = [{"role": "user", "content": "use tool trains to Bern"}]
    with claude.messages.stream(model=model, max_tokens=100, tools=[tool], messages=messages) as stream:
        first = stream.get_final_message()
    use = next(b for b in first.content if b.type == "tool_use")
    assert (first.stop_reason, use.name, use.input) == ("tool_use", "lookup", {"query": "trains to Bern"})
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "at 9:00"}]},
    ]
    final = claude.messages.create(model=model, max_tokens=100, tools=[tool], messages=messages)
    assert final.content[0].type == "text" and final.content[0].text == "tool said: at 9:00"


def test_anthropic_sdk_tool_use(claude: anthropic.Anthropic) -> None:
    _anthropic_tool_round_trip(claude, "nova")


def test_a_validation_error_is_the_apps_fault_and_not_sent_elsewhere(
    oai: openai.OpenAI, fake_bedrock: FakeProviderProcess, fake_openai: FakeProviderProcess
) -> None:
    fake_bedrock.script([{"status": 400, "message": "The model returned the following errors: bad input"}])
    with pytest.raises(openai.BadRequestError) as caught:
        oai.chat.completions.create(model="nova-fallback", messages=[{"role": "user", "content": "x"}])
    assert "bad input" in caught.value.message
    assert fake_openai.requests() == []


def test_throttling_falls_back_to_the_next_backend(
    oai: openai.OpenAI, fake_bedrock: FakeProviderProcess, fake_openai: FakeProviderProcess
) -> None:
    fake_bedrock.script([{"status": 429}])
    answer = oai.chat.completions.create(model="nova-fallback", messages=[{"role": "user", "content": "hello"}])
    assert answer.choices[0].message.content == "echo: hello" and answer.model == "gpt-4o"
    assert len(fake_bedrock.requests()) == 1 and len(fake_openai.requests()) == 1


def test_throttling_is_retried_on_the_same_backend(oai: openai.OpenAI, fake_bedrock: FakeProviderProcess) -> None:
    fake_bedrock.script([{"status": 429}, {"status": 503}])
    answer = oai.chat.completions.create(model="nova-retrying", messages=[{"role": "user", "content": "hello"}])
    assert answer.choices[0].message.content == "echo: hello"
    seen = fake_bedrock.requests()
    assert len(seen) == 3
    # each attempt is signed afresh (the retries are new requests, not replays of a stale signature)
    assert all(s["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 ") for s in seen)


def test_throttling_everywhere_is_a_429(oai: openai.OpenAI, fake_bedrock: FakeProviderProcess) -> None:
    fake_bedrock.script([{"status": 429, "retry_after": "0"}])
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model="nova", messages=[{"role": "user", "content": "x"}])


def test_a_wrong_secret_is_refused_by_the_signature_check_and_falls_back(
    oai: openai.OpenAI, fake_bedrock: FakeProviderProcess, fake_openai: FakeProviderProcess
) -> None:
    answer = oai.chat.completions.create(model="nova-wrong-secret", messages=[{"role": "user", "content": "hi"}])
    assert answer.model == "gpt-4o"
    assert len(fake_bedrock.requests()) == 1 and len(fake_openai.requests()) == 1


def test_an_exception_in_the_stream_before_content_falls_back(
    oai: openai.OpenAI, fake_bedrock: FakeProviderProcess, fake_openai: FakeProviderProcess
) -> None:
    fake_bedrock.script([{"error_after_chunks": 1}])  # messageStart, then modelStreamErrorException
    chunks = list(
        oai.chat.completions.create(model="nova-fallback", messages=[{"role": "user", "content": "a b"}], stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: a b"
    assert len(fake_openai.requests()) == 1


def test_a_stream_cut_before_message_stop_ends_the_stream_with_an_error(
    oai: openai.OpenAI, fake_bedrock: FakeProviderProcess
) -> None:
    fake_bedrock.script([{"cut_after_chunks": 4}])  # messageStart and three words, then the connection drops
    with pytest.raises(openai.APIError):
        list(
            oai.chat.completions.create(model="nova", messages=[{"role": "user", "content": "a b c d e"}], stream=True)
        )


def test_a_bedrock_api_key_as_bearer(oai: openai.OpenAI, fake_bedrock: FakeProviderProcess) -> None:
    answer = oai.chat.completions.create(model="nova-api-key", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "echo: hi"
    [seen] = fake_bedrock.requests()
    assert seen["headers"]["authorization"] == "Bearer " + DEFAULT_KEYS["bedrock"]


def test_the_secret_key_is_in_no_config_dump_or_log(oai: openai.OpenAI, bedrock_sidecar: SidecarProcess) -> None:
    oai.chat.completions.create(model="nova-wrong-secret", messages=[{"role": "user", "content": "hi"}])
    status, config = bedrock_sidecar.admin("/config")
    dumped = json.dumps(config)
    assert status == 200 and "<redacted>" in dumped
    for secret in (SECRET, "wrong/secret/wrong/secret/wrong/secret00", KEY_ID, DEFAULT_KEYS["bedrock"]):
        assert secret not in dumped
        assert secret not in bedrock_sidecar.logs()


def test_throttling_inside_the_stream_before_content_is_retried(
    oai: openai.OpenAI, fake_bedrock: FakeProviderProcess
) -> None:
    fake_bedrock.script([{"error_after_chunks": 1, "message": "throttlingException"}])
    chunks = list(
        oai.chat.completions.create(model="nova-retrying", messages=[{"role": "user", "content": "a b"}], stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: a b"
    assert len(fake_bedrock.requests()) == 2  # rate limited, so the same backend again, not a bad answer


@pytest.mark.parametrize(("status", "tries"), [(408, 3), (424, 3)])
def test_model_timeouts_and_model_errors_are_retried_not_blamed_on_the_app(
    oai: openai.OpenAI, fake_bedrock: FakeProviderProcess, status: int, tries: int
) -> None:
    fake_bedrock.script([{"status": status}, {"status": status}])
    answer = oai.chat.completions.create(model="nova-retrying", messages=[{"role": "user", "content": "hello"}])
    assert answer.choices[0].message.content == "echo: hello"
    assert len(fake_bedrock.requests()) == tries


def test_anthropic_models_through_invoke_model(
    oai: openai.OpenAI, claude: anthropic.Anthropic, fake_bedrock: FakeProviderProcess
) -> None:
    answer = oai.chat.completions.create(model="claude-invoke", messages=[{"role": "user", "content": "hello there"}])
    assert answer.choices[0].message.content == "echo: hello there"
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (2, 3)
    with claude.messages.stream(
        model="claude-invoke", max_tokens=100, messages=[{"role": "user", "content": "one two three"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "echo: one two three" and final.stop_reason == "end_turn"
    plain, streamed = fake_bedrock.requests()
    assert (
        plain["path"] == f"/model/{MODEL}/invoke" and streamed["path"] == f"/model/{MODEL}/invoke-with-response-stream"
    )
    assert streamed["json"]["anthropic_version"] == "bedrock-2023-05-31" and "model" not in streamed["json"]
    assert streamed["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")


def test_anthropic_tool_use_through_invoke_model(claude: anthropic.Anthropic) -> None:
    _anthropic_tool_round_trip(claude, "claude-invoke")


def test_throttling_on_invoke_model_falls_back(
    oai: openai.OpenAI, fake_bedrock: FakeProviderProcess, fake_openai: FakeProviderProcess
) -> None:
    fake_bedrock.script([{"status": 429}])
    answer = oai.chat.completions.create(model="claude-invoke", messages=[{"role": "user", "content": "hello"}])
    assert answer.model == "gpt-4o" and len(fake_openai.requests()) == 1


@pytest.mark.parametrize(("route", "sent_as"), [("nova", "converse"), ("claude-invoke", "invokeModel")])
def test_count_tokens_is_answered_by_bedrocks_count_tokens(
    claude: anthropic.Anthropic, fake_bedrock: FakeProviderProcess, route: str, sent_as: str
) -> None:
    tool: Any = {"name": "lookup", "input_schema": TOOL["function"]["parameters"]}  # type: ignore[index]
    asked: Any = {"system": "be brief", "messages": [{"role": "user", "content": "hello there"}], "tools": [tool]}
    counted = claude.messages.count_tokens(model=route, **asked)
    made = claude.messages.create(model=route, max_tokens=100, **asked)
    assert counted.input_tokens == made.usage.input_tokens == 4  # what the call itself is billed for
    seen = fake_bedrock.requests()[0]
    assert seen["path"] == f"/model/{MODEL}/count-tokens"
    assert list(seen["json"]["input"]) == [sent_as]
    assert seen["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")  # signed
