"""Anthropic prompt caching across APIs, through the real sidecar with the official SDKs: `cache_control`
reaches a Bedrock Converse backend as `cachePoint` blocks and the cached count comes back to the
Anthropic SDK; to an OpenAI backend the front end's breakpoint marks are never sent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.fakes.process import FakeProviderProcess
from tests.fakes.server import DEFAULT_KEYS
from tests.integration.sidecar import SidecarProcess

pytestmark = pytest.mark.timeout(60)

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
KEY_ID, _, SECRET = DEFAULT_KEYS["bedrock"].partition(":")
EPHEMERAL: Any = {"type": "ephemeral"}
POINT = {"cachePoint": {"type": "default"}}
SYSTEM: Any = [{"type": "text", "text": "House rules, long enough to cache.", "cache_control": EPHEMERAL}]
MESSAGES: Any = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "A long shared document.", "cache_control": EPHEMERAL},
            {"type": "text", "text": "hello there"},
        ],
    }
]


@pytest.fixture(scope="module")
def sidecar(fake_bedrock_process: FakeProviderProcess, fake_openai_process: FakeProviderProcess) -> Iterator[Any]:
    bedrock = {
        "name": "bedrock",
        "type": "bedrock",
        "baseUrl": fake_bedrock_process.base_url,
        "bedrock": {
            "region": "eu-central-1",
            "credentials": {"accessKeyId": KEY_ID, "secretAccessKey": SECRET},
            "api": "converse",
        },
    }
    oai = {
        "name": "oai",
        "type": "openai",
        "baseUrl": fake_openai_process.base_url + "/v1",
        "apiKey": DEFAULT_KEYS["openai"],
    }
    routes = [
        {"name": name, "model": name, "rules": [{"name": "default", "backends": [{"provider": p, "model": m}]}]}
        for name, p, m in (("claude-converse", "bedrock", MODEL), ("gpt", "oai", "gpt-4o"))
    ]
    with SidecarProcess({"providers": [bedrock, oai], "routes": routes}) as process:
        yield process


@pytest.fixture
def claude(sidecar: SidecarProcess) -> anthropic.Anthropic:
    return sidecar.anthropic_client()


def test_cache_control_arrives_as_cache_points_and_cached_tokens_come_back(
    claude: anthropic.Anthropic, fake_bedrock: FakeProviderProcess
) -> None:
    answer = claude.messages.create(model="claude-converse", max_tokens=100, system=SYSTEM, messages=MESSAGES)
    assert answer.content[0].type == "text" and answer.content[0].text.startswith("echo: ")
    assert answer.usage.cache_read_input_tokens == 1024
    [seen] = fake_bedrock.requests()
    assert seen["path"] == f"/model/{MODEL}/converse"
    assert seen["json"]["system"] == [{"text": "House rules, long enough to cache."}, POINT]
    assert seen["json"]["messages"][0]["content"] == [
        {"text": "A long shared document."},
        POINT,
        {"text": "hello there"},
    ]
    assert "_cache_point" not in str(seen["json"])


def test_streamed_answer_reports_the_cache_read(claude: anthropic.Anthropic, fake_bedrock: FakeProviderProcess) -> None:
    with claude.messages.stream(model="claude-converse", max_tokens=100, system=SYSTEM, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens == 1024
    [seen] = fake_bedrock.requests()
    assert seen["path"] == f"/model/{MODEL}/converse-stream"
    assert seen["json"]["system"][-1] == POINT


def test_cache_control_to_openai_sends_no_mark(claude: anthropic.Anthropic, fake_openai: FakeProviderProcess) -> None:
    answer = claude.messages.create(model="gpt", max_tokens=100, system=SYSTEM, messages=MESSAGES)
    assert answer.content[0].type == "text"
    [seen] = fake_openai.requests()
    body = seen["json"]
    # as without cache_control: a lone system text is a plain string, as every OpenAI-compatible server takes
    assert body["messages"][0] == {"role": "system", "content": "House rules, long enough to cache."}
    assert body["messages"][1]["content"][0] == {"type": "text", "text": "A long shared document."}
    assert "_cache_point" not in str(body)


def test_openai_sdk_to_openai_goes_as_sent(sidecar: SidecarProcess, fake_openai: FakeProviderProcess) -> None:
    messages: Any = [{"role": "system", "content": "rules"}, {"role": "user", "content": "hello there"}]
    sidecar.openai_client().chat.completions.create(model="gpt", messages=messages, max_tokens=10)
    [seen] = fake_openai.requests()
    assert seen["json"]["messages"] == messages
    assert "_cache_point" not in str(seen["json"])
