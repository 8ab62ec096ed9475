"""Google Vertex AI through the real sidecar, driven by the official `openai` and `anthropic` SDKs:
Gemini with a service-account key (RS256 assertions exchanged at a fake Google token endpoint) and
Claude with the pod's GKE Workload Identity (a fake metadata server), tokens refreshed before
they expire while requests flow with none failing (the fake Vertex refuses expired tokens); a
refused key ends in Vertex's 401 and the fallback; no key or token in the logs or /config."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.anthropic_fake import CACHED_TOKENS, THINKING_SIGNATURE, THINKING_TEXT
from tests.fakes.google_fake import GoogleState, check_access_token, create_app
from tests.fakes.process import FakeProviderProcess
from tests.fakes.threaded import AppThread
from tests.integration.sidecar import SidecarProcess
from tests.integration.test_passthrough import FEATURES, FUTURE

pytestmark = pytest.mark.timeout(120)

ACCOUNT = "modelway@my-project.iam.gserviceaccount.com"
PROJECT, REGION = "my-project", "europe-west4"
LIFETIME = 3.0  # seconds: refreshed at half of it (real tokens live an hour, refreshed 5 minutes early)
CLAUDE = "claude-sonnet-4-5@20250929"
GEMINI = "gemini-2.5-flash"
BETA = "interleaved-thinking-2025-05-14"


def _route(model: str, provider: str, upstream: str) -> dict[str, Any]:
    return {"name": model, "model": model, "rules": [{"backends": [{"provider": provider, "model": upstream}]}]}


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    return rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def google(keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]) -> Iterator[tuple[AppThread, GoogleState]]:
    public = (
        keys[0].public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    state = GoogleState(client_email=ACCOUNT, public_key_pem=public, lifetime_seconds=LIFETIME)
    with AppThread(lambda: create_app(state)) as thread:
        yield thread, state


def _service_account(key: rsa.RSAPrivateKey, token_uri: str) -> str:
    return json.dumps(
        {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0123456789abcdef0123456789abcdef01234567",
            "private_key": _pem(key),
            "client_email": ACCOUNT,
            "client_id": "112233445566778899001",
            "token_uri": token_uri,
        }
    )


@pytest.fixture(scope="module")
def vertex_sidecar(
    google: tuple[AppThread, GoogleState],
    keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey],
    fake_vertex_process: FakeProviderProcess,
) -> Iterator[tuple[SidecarProcess, list[str]]]:
    thread, state = google
    good, other = (_service_account(k, thread.base_url + "/token") for k in keys)

    def vertex(name: str, **settings: Any) -> dict[str, Any]:
        return {
            "name": name,
            "type": "vertex",
            "baseUrl": fake_vertex_process.base_url,
            "vertex": {"project": PROJECT, "region": REGION, **settings},
        }

    providers = [
        vertex("gemini", serviceAccountKey=good),
        vertex("claude", publisher="anthropic"),  # no key: the metadata server
        vertex("refused", serviceAccountKey=other),
    ]
    routes = [
        _route("gemini", "gemini", GEMINI),
        _route("claude", "claude", CLAUDE),
        _route("refused", "refused", GEMINI),
        {
            "name": "f",
            "model": "fallback",
            "rules": [
                {
                    "backends": [{"provider": "refused", "model": "gemini-2.5-flash"}],
                    "fallbacks": [{"provider": "claude", "model": CLAUDE}],
                }
            ],
        },
    ]  # fmt: skip
    env = {"GCE_METADATA_HOST": thread.base_url.removeprefix("http://")}
    with SidecarProcess({"providers": providers, "routes": routes}, env=env) as process:
        deadline = time.monotonic() + 10
        while len(state.calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        yield process, [good, other]


def _openai(sidecar: SidecarProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=sidecar.base_url + "/v1", api_key="placeholder", max_retries=0, timeout=20)


def _anthropic(sidecar: SidecarProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sidecar.base_url, api_key="placeholder", max_retries=0, timeout=20)


def _bearer(request: dict[str, Any]) -> str:
    return str(request["headers"]["authorization"]).removeprefix("Bearer ")


def test_gemini_with_a_service_account_key_plain_and_streamed(
    vertex_sidecar: tuple[SidecarProcess, list[str]], fake_vertex: FakeProviderProcess, google: Any
) -> None:
    client = _openai(vertex_sidecar[0])
    answer = client.chat.completions.create(model="gemini", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content and answer.usage is not None and answer.usage.prompt_tokens > 0
    stream = client.chat.completions.create(model="gemini", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == answer.choices[0].message.content
    plain, streamed = fake_vertex.requests()
    base = f"/v1/projects/{PROJECT}/locations/{REGION}/publishers/google/models/gemini-2.5-flash"
    assert plain["path"] == base + ":generateContent"
    assert streamed["path"] == base + ":streamGenerateContent" and streamed["query"] == {"alt": "sse"}
    assert plain["json"]["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    assert check_access_token(_bearer(plain)) is None and "x-goog-api-key" not in plain["headers"]
    assertions = [c for c in google[1].calls if c["path"] == "/token"]
    assert assertions and assertions[0]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"


def test_claude_with_workload_identity_through_the_anthropic_sdk(
    vertex_sidecar: tuple[SidecarProcess, list[str]], fake_vertex: FakeProviderProcess, google: Any
) -> None:
    client = _anthropic(vertex_sidecar[0])
    message = client.messages.create(model="claude", max_tokens=64, messages=[{"role": "user", "content": "hello"}])
    assert message.content[0].type == "text" and message.content[0].text
    with client.messages.stream(model="claude", max_tokens=64, messages=[{"role": "user", "content": "hello"}]) as s:
        text = "".join(s.text_stream)
    assert text == message.content[0].text
    plain, streamed = fake_vertex.requests()
    base = f"/v1/projects/{PROJECT}/locations/{REGION}/publishers/anthropic/models/{CLAUDE}"
    assert plain["path"] == base + ":rawPredict" and streamed["path"] == base + ":streamRawPredict"
    assert plain["json"]["anthropic_version"] == "vertex-2023-10-16" and "model" not in plain["json"]
    assert streamed["json"]["stream"] is True
    assert check_access_token(_bearer(plain)) is None
    assert any(c.get("flavor") == "Google" for c in google[1].calls)


def test_tokens_are_refreshed_before_expiry_under_load_with_no_failed_request(
    vertex_sidecar: tuple[SidecarProcess, list[str]], fake_vertex: FakeProviderProcess, google: Any
) -> None:
    sidecar = vertex_sidecar[0]
    chat, messages = _openai(sidecar), _anthropic(sidecar)
    fetches_before = len(google[1].calls)

    def ask(n: int) -> str:
        if n % 4 == 0:
            return (
                chat.chat.completions.create(model="gemini", messages=[{"role": "user", "content": f"n {n}"}])
                .choices[0]
                .message.content
                or ""
            )
        if n % 4 == 1:
            stream = chat.chat.completions.create(
                model="gemini", messages=[{"role": "user", "content": f"n {n}"}], stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        if n % 4 == 2:
            reply = messages.messages.create(
                model="claude", max_tokens=32, messages=[{"role": "user", "content": f"n {n}"}]
            )
            return reply.content[0].text if reply.content[0].type == "text" else ""
        with messages.messages.stream(
            model="claude", max_tokens=32, messages=[{"role": "user", "content": f"n {n}"}]
        ) as s:
            return "".join(s.text_stream)

    answers: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        deadline = time.monotonic() + 3 * LIFETIME
        n = 0
        while time.monotonic() < deadline:
            answers += pool.map(ask, range(n, n + 4))  # raises if any request failed
            n += 4
    assert len(answers) == n and all(answers)
    tokens = {_bearer(r) for r in fake_vertex.requests()}
    assert len(tokens) >= 6  # two identities, three lifetimes: each token replaced at least twice
    assert len(google[1].calls) - fetches_before >= 4  # fmt: skip


def test_a_refused_key_is_a_clear_503_then_the_fallback(
    vertex_sidecar: tuple[SidecarProcess, list[str]], fake_vertex: FakeProviderProcess
) -> None:
    client = _openai(vertex_sidecar[0])
    # Google refused the key's assertion, so no token: nothing is sent to Vertex, and the app is told why
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="refused", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 503
    message = str(refused.value)
    assert "provider 'refused': no credentials yet from the Google service account" in message
    assert "Invalid JWT Signature" in message
    with pytest.raises(anthropic.APIStatusError) as also:  # in the Anthropic API's error shape
        _anthropic(vertex_sidecar[0]).messages.create(
            model="refused", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert also.value.status_code == 503 and "provider 'refused'" in also.value.message
    assert fake_vertex.requests() == []
    answer = client.chat.completions.create(model="fallback", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content
    assert [r["path"].rsplit(":", 1)[1] for r in fake_vertex.requests()] == ["rawPredict"]


def test_no_key_or_token_in_logs_or_config(
    vertex_sidecar: tuple[SidecarProcess, list[str]], fake_vertex: FakeProviderProcess
) -> None:
    sidecar, service_accounts = vertex_sidecar
    _openai(sidecar).chat.completions.create(model="gemini", messages=[{"role": "user", "content": "hi"}])
    tokens = {_bearer(r) for r in fake_vertex.requests()}
    status, config = sidecar.admin("/config")
    dumped, logs = json.dumps(config), sidecar.logs()
    assert status == 200 and "my-project" in dumped
    private_lines = [
        line for sa in service_accounts for line in json.loads(sa)["private_key"].splitlines() if "PRIVATE" not in line
    ]
    for value in [*tokens, *private_lines]:
        assert value not in logs and value not in dumped
    assert "Invalid JWT Signature" in logs  # the refusal is told, without the key


def test_count_tokens_is_answered_by_vertex_for_gemini_and_for_claude(
    vertex_sidecar: tuple[SidecarProcess, list[str]], fake_vertex: FakeProviderProcess
) -> None:
    client = _anthropic(vertex_sidecar[0])
    counted = client.messages.count_tokens(model="gemini", messages=[{"role": "user", "content": "count these words"}])
    assert counted.input_tokens > 0
    [seen] = fake_vertex.requests()
    assert seen["path"].endswith("/publishers/google/models/gemini-2.5-flash:countTokens")
    assert set(seen["json"]) <= {"contents", "systemInstruction", "tools", "generationConfig"}
    assert check_access_token(_bearer(seen)) is None

    messages: Any = [{"role": "user", "content": [{"type": "text", "text": "how many tokens are in this request?"}]}]
    tool: Any = {"name": "lookup", "description": "Looks a word up.", "input_schema": {"type": "object"}}
    claude = client.messages.count_tokens(model="claude", system="Be brief.", messages=messages, tools=[tool])
    seen = fake_vertex.requests()[-1]
    # one URL for every Claude model, the model in Anthropic's count_tokens body
    assert (
        seen["path"] == f"/v1/projects/{PROJECT}/locations/{REGION}/publishers/anthropic/models/count-tokens:rawPredict"
    )
    assert seen["json"] == {
        "model": CLAUDE,
        "messages": messages,
        "system": "Be brief.",
        "tools": [tool],
        "anthropic_version": "vertex-2023-10-16",
    }
    assert check_access_token(_bearer(seen)) is None
    # the count the anthropic SDK's own Vertex client gets from Vertex for the same call
    direct = anthropic.AnthropicVertex(
        region=REGION,
        project_id=PROJECT,
        access_token=_bearer(seen),
        base_url=fake_vertex.base_url + "/v1",
        max_retries=0,
    )
    alone = direct.messages.count_tokens(model=CLAUDE, system="Be brief.", messages=messages, tools=[tool])
    assert claude.input_tokens == alone.input_tokens > 0


def test_claude_on_vertex_gets_the_apps_body_with_thinking_and_cache_control(
    vertex_sidecar: tuple[SidecarProcess, list[str]], fake_vertex: FakeProviderProcess
) -> None:
    client = _anthropic(vertex_sidecar[0])
    message = client.messages.create(
        model="claude", max_tokens=2048, extra_body=FUTURE, extra_headers={"anthropic-beta": BETA}, **FEATURES
    )
    [received] = fake_vertex.requests()
    assert received["path"].endswith(f"/publishers/anthropic/models/{CLAUDE}:rawPredict")
    # every field as the app sent it, but the model (in the URL) and Vertex's own version
    assert received["json"] == {"max_tokens": 2048, **FEATURES, **FUTURE, "anthropic_version": "vertex-2023-10-16"}
    assert received["headers"]["anthropic-beta"] == BETA
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].signature == THINKING_SIGNATURE
    assert message.usage.cache_read_input_tokens == CACHED_TOKENS

    with client.messages.stream(model="claude", max_tokens=2048, **FEATURES) as stream:
        kinds = [event.delta.type for event in stream if event.type == "content_block_delta"]
        final = stream.get_final_message()
    streamed = fake_vertex.requests()[-1]
    assert streamed["path"].endswith(":streamRawPredict")
    assert streamed["json"] == {
        "max_tokens": 2048,
        **FEATURES,
        "stream": True,
        "anthropic_version": "vertex-2023-10-16",
    }
    assert {"thinking_delta", "signature_delta", "citations_delta", "text_delta"} <= set(kinds)
    assert [block.type for block in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == THINKING_TEXT  # type: ignore[union-attr]
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "STOP")
    assert final.usage.cache_read_input_tokens == CACHED_TOKENS
