"""Vertex AI: the RS256 assertion a service-account key signs, the metadata server's token, the
URLs and bodies of both publishers, the compiled provider and its masked key."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import aiohttp
import orjson
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from controller.compile import Workload, compile_workload, judge
from proxy.auth.google import (
    AssertionSigner,
    GoogleEnvironment,
    MetadataServerToken,
    ServiceAccountKey,
    ServiceAccountKeyError,
    ServiceAccountToken,
)
from proxy.auth.refreshed import CredentialsError
from proxy.auth.token_sources import TokenSources
from proxy.providers.base import CredentialsUnavailable
from proxy.providers.registry import build_translator
from proxy.providers.vertex import VertexAnthropicTranslator, VertexGeminiTranslator
from proxy.runtime import Runtime
from proxy.snapshot import (
    ConfigProblem,
    EntraSettings,
    Provider,
    Secret,
    Snapshot,
    VertexSettings,
    check_service_account_key,
)
from tests.fakes.entra_fake import issue_access_token as entra_token
from tests.fakes.google_fake import GoogleState, create_app
from tests.fakes.google_fake import issue_access_token as google_token
from tests.fakes.server import serve
from tests.unit.test_compile import provider, resources, route, secret

EMAIL = "modelway@my-project.iam.gserviceaccount.com"
KEY = rsa.generate_private_key(65537, 2048)
PEM = KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


def key_json(token_uri: str = "https://oauth2.googleapis.com/token", **extra: Any) -> str:
    data = {
        "type": "service_account", "project_id": "my-project", "private_key_id": "kid-1", "private_key": PEM,
        "client_email": EMAIL, "token_uri": token_uri, **extra,
    }  # fmt: skip
    return json.dumps(data)


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def vertex(publisher: str = "google", region: str = "europe-west4", **settings: Any) -> Provider:
    base = "https://aiplatform.googleapis.com" if region == "global" else f"https://{region}-aiplatform.googleapis.com"
    return Provider(
        name="ns.vertex", type="vertex", base_url=base,
        vertex=VertexSettings(project="my-project", region=region, publisher=publisher, **settings),  # type: ignore[arg-type]
    )  # fmt: skip


class Fixed:
    def __init__(self, token: str | None) -> None:
        self.value = token

    def token(self) -> str | None:
        return self.value

    def missing(self) -> str:
        return "no GKE metadata server credentials yet (last fetch failed: metadata server answered 404)"


# --- the assertion -------------------------------------------------------------------------


def test_the_assertion_is_an_rs256_jwt_google_accepts() -> None:
    key = ServiceAccountKey.from_json(key_json())
    jwt = AssertionSigner(key).assertion(now=1_700_000_000.7)
    header_b64, claims_b64, signature = jwt.split(".")
    assert json.loads(unb64(header_b64)) == {"alg": "RS256", "typ": "JWT", "kid": "kid-1"}
    assert json.loads(unb64(claims_b64)) == {
        "iss": EMAIL,
        "scope": "https://www.googleapis.com/auth/cloud-platform",
        "aud": "https://oauth2.googleapis.com/token",
        "iat": 1_700_000_000,
        "exp": 1_700_003_600,
    }
    KEY.public_key().verify(  # raises if the signature is not the key's RS256 over header.claims
        unb64(signature), f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("not json", "not JSON"),
        ("[]", "not a JSON object"),
        (json.dumps({"type": "authorized_user", "client_email": EMAIL, "private_key": PEM}), "not service_account"),
        (json.dumps({"type": "service_account", "client_email": EMAIL}), "no client_email or PEM private_key"),
        (key_json(token_uri="file:///etc/passwd"), "token_uri is not an http(s) URL"),
    ],
)
def test_an_unusable_key_is_refused_without_quoting_it(text: str, said: str) -> None:
    with pytest.raises(ConfigProblem, match=re.escape(said)) as refused:
        check_service_account_key(text)
    assert PEM[40:60] not in str(refused.value)
    with pytest.raises(ServiceAccountKeyError, match=re.escape(said)):
        ServiceAccountKey.from_json(text)


def test_a_key_that_is_not_a_pem_is_refused_when_loaded() -> None:
    broken = key_json().replace(PEM[40:80], "A" * 40)
    with pytest.raises(ServiceAccountKeyError, match="not an unencrypted PEM key"):
        AssertionSigner(ServiceAccountKey.from_json(broken))
    assert ServiceAccountKey.from_json(key_json()).__repr__() == f"ServiceAccountKey(client_email={EMAIL!r})"


async def test_tokens_from_the_fake_token_endpoint_and_metadata_server() -> None:
    public = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    state = GoogleState(client_email=EMAIL, public_key_pem=public)
    async with serve(create_app(state)) as serving, aiohttp.ClientSession() as session:
        by_key = ServiceAccountToken(ServiceAccountKey.from_json(key_json(serving.base_url + "/token")))
        assert (await by_key.refresh(session)).token.startswith("ya29.")
        other = rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        wrong = json.loads(key_json(serving.base_url + "/token"))
        wrong["private_key"] = other.decode()
        with pytest.raises(CredentialsError, match=r"\(400 invalid_grant\): Invalid JWT Signature"):
            await ServiceAccountToken(ServiceAccountKey.from_json(json.dumps(wrong))).refresh(session)
        metadata = MetadataServerToken(GoogleEnvironment(metadata_host=serving.base_url.removeprefix("http://")))
        assert (await metadata.refresh(session)).token.startswith("ya29.")
        state.fail_next = 1
        with pytest.raises(CredentialsError, match="the metadata server answered 503"):
            await metadata.refresh(session)
    assert state.calls[-1]["flavor"] == "Google"


def test_the_metadata_host_comes_from_gce_metadata_host() -> None:
    assert GoogleEnvironment.from_environment({}).token_url == (
        "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"
    )
    assert GoogleEnvironment.from_environment({"GCE_METADATA_HOST": "127.0.0.1:8080"}).token_url.startswith(
        "http://127.0.0.1:8080/computeMetadata/"
    )


# --- the requests --------------------------------------------------------------------------


def test_gemini_urls_bodies_and_bearer() -> None:
    source = Fixed("ya29.token")
    translator = VertexGeminiTranslator(vertex(), token_source=source)
    plain = translator.chat_request(
        {"messages": [{"role": "user", "content": "hi"}]}, model="gemini-2.5-flash", stream=False
    )
    assert plain.url == (
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/my-project/locations/europe-west4/"
        "publishers/google/models/gemini-2.5-flash:generateContent"
    )
    assert plain.headers["authorization"] == "Bearer ya29.token"
    assert orjson.loads(plain.body)["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    streamed = translator.chat_request(
        {"messages": [{"role": "user", "content": "hi"}]}, model="gemini-2.5-flash", stream=True
    )
    assert streamed.url.endswith("/gemini-2.5-flash:streamGenerateContent?alt=sse") and streamed.stream
    source.value = None
    with pytest.raises(CredentialsUnavailable) as nothing:  # nothing goes out without the token
        translator.chat_request({"messages": [{"role": "user", "content": "x"}]}, model="m", stream=False)
    assert str(nothing.value) == f"provider 'ns.vertex': {source.missing()}"


def test_anthropic_on_vertex_puts_the_model_in_the_url_and_the_vertex_version_in_the_body() -> None:
    translator = VertexAnthropicTranslator(vertex("anthropic", region="global"), token_source=Fixed("ya29.t"))
    request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    plain = translator.chat_request(request, model="claude-sonnet-4-5@20250929", stream=False)
    assert plain.url == (
        "https://aiplatform.googleapis.com/v1/projects/my-project/locations/global/"
        "publishers/anthropic/models/claude-sonnet-4-5%4020250929:rawPredict"
    )
    body = orjson.loads(plain.body)
    assert body["anthropic_version"] == "vertex-2023-10-16" and "model" not in body and body["max_tokens"] == 20
    streamed = translator.chat_request(request, model="claude-sonnet-4-5@20250929", stream=True)
    assert streamed.url.endswith(":streamRawPredict") and orjson.loads(streamed.body)["stream"] is True
    assert streamed.headers["authorization"] == "Bearer ya29.t"


def test_claude_on_vertex_counts_tokens_at_count_tokens_with_the_model_in_the_body() -> None:
    translator = VertexAnthropicTranslator(vertex("anthropic", region="global"), token_source=Fixed("ya29.t"))
    request = {"messages": [{"role": "user", "content": "hi"}], "tools": [], "temperature": 0.5}
    counting = translator.count_tokens_request(request, model="claude-sonnet-4-5@20250929")
    assert counting.url == (
        "https://aiplatform.googleapis.com/v1/projects/my-project/locations/global/"
        "publishers/anthropic/models/count-tokens:rawPredict"
    )
    assert orjson.loads(counting.body) == {
        "model": "claude-sonnet-4-5@20250929",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "anthropic_version": "vertex-2023-10-16",
    }
    assert counting.headers["authorization"] == "Bearer ya29.t" and not counting.stream
    assert translator.count_tokens_response(b'{"input_tokens": 12}') == 12


def test_the_registry_picks_the_publishers_translator() -> None:
    assert isinstance(build_translator(vertex("anthropic")), VertexAnthropicTranslator)
    assert isinstance(build_translator(vertex()), VertexGeminiTranslator)


async def test_sources_per_key_and_one_for_the_metadata_server() -> None:
    sources = TokenSources(google=GoogleEnvironment(metadata_host="127.0.0.1:9"), retry_seconds=(30.0, 60.0))
    try:
        with_key = vertex(service_account_key=Secret(key_json()))
        first = sources.for_provider(with_key)
        assert isinstance(first, ServiceAccountToken) and sources.for_provider(with_key) is first
        assert isinstance(sources.for_provider(vertex("anthropic")), MetadataServerToken)
        assert sources.for_provider(vertex()) is sources.for_provider(vertex("anthropic"))
    finally:
        await sources.close()


# --- config --------------------------------------------------------------------------------


def compiled(*items: Any) -> Provider:
    view = resources(*items, route("chat", "chat", [{"provider": "vertex", "model": "gemini-2.5-flash"}]))
    (only,) = compile_workload(judge(view), Workload("team-a")).providers
    return only


def test_a_vertex_provider_compiles_with_its_locations_endpoint_and_key() -> None:
    p = compiled(
        provider("vertex", type_="vertex", vertex={"project": "my-project", "region": "us-east5"}),
        secret(serviceAccountKey=key_json()),
    )
    assert p.base_url == "https://us-east5-aiplatform.googleapis.com"
    assert p.vertex is not None and p.vertex.region == "us-east5" and p.vertex.publisher == "google"
    assert p.vertex.service_account_key is not None and p.api_key is None
    secrets = p.secrets()
    assert secrets[0] == key_json() and any(line in PEM for line in secrets[1:])
    masked = str(Snapshot(version="1", providers=(p,), routes=()).masked())
    assert PEM[40:80] not in masked and "<redacted>" in masked


def test_workload_identity_needs_no_secret_and_a_bad_key_is_refused_by_name() -> None:
    p = compiled(provider("vertex", type_="vertex", secret=None, region="global", vertex={"project": "my-project"}))
    assert p.base_url == "https://aiplatform.googleapis.com" and p.vertex is not None
    assert p.vertex.service_account_key is None
    view = resources(
        provider("vertex", type_="vertex", vertex={"project": "my-project", "region": "us-east5"}),
        secret(serviceAccountKey='{"type": "service_account"}'),
        route("chat", "chat", [{"provider": "vertex", "model": "gemini-2.5-flash"}]),
    )
    verdicts = str(judge(view))
    assert "InvalidSecret" in verdicts and "no client_email or PEM private_key" in verdicts


def test_a_vertex_provider_needs_its_project() -> None:
    with pytest.raises(ValueError, match=r"spec\.vertex"):
        provider("vertex", type_="vertex", region="us-east5")


def test_the_runtime_scrubber_redacts_keys_and_issued_tokens() -> None:
    entra_secret = "Fq38Q~fake.entra.client-secret_0123456789"
    azure = Provider(
        name="ns.azure", type="azure-openai", base_url="https://r.openai.azure.com", api_version="2024-10-21",
        entra=EntraSettings(tenant_id="t", client_id="c", client_secret=Secret(entra_secret)),
    )  # fmt: skip
    snapshot = Snapshot(version="1", providers=(vertex(service_account_key=Secret(key_json())), azure), routes=())
    scrub = Runtime.build(snapshot).scrubber
    pem_line = PEM.splitlines()[5]
    tokens = [
        google_token(account=EMAIL, expires=1e10, n=1),
        entra_token(tenant_id="t", client_id="c", expires=1e10, n=1),
    ]
    text = f"provider said: bad key {pem_line} / secret {entra_secret} / token {tokens[0]} / {tokens[1]}"
    scrubbed = scrub(text)
    for value in [pem_line, entra_secret, *tokens]:
        assert value not in scrubbed
    assert scrubbed.startswith("provider said: bad key")
