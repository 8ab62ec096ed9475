"""A Bedrock provider without keys, served with the pod's web identity (IRSA): the real sidecar
exchanges its projected token at a fake STS and refreshes the temporary keys before they expire,
with requests flowing the whole time and none failing (the fake Bedrock refuses expired keys)."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes.process import FakeProviderProcess
from tests.fakes.server import DEFAULT_KEYS
from tests.fakes.sts_fake import StsState, StsThread
from tests.integration.sidecar import SidecarProcess

pytestmark = pytest.mark.timeout(90)

MODEL = "amazon.nova-lite-v1:0"
ROLE = "arn:aws:iam::123456789012:role/modelway-bedrock"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6dGVhbS1hOmFwcCJ9.c2ln"
KEY_ID, _, SECRET = DEFAULT_KEYS["bedrock"].partition(":")
LIFETIME = 3.0  # seconds: the sidecar refreshes at half of it (real keys live an hour, refreshed 10 minutes early)


@pytest.fixture(scope="module")
def sts() -> Iterator[StsThread]:
    state = StsState(
        role_arn=ROLE, web_identity_token=TOKEN, access_key_id=KEY_ID, secret_access_key=SECRET,
        lifetime_seconds=LIFETIME,
    )  # fmt: skip
    with StsThread(state) as thread:
        yield thread


def _irsa_setup(
    sts: StsThread, bedrock: FakeProviderProcess, token_file: Path
) -> tuple[dict[str, Any], dict[str, str]]:
    """A snapshot with one Bedrock provider and no keys, and the environment IRSA gives a pod."""
    provider = {
        "name": "bedrock",
        "type": "bedrock",
        "baseUrl": bedrock.base_url,
        "bedrock": {"region": "eu-central-1"},
    }
    route = {"name": "nova", "model": "nova", "rules": [{"backends": [{"provider": "bedrock", "model": MODEL}]}]}
    env = {
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "AWS_ROLE_ARN": ROLE,
        "AWS_REGION": "eu-central-1",
        "AWS_ENDPOINT_URL_STS": sts.base_url + "/",
    }
    return {"providers": [provider], "routes": [route]}, env


@pytest.fixture(scope="module")
def irsa_sidecar(
    sts: StsThread, fake_bedrock_process: FakeProviderProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SidecarProcess]:
    token_file = Path(tmp_path_factory.mktemp("irsa")) / "token"
    token_file.write_text(TOKEN)
    snapshot, env = _irsa_setup(sts, fake_bedrock_process, token_file)
    with SidecarProcess(snapshot, env=env) as process:
        deadline = time.monotonic() + 10
        while not sts.state.calls and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        yield process


def test_requests_are_signed_with_the_exchanged_keys(
    irsa_sidecar: SidecarProcess, fake_bedrock: FakeProviderProcess, sts: StsThread
) -> None:
    client = irsa_sidecar.openai_client()
    answer = client.chat.completions.create(model="nova", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "echo: hi"
    [seen] = fake_bedrock.requests()
    assert seen["headers"]["x-amz-security-token"].startswith("FakeSessionToken-")
    assert sts.state.calls[0]["WebIdentityToken"] == TOKEN and sts.state.calls[0]["RoleArn"] == ROLE


def test_keys_are_refreshed_before_expiry_under_load_with_no_failed_request(
    irsa_sidecar: SidecarProcess, fake_bedrock: FakeProviderProcess, sts: StsThread
) -> None:
    client = irsa_sidecar.openai_client()
    exchanges_before = len(sts.state.calls)

    def ask(n: int) -> str:
        if n % 2:
            stream = client.chat.completions.create(
                model="nova", messages=[{"role": "user", "content": f"n {n}"}], stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        answer = client.chat.completions.create(model="nova", messages=[{"role": "user", "content": f"n {n}"}])
        return answer.choices[0].message.content or ""

    answers: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        deadline = time.monotonic() + 3 * LIFETIME
        n = 0
        while time.monotonic() < deadline:
            answers += pool.map(ask, range(n, n + 4))  # raises if any request failed
            n += 4
    assert answers == [f"echo: n {i}" for i in range(n)]
    tokens = {r["headers"]["x-amz-security-token"] for r in fake_bedrock.requests()}
    assert len(tokens) >= 3  # three lifetimes went by: the keys were replaced at least twice
    assert len(sts.state.calls) - exchanges_before >= 2
    logs = irsa_sidecar.logs()
    assert TOKEN not in logs and SECRET not in logs and "FakeSessionToken" not in logs


def test_a_refused_web_identity_is_a_clear_503_and_nothing_is_sent(
    sts: StsThread, fake_bedrock: FakeProviderProcess, tmp_path: Path
) -> None:
    wrong = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzb21lb25lLWVsc2UifQ.d3Jvbmc"
    token_file = tmp_path / "token"
    token_file.write_text(wrong)
    snapshot, env = _irsa_setup(sts, fake_bedrock, token_file)
    calls_before = len(sts.state.calls)
    with SidecarProcess(snapshot, env=env) as sidecar:
        deadline = time.monotonic() + 10
        while len(sts.state.calls) == calls_before and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        client = sidecar.openai_client()
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="nova", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 503  # the gateway's credentials, not the app's request
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "credentials_unavailable"
    assert "provider 'bedrock': no credentials yet from the AWS web identity" in error["message"]
    assert "STS refused AssumeRoleWithWebIdentity (400 InvalidIdentityToken)" in error["message"]
    assert wrong not in error["message"]
    assert fake_bedrock.requests() == []  # nothing went out unsigned
