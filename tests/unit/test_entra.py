"""Microsoft Entra ID for Azure OpenAI: the token requests (as Entra documents them), the token
endpoint's answers, the compiled provider, the masked snapshot, the token sources kept across
snapshots, and the translator's header read from its source."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controller.compile import Workload, compile_workload, judge
from proxy.auth.entra import AzureEnvironment, EntraToken, client_secret_form, federated_form, token_url
from proxy.auth.oauth import parse_token_answer
from proxy.auth.refreshed import AccessToken, CredentialsError
from proxy.auth.token_sources import TokenSources
from proxy.providers.azure_openai import AzureOpenAITranslator
from proxy.providers.base import CredentialsUnavailable
from proxy.providers.registry import build_translator
from proxy.snapshot import EntraSettings, Provider, Secret, Snapshot, parse_struct, to_wire
from tests.fakes.entra_fake import EntraState, create_app
from tests.fakes.server import serve
from tests.unit.test_compile import provider, resources, route, secret

TENANT, CLIENT = "72f988bf-86f1-41af-91ab-2d7cd011db47", "0f5e6a2b-8c1d-4e4f-9a7b-1c2d3e4f5a6b"
SECRET = "Fq38Q~fake.entra.client-secret_0123456789"


def azure_provider(**entra: Any) -> Provider:
    return Provider(
        name="azure", type="azure-openai", base_url="https://r.openai.azure.com", api_version="2024-10-21",
        entra=EntraSettings(**entra),
    )  # fmt: skip


# --- the requests and answers ----------------------------------------------------------------


def test_the_token_url_and_forms_are_entras_client_credentials_grant() -> None:
    assert token_url("https://login.microsoftonline.com/", TENANT) == (
        f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
    )
    scope = "https://cognitiveservices.azure.com/.default"
    assert client_secret_form(client_id=CLIENT, client_secret=SECRET, scope=scope) == {
        "grant_type": "client_credentials", "client_id": CLIENT, "client_secret": SECRET, "scope": scope,
    }  # fmt: skip
    assert federated_form(client_id=CLIENT, assertion="eyJ.a.b", scope=scope) == {
        "grant_type": "client_credentials",
        "client_id": CLIENT,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": "eyJ.a.b",
        "scope": scope,
    }


def test_the_pods_workload_identity_comes_from_its_environment() -> None:
    env = AzureEnvironment.from_environment(
        {
            "AZURE_AUTHORITY_HOST": "https://login.microsoftonline.us/",
            "AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token",
            "AZURE_CLIENT_ID": CLIENT,
            "AZURE_TENANT_ID": TENANT,
        }
    )
    assert env.authority_host == "https://login.microsoftonline.us"
    assert env.federated_token_file == Path("/var/run/secrets/azure/tokens/azure-identity-token")
    assert (env.client_id, env.tenant_id) == (CLIENT, TENANT)
    assert AzureEnvironment.from_environment({}).authority_host == "https://login.microsoftonline.com"


def test_a_token_answer_gives_the_token_and_its_expiry() -> None:
    body = b'{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0eXAi.eyJhdWQi.sig"}'
    assert parse_token_answer(200, body, what="Entra ID", now=1000.0) == AccessToken("eyJ0eXAi.eyJhdWQi.sig", 4599.0)
    legacy = b'{"token_type":"Bearer","expires_in":"3599","access_token":"t0k3n"}'
    assert parse_token_answer(200, legacy, what="Entra ID", now=0.0).expires_at == 3599.0


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (
            401,
            b'{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.",'
            b'"error_codes":[7000215]}',
            "Entra ID refused the token request (401 invalid_client): AADSTS7000215: Invalid client secret",
        ),
        (502, b"<html>bad gateway</html>", "answered 502 with a body that is not JSON"),
        (200, b'{"token_type":"Bearer","expires_in":3599}', "no usable access_token"),
        (200, b'{"token_type":"Bearer","expires_in":0,"access_token":"t"}', "no usable expires_in"),
        (200, b'{"token_type":"pop","expires_in":60,"access_token":"t"}', "not Bearer"),
        (200, b'{"token_type":"Bearer","expires_in":60,"access_token":"a b"}', "no usable access_token"),
    ],
)
def test_a_refusal_or_a_bad_answer_is_a_credentials_error(status: int, body: bytes, said: str) -> None:
    with pytest.raises(CredentialsError, match=re.escape(said)):
        parse_token_answer(status, body, what="Entra ID", now=0.0)


def test_a_refusal_that_echoes_a_token_does_not_repeat_it() -> None:
    echoed = b'{"error":"invalid_grant","error_description":"assertion eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln bad"}'
    with pytest.raises(CredentialsError) as refused:
        parse_token_answer(400, echoed, what="Entra ID", now=0.0)
    assert "eyJhbGciOiJSUzI1NiJ9" not in str(refused.value)


async def test_a_token_is_fetched_from_the_fake_entra_with_a_secret_and_with_a_federated_token(tmp_path: Path) -> None:
    state = EntraState(tenant_id=TENANT, client_id=CLIENT, client_secret=SECRET, federated_token="eyJfed.x.y")
    token_file = tmp_path / "token"
    token_file.write_text("eyJfed.x.y\n")
    async with serve(create_app(state)) as serving, aiohttp.ClientSession() as session:
        by_secret = EntraToken(
            authority_host=serving.base_url, tenant_id=TENANT, client_id=CLIENT, client_secret=SECRET
        )
        federated = EntraToken(
            authority_host=serving.base_url, tenant_id=TENANT, client_id=CLIENT, federated_token_file=token_file
        )
        wrong = EntraToken(authority_host=serving.base_url, tenant_id=TENANT, client_id=CLIENT, client_secret="nope")
        assert (await by_secret.refresh(session)).token.startswith("eyJ")
        assert (await federated.refresh(session)).token.startswith("eyJ")
        assert by_secret.token() and federated.token() and by_secret.seconds_until_refresh() > 1000
        with pytest.raises(CredentialsError, match="AADSTS7000215"):
            await wrong.refresh(session)
    assert state.calls[1]["client_assertion"] == "eyJfed.x.y"
    assert "nope" not in repr(wrong) and SECRET not in repr(by_secret)


# --- config: the controller, the snapshot ----------------------------------------------------


def compiled(*items: Any) -> Provider:
    view = resources(*items, route("chat", "chat", [{"provider": "azure", "model": "gpt-4o"}]))
    (only,) = compile_workload(judge(view), Workload("team-a")).providers
    return only


def test_client_credentials_compile_with_the_secret_as_the_client_secret() -> None:
    p = compiled(
        provider(
            "azure", type_="azure-openai", baseURL="https://r.openai.azure.com",
            azure={"apiVersion": "2024-10-21", "entra": {"tenantId": TENANT, "clientId": CLIENT}},
        ),
        secret(clientSecret=SECRET),
    )  # fmt: skip
    assert p.api_key is None and p.entra is not None
    assert p.entra.client_secret is not None and p.entra.client_secret.get_secret_value() == SECRET
    assert (p.entra.tenant_id, p.entra.client_id) == (TENANT, CLIENT)
    assert p.secrets() == [SECRET]


def test_without_a_credentials_ref_entra_is_the_pods_workload_identity() -> None:
    p = compiled(
        provider(
            "azure", type_="azure-openai", secret=None, baseURL="https://r.openai.azure.com",
            azure={"apiVersion": "2024-10-21", "entra": {}},
        )
    )  # fmt: skip
    assert p.entra is not None and p.entra.client_secret is None and p.api_key is None


def test_a_client_secret_without_its_tenant_and_client_is_refused_by_the_api() -> None:
    with pytest.raises(ValueError, match="needs tenantId and clientId"):
        provider(
            "azure", type_="azure-openai", baseURL="https://r.openai.azure.com",
            azure={"apiVersion": "2024-10-21", "entra": {"tenantId": TENANT}},
        )  # fmt: skip


def test_the_client_secret_is_masked_in_the_snapshot_and_kept_on_the_wire() -> None:
    p = azure_provider(tenant_id=TENANT, client_id=CLIENT, client_secret=Secret(SECRET))
    snapshot = Snapshot(version="1", providers=(p,), routes=())
    assert SECRET not in str(snapshot.masked()) and SECRET not in repr(snapshot)
    wire = to_wire(snapshot)
    assert wire["providers"][0]["entra"]["clientSecret"] == SECRET
    assert parse_struct(Snapshot, wire) == snapshot


# --- the sources and the translator ----------------------------------------------------------


class FixedToken:
    def __init__(self, token: str | None) -> None:
        self.value = token

    def token(self) -> str | None:
        return self.value

    def missing(self) -> str:
        return "no Microsoft Entra ID credentials yet (first fetch under way)"


def test_the_translator_sends_the_sources_current_token_as_a_bearer() -> None:
    source = FixedToken(None)
    provider = azure_provider(tenant_id=TENANT, client_id=CLIENT)
    translator = AzureOpenAITranslator(provider, token_source=source)
    with pytest.raises(CredentialsUnavailable) as nothing:  # nothing goes out without the token
        translator.chat_request({"messages": []}, model="gpt-4o", stream=False)
    assert (
        str(nothing.value)
        == f"provider {provider.name!r}: no Microsoft Entra ID credentials yet (first fetch under way)"
    )
    source.value = "eyJnew.token.sig"
    second = translator.chat_request({"messages": []}, model="gpt-4o", stream=True)
    assert second.headers["authorization"] == "Bearer eyJnew.token.sig"
    embeddings = translator.embeddings_request({"input": "x"}, model="emb")
    assert embeddings.headers["authorization"] == "Bearer eyJnew.token.sig"


async def test_sources_are_shared_across_snapshots_and_stopped_when_no_longer_used(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    sources = TokenSources(
        azure=AzureEnvironment(
            authority_host="http://127.0.0.1:9", federated_token_file=token_file, client_id=CLIENT, tenant_id=TENANT
        ),
        retry_seconds=(30.0, 60.0),
    )
    try:
        with_secret = azure_provider(tenant_id=TENANT, client_id=CLIENT, client_secret=Secret(SECRET))
        workload = azure_provider()
        first = sources.for_provider(with_secret)
        assert first is not None and sources.for_provider(with_secret) is first
        assert sources.for_provider(workload) is not None and sources.for_provider(workload) is not first
        rotated = azure_provider(tenant_id=TENANT, client_id=CLIENT, client_secret=Secret(SECRET + "2"))
        assert sources.for_provider(rotated) is not first
        assert isinstance(build_translator(with_secret, tokens=sources), AzureOpenAITranslator)
        tasks = set(sources._tasks.values())
        assert len(tasks) == 3
        sources.retain([workload])
        await asyncio.sleep(0)
        assert len(sources._tasks) == 1 and sum(t.cancelled() for t in tasks) == 2
    finally:
        await sources.close()


def test_workload_identity_without_the_pods_environment_is_a_clear_error_on_each_request() -> None:
    provider = azure_provider()
    source = TokenSources(azure=AzureEnvironment()).for_provider(provider)
    translator = AzureOpenAITranslator(provider, token_source=source)
    with pytest.raises(CredentialsUnavailable, match="AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID and AZURE_TENANT_ID"):
        translator.chat_request({"messages": []}, model="gpt-4o", stream=False)
