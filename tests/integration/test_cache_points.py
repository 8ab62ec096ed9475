"""Anthropic prompt caching across APIs, through the real sidecar with the official SDKs: `cache_control`
reaches a Bedrock Converse backend as `cachePoint` blocks and the cached count comes back to the
Anthropic SDK; to an OpenAI backend the front end's breakpoint marks are never sent.

Cache writes on the translated path (an Anthropic request served by Bedrock Converse, or by Anthropic
when it cannot pass through, its personal data masked) come back as `cache_creation_input_tokens`,
left out of `input_tokens` as Anthropic does, plain and streamed (`message_start`, then cumulative
counts in `message_delta`)."""

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
POLICY = "ModelPolicy team-a/mask-personal-data"
WRITTEN = 1024  # what both fakes report written to the cache for a prompt with a breakpoint
EMAIL = "jane.doe@example.org"  # personal data: the masked route's request cannot pass through
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


def _route(name: str, provider: str, model: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "rules": [{"name": "default", "backends": [{"provider": provider, "model": model}]}],
    }


@pytest.fixture(scope="module")
def sidecar(
    fake_bedrock_process: FakeProviderProcess,
    fake_openai_process: FakeProviderProcess,
    fake_anthropic_process: FakeProviderProcess,
) -> Iterator[Any]:
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
    claude = {
        "name": "claude",
        "type": "anthropic",
        "baseUrl": fake_anthropic_process.base_url,
        "apiKey": DEFAULT_KEYS["anthropic"],
    }
    masked = {
        "provider": "claude",
        "model": "claude-masked",
        "dataClasses": ["personal"],
        "policy": POLICY,
        "redaction": {"kinds": ["email"], "restore": True},
    }
    snapshot = {
        "providers": [bedrock, oai, claude],
        "routes": [
            _route("claude-converse", "bedrock", MODEL),
            _route("gpt", "oai", "gpt-4o"),
            _route("masked", "claude", "claude-masked"),
            _route("claude", "claude", "claude-direct"),
        ],
        "policy": {
            "workload": "team-a/web",
            "policies": [POLICY],
            "defaultClass": "internal",
            "detectPersonalData": True,
            "redactedBackends": [masked],
        },
    }
    with SidecarProcess(snapshot) as process:
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


# --- cache writes on the translated path ----------------------------------------------------


def _messages(*, cached: bool) -> Any:
    document: dict[str, Any] = {"type": "text", "text": f"A long shared document, from {EMAIL}."}
    if cached:
        document["cache_control"] = EPHEMERAL
    return [{"role": "user", "content": [document, {"type": "text", "text": "hello there"}]}]


def _system(*, cached: bool) -> Any:
    return SYSTEM if cached else [{key: value for key, value in SYSTEM[0].items() if key != "cache_control"}]


@pytest.fixture(params=["claude-converse", "masked"])
def translated(
    request: pytest.FixtureRequest, fake_bedrock: FakeProviderProcess, fake_anthropic: FakeProviderProcess
) -> tuple[str, FakeProviderProcess]:
    """A route on which an Anthropic request is translated, and the fake behind it."""
    return request.param, fake_bedrock if request.param == "claude-converse" else fake_anthropic


def _ask(claude: anthropic.Anthropic, route: str, *, cached: bool, stream: bool) -> anthropic.types.Usage:
    system, messages = _system(cached=cached), _messages(cached=cached)
    if not stream:
        return claude.messages.create(model=route, max_tokens=100, system=system, messages=messages).usage
    with claude.messages.stream(model=route, max_tokens=100, system=system, messages=messages) as events:
        return events.get_final_message().usage


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_cache_write_is_reported_apart_from_the_input(
    claude: anthropic.Anthropic, translated: tuple[str, FakeProviderProcess], stream: bool
) -> None:
    route, fake = translated
    uncached = _ask(claude, route, cached=False, stream=stream)
    fake.script([{"cache_write": True}])
    written = _ask(claude, route, cached=True, stream=stream)
    assert written.cache_creation_input_tokens == WRITTEN
    assert written.input_tokens == uncached.input_tokens  # the rest of the prompt only, as Anthropic counts it
    assert written.cache_read_input_tokens == 0
    assert (uncached.cache_creation_input_tokens, uncached.cache_read_input_tokens) == (0, 0)
    sent = str(fake.requests()[-1]["json"])
    if route == "masked":  # translated, since masked: the provider never saw the address, but was asked to cache
        assert EMAIL not in sent and "cache_control" in sent
    else:
        assert "cachePoint" in sent


def test_a_cache_read_after_the_write_is_reported_as_a_read(
    claude: anthropic.Anthropic, translated: tuple[str, FakeProviderProcess]
) -> None:
    route, fake = translated
    fake.script([{"cache_write": True}])
    written = _ask(claude, route, cached=True, stream=False)
    read = _ask(claude, route, cached=True, stream=False)
    assert (read.cache_read_input_tokens, read.cache_creation_input_tokens) == (WRITTEN, 0)
    assert read.input_tokens == written.input_tokens


def test_streamed_counts_come_as_anthropic_sends_them(
    sidecar: SidecarProcess, fake_bedrock: FakeProviderProcess
) -> None:
    """`message_start` holds every count (0: the internal form learns them at the end), and
    `message_delta` the cumulative ones, the cache write among them."""
    fake_bedrock.script([{"cache_write": True}])
    client = sidecar.anthropic_client()
    events = list(
        client.messages.create(
            model="claude-converse", max_tokens=100, system=SYSTEM, messages=_messages(cached=True), stream=True
        )
    )
    start = next(event for event in events if event.type == "message_start")
    delta = next(event for event in events if event.type == "message_delta")
    assert start.message.usage.cache_creation_input_tokens == 0
    assert start.message.usage.cache_read_input_tokens == 0
    assert delta.usage.cache_creation_input_tokens == WRITTEN
    assert delta.usage.cache_read_input_tokens == 0
    assert delta.usage.input_tokens is not None and delta.usage.output_tokens > 0


def test_a_request_that_passes_through_reports_what_anthropic_sent(
    claude: anthropic.Anthropic, fake_anthropic: FakeProviderProcess
) -> None:
    """Without personal data, the request goes to Anthropic as sent, and its usage comes back as sent."""
    fake_anthropic.script([{"cache_write": True}])
    usage = claude.messages.create(model="claude", max_tokens=100, system=SYSTEM, messages=MESSAGES).usage
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (WRITTEN, 0)
