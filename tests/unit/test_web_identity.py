"""The pod's web identity (IRSA): the token exchanged at a fake STS that answers as AWS documents,
refreshed before expiry, failures retried while the old keys still work, nothing secret logged."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import aiohttp
import pytest

from proxy.auth.web_identity import StsError, WebIdentityCredentials, WebIdentitySettings, parse_sts_answer
from tests.fakes.server import serve
from tests.fakes.sts_fake import StsState, create_app

ROLE = "arn:aws:iam::123456789012:role/modelway-bedrock"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJl"


def state(**changes: object) -> StsState:
    base = StsState(
        role_arn=ROLE, web_identity_token=TOKEN, access_key_id="ASIAFAKESTS000000001", secret_access_key="sts/secret+0"
    )
    for name, value in changes.items():
        setattr(base, name, value)
    return base


def settings(tmp_path: Path, url: str, **changes: object) -> WebIdentitySettings:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    fields: dict[str, object] = {"role_arn": ROLE, "token_file": token_file, "sts_url": url, **changes}
    return WebIdentitySettings(**fields)  # type: ignore[arg-type]


def test_settings_from_the_environment_the_eks_webhook_sets() -> None:
    env = {"AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token",
           "AWS_ROLE_ARN": ROLE, "AWS_REGION": "eu-central-1", "POD_NAME": "app-7d9f"}  # fmt: skip
    found = WebIdentitySettings.from_environment(env)
    assert found is not None
    assert (found.sts_url, found.session_name) == ("https://sts.eu-central-1.amazonaws.com", "app-7d9f")
    assert WebIdentitySettings.from_environment({**env, "AWS_ENDPOINT_URL_STS": "http://sts.local"}).sts_url == (  # type: ignore[union-attr]
        "http://sts.local"
    )
    assert WebIdentitySettings.from_environment({"AWS_ROLE_ARN": ROLE}) is None


async def test_the_exchange(tmp_path: Path) -> None:
    sts = state()
    async with serve(create_app(sts)) as serving, aiohttp.ClientSession() as session:
        identity = WebIdentityCredentials(settings(tmp_path, serving.base_url + "/"))
        assert identity.credentials() is None
        credentials = await identity.refresh(session)
    assert identity.credentials() is credentials
    assert (credentials.access_key_id, credentials.secret_access_key) == ("ASIAFAKESTS000000001", "sts/secret+0")
    assert credentials.session_token and credentials.expires_at is not None
    assert abs(credentials.expires_at - (time.time() + 3600)) < 5
    [call] = sts.calls
    assert (call["RoleArn"], call["WebIdentityToken"], call["DurationSeconds"]) == (ROLE, TOKEN, "3600")
    assert "sts/secret+0" not in repr(identity) + repr(credentials)


async def test_refreshed_before_expiry_and_retried_on_failure(tmp_path: Path) -> None:
    sts = state(lifetime_seconds=3.0)
    async with serve(create_app(sts)) as serving, aiohttp.ClientSession() as session:
        identity = WebIdentityCredentials(settings(tmp_path, serving.base_url + "/"), retry_seconds=(0.05, 0.1))
        task = asyncio.create_task(identity.run(session))
        try:
            await asyncio.sleep(0.3)
            first = identity.credentials()
            sts.fail_next = 2  # the next two exchanges fail: the old keys stay until a retry works
            deadline = time.monotonic() + 8
            while identity.credentials() is first and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            second = identity.credentials()
        finally:
            task.cancel()
    assert first is not None and second is not None and second is not first
    assert first.expires_at is not None and second.expires_at is not None
    # the refresh came at half the (short) lifetime, before the old keys expired
    refreshed_at = sts.calls[-1]["at"]
    assert refreshed_at < first.expires_at
    assert len(sts.calls) == 4 and identity.refreshes == 2


def test_when_to_refresh() -> None:
    now = [1000.0]
    identity = WebIdentityCredentials(
        WebIdentitySettings(role_arn=ROLE, token_file=Path("/nonexistent"), sts_url="http://x"), clock=lambda: now[0]
    )
    assert identity.seconds_until_refresh() == 0  # nothing yet: at once
    answer = (
        b'<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        b"<AssumeRoleWithWebIdentityResult><Credentials><SessionToken>t</SessionToken>"
        b"<SecretAccessKey>s</SecretAccessKey><Expiration>1970-01-01T01:16:40Z</Expiration>"
        b"<AccessKeyId>ASIA</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult>"
        b"</AssumeRoleWithWebIdentityResponse>"
    )
    credentials = parse_sts_answer(200, answer)
    assert credentials.expires_at == 4600.0
    identity._current, identity._fetched_at = credentials, now[0]  # an hour's keys, fetched at 1000
    assert identity.seconds_until_refresh() == 3600 - 600  # ten minutes before they expire
    assert identity.credentials() is credentials
    now[0] = 4600.0  # expired, never renewed: nothing to sign with, and the error says why
    assert identity.credentials() is None
    assert (
        identity.missing()
        == "the credentials from the AWS web identity expired and were not renewed (renewal under way)"
    )


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            400,
            b"<ErrorResponse><Error><Code>InvalidIdentityToken</Code><Message>bad token "
            + TOKEN.encode()
            + b"</Message></Error></ErrorResponse>",
            "InvalidIdentityToken",
        ),
        (200, b"<html>proxy login</html>", "no Credentials"),
        (200, b"not xml", "not XML"),
    ],
)
def test_sts_refusals_name_the_code_and_no_token(status: int, body: bytes, message: str) -> None:
    with pytest.raises(StsError, match=message) as caught:
        parse_sts_answer(status, body)
    assert TOKEN not in str(caught.value)


async def test_a_refused_exchange_is_logged_without_the_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sts = state(web_identity_token="another-token")
    caplog.set_level(logging.WARNING, "modelway.auth")
    async with serve(create_app(sts)) as serving, aiohttp.ClientSession() as session:
        identity = WebIdentityCredentials(settings(tmp_path, serving.base_url + "/"), retry_seconds=(10, 10))
        task = asyncio.create_task(identity.run(session))
        await asyncio.sleep(0.3)
        task.cancel()
    assert identity.credentials() is None
    assert "InvalidIdentityToken" in caplog.text and TOKEN not in caplog.text
    assert identity.missing().startswith(
        "no credentials yet from the AWS web identity (last fetch failed: "
        "STS refused AssumeRoleWithWebIdentity (400 InvalidIdentityToken)"
    )
    assert TOKEN not in identity.missing()


# --- EKS Pod Identity: the same holder, fetched from the node's agent ---------------------------


def test_the_sdks_order_web_identity_then_pod_identity() -> None:
    from proxy.auth.eks_pod_identity import ContainerCredentials
    from proxy.auth.pod_identity import pod_identity

    irsa = {"AWS_WEB_IDENTITY_TOKEN_FILE": "/t", "AWS_ROLE_ARN": ROLE}
    agent = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials",
             "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "/var/run/secrets/pods.eks.amazonaws.com/token"}  # fmt: skip
    assert isinstance(pod_identity({**irsa, **agent}), WebIdentityCredentials)
    assert isinstance(pod_identity(agent), ContainerCredentials)
    assert pod_identity({}) is None


async def test_pod_identity_fetches_from_the_agent_with_the_pods_token(tmp_path: Path) -> None:
    from proxy.auth.eks_pod_identity import ContainerCredentials, ContainerCredentialsSettings

    sts = state(lifetime_seconds=3.0)
    token_file = tmp_path / "eks-pod-identity-token"
    token_file.write_text(TOKEN)
    async with serve(create_app(sts)) as serving, aiohttp.ClientSession() as session:
        settings = ContainerCredentialsSettings(url=serving.base_url + "/v1/credentials", token_file=token_file)
        identity = ContainerCredentials(settings, retry_seconds=(0.05, 0.1))
        task = asyncio.create_task(identity.run(session))
        try:
            deadline = time.monotonic() + 5
            while identity.refreshes < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
        first = sts.calls[0]
        token_file.write_text("not-the-token")
        with pytest.raises(Exception, match="invalid token") as refused:
            await identity.refresh(session)
    assert identity.refreshes == 2  # refreshed once before the 3 s keys expired
    credentials = identity.credentials()
    assert credentials is not None and credentials.access_key_id == "ASIAFAKESTS000000001"
    assert credentials.session_token and credentials.expires_at is not None
    assert first["Authorization"] == TOKEN and TOKEN not in str(refused.value)
