"""Azure OpenAI with Microsoft Entra ID through the real sidecar: client credentials (a client
secret in the config) and AKS Workload Identity (the pod's federated token file), tokens fetched
at a fake Entra ID and refreshed before they expire while requests flow, none failing (the fake
Azure refuses expired tokens); a refused token request ends in Azure's 401 and the fallback."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes.entra_fake import EntraState, check_access_token, create_app
from tests.fakes.process import FakeProviderProcess
from tests.fakes.threaded import AppThread
from tests.integration.sidecar import SidecarProcess

pytestmark = pytest.mark.timeout(90)

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "0f5e6a2b-8c1d-4e4f-9a7b-1c2d3e4f5a6b"
SECRET = "Fq38Q~fake.entra.client-secret_0123456789"
FEDERATED = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImZha2UifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YXBwIn0.c2lnbmF0dXJl"
LIFETIME = 3.0  # seconds: refreshed at half of it (real tokens live ~an hour, refreshed 5 minutes early)
API_VERSION = "2024-10-21"


@pytest.fixture(scope="module")
def entra() -> Iterator[tuple[AppThread, EntraState]]:
    state = EntraState(
        tenant_id=TENANT, client_id=CLIENT, client_secret=SECRET, federated_token=FEDERATED,
        lifetime_seconds=LIFETIME,
    )  # fmt: skip
    with AppThread(lambda: create_app(state)) as thread:
        yield thread, state


def _azure(base_url: str, name: str, entra: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "type": "azure-openai", "baseUrl": base_url, "apiVersion": API_VERSION, "entra": entra}


def _wait_for_tokens(state: EntraState, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(state.calls) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)


@pytest.fixture(scope="module")
def entra_sidecar(
    entra: tuple[AppThread, EntraState],
    fake_openai_process: FakeProviderProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SidecarProcess]:
    thread, state = entra
    token_file = Path(tmp_path_factory.mktemp("azure")) / "azure-identity-token"
    token_file.write_text(FEDERATED)
    base = fake_openai_process.base_url
    providers = [
        _azure(base, "secret", {"tenantId": TENANT, "clientId": CLIENT, "clientSecret": SECRET}),
        _azure(base, "workload", {}),
        _azure(base, "wrong", {"tenantId": TENANT, "clientId": CLIENT, "clientSecret": "x" * 40}),
        {"name": "openai", "type": "openai", "baseUrl": base + "/v1", "apiKey": "sk-fake-openai-key"},
    ]
    routes = [
        {"name": "s", "model": "secret", "rules": [{"backends": [{"provider": "secret", "model": "gpt-4o"}]}]},
        {"name": "w", "model": "workload", "rules": [{"backends": [{"provider": "workload", "model": "gpt-4o"}]}]},
        {"name": "x", "model": "wrong", "rules": [{"backends": [{"provider": "wrong", "model": "gpt-4o"}]}]},
        {
            "name": "f",
            "model": "fallback",
            "rules": [
                {
                    "backends": [{"provider": "wrong", "model": "gpt-4o"}],
                    "fallbacks": [{"provider": "openai", "model": "gpt-4o"}],
                }
            ],
        },
    ]
    env = {
        "AZURE_AUTHORITY_HOST": thread.base_url + "/",
        "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
        "AZURE_CLIENT_ID": CLIENT,
        "AZURE_TENANT_ID": TENANT,
    }
    with SidecarProcess({"providers": providers, "routes": routes}, env=env) as process:
        _wait_for_tokens(state, 3)
        yield process


def _client(sidecar: SidecarProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=sidecar.base_url + "/v1", api_key="placeholder", max_retries=0, timeout=20)


@pytest.mark.parametrize("model", ["secret", "workload"])
def test_requests_carry_an_entra_access_token(
    entra_sidecar: SidecarProcess, fake_openai: FakeProviderProcess, entra: tuple[AppThread, EntraState], model: str
) -> None:
    client = _client(entra_sidecar)
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    seen = fake_openai.requests()
    assert len(seen) == 2
    for request in seen:
        assert request["path"] == "/openai/deployments/gpt-4o/chat/completions"
        assert "api-key" not in request["headers"]
        bearer = request["headers"]["authorization"].removeprefix("Bearer ")
        assert check_access_token(bearer) is None
    calls = entra[1].calls
    if model == "secret":
        assert any(c.get("client_secret") == SECRET and c["tenant"] == TENANT for c in calls)
    else:
        federated = [c for c in calls if "client_assertion" in c]
        assert federated and federated[0]["client_assertion"] == FEDERATED
        assert federated[0]["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        assert federated[0]["scope"] == "https://cognitiveservices.azure.com/.default"


def test_tokens_are_refreshed_before_expiry_under_load_with_no_failed_request(
    entra_sidecar: SidecarProcess, fake_openai: FakeProviderProcess, entra: tuple[AppThread, EntraState]
) -> None:
    client = _client(entra_sidecar)
    fetches_before = len(entra[1].calls)

    def ask(n: int) -> str:
        model = "secret" if n % 4 < 2 else "workload"
        if n % 2:
            stream = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": f"n {n}"}], stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"n {n}"}])
        return answer.choices[0].message.content or ""

    answers: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        deadline = time.monotonic() + 3 * LIFETIME
        n = 0
        while time.monotonic() < deadline:
            answers += pool.map(ask, range(n, n + 4))  # raises if any request failed
            n += 4
    assert len(answers) == n and all(answers)
    tokens = {r["headers"]["authorization"] for r in fake_openai.requests()}
    assert len(tokens) >= 6  # two identities, three lifetimes: each token replaced at least twice
    assert len(entra[1].calls) - fetches_before >= 4


def test_a_refused_client_secret_is_a_clear_503_then_the_fallback(
    entra_sidecar: SidecarProcess, fake_openai: FakeProviderProcess
) -> None:
    client = _client(entra_sidecar)
    # Entra refused the secret, so no token: nothing is sent to Azure, and the app is told why (the
    # gateway's credentials, not its request)
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="wrong", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 503
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "credentials_unavailable"
    assert "provider 'wrong': no credentials yet from the Microsoft Entra ID" in error["message"]
    assert "Invalid client secret provided" in error["message"] and SECRET not in error["message"]
    assert fake_openai.requests() == []
    answer = client.chat.completions.create(model="fallback", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content
    assert [r["path"] for r in fake_openai.requests()] == ["/v1/chat/completions"]


def test_no_secret_or_token_in_logs_or_config(
    entra_sidecar: SidecarProcess, fake_openai: FakeProviderProcess, entra: tuple[AppThread, EntraState]
) -> None:
    client = _client(entra_sidecar)
    client.chat.completions.create(model="secret", messages=[{"role": "user", "content": "hi"}])
    tokens = {r["headers"]["authorization"].removeprefix("Bearer ") for r in fake_openai.requests()}
    status, config = entra_sidecar.admin("/config")
    dumped = str(config)
    logs = entra_sidecar.logs()
    assert status == 200 and "secret" in dumped
    for value in [SECRET, FEDERATED, *tokens]:
        assert value not in logs and value not in dumped
    assert "Invalid client secret provided" in logs  # the refusal is told, without the secret
