"""AWS credentials from the pod's web identity (IRSA): the projected service-account token exchanged
at STS (`AssumeRoleWithWebIdentity`) for temporary keys, refreshed before they expire.

The EKS pod-identity webhook sets `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN` (and usually
`AWS_REGION`, so the regional STS endpoint is used); `AWS_ENDPOINT_URL_STS` overrides the endpoint
as in the AWS SDKs. Requests only read `credentials()`, the holder; `run()` is the background task
that fills it and refreshes it when a margin before expiry is left (or half the lifetime, for short
ones), retrying with backoff on failure while the old keys still work. The token file is read on
every exchange (kubelet rotates it). The token and the keys are in no log line or error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import msgspec

from proxy.auth.refreshed import CredentialsError, RefreshedCredentials, read_bounded
from proxy.auth.sigv4 import AwsCredentials
from shared.scrub import scrub_shapes

_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"


class StsError(CredentialsError):
    """STS refused the exchange or answered something unreadable (the message names no secret)."""


class WebIdentitySettings(msgspec.Struct, frozen=True):
    role_arn: str
    token_file: Path
    sts_url: str
    session_name: str = "modelway-sidecar"
    duration_seconds: int = 3600
    refresh_margin_seconds: float = 600.0  # the AWS SDKs refresh 10-15 minutes before expiry
    timeout_seconds: float = 10.0

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> WebIdentitySettings | None:
        """The pod's IRSA settings, or None when it has none."""
        token_file, role_arn = env.get("AWS_WEB_IDENTITY_TOKEN_FILE"), env.get("AWS_ROLE_ARN")
        if not token_file or not role_arn:
            return None
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        default = f"https://sts.{region}.amazonaws.com" if region else "https://sts.amazonaws.com"
        name = env.get("AWS_ROLE_SESSION_NAME") or env.get("POD_NAME") or "modelway-sidecar"
        return cls(
            role_arn=role_arn,
            token_file=Path(token_file),
            sts_url=env.get("AWS_ENDPOINT_URL_STS") or default,
            session_name=name[:64],
        )


def parse_sts_answer(status: int, body: bytes) -> AwsCredentials:
    """The credentials of an AssumeRoleWithWebIdentity answer (XML), or StsError with STS's code and message."""
    import xml.etree.ElementTree as ElementTree  # only a pod with an AWS web identity parses XML

    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise StsError(f"STS answered {status} with a body that is not XML") from None
    if status != 200:
        code = root.findtext(f".//{_NS}Code") or root.findtext(".//Code") or "unknown"
        message = root.findtext(f".//{_NS}Message") or root.findtext(".//Message") or ""
        raise StsError(f"STS refused AssumeRoleWithWebIdentity ({status} {code}): {scrub_shapes(message[:300])}")
    found = root.find(f".//{_NS}Credentials")
    if found is None:
        raise StsError("STS answer has no Credentials")
    fields = {child.tag.removeprefix(_NS): (child.text or "") for child in found}
    try:
        expires = datetime.fromisoformat(fields["Expiration"])
        return AwsCredentials(
            access_key_id=fields["AccessKeyId"],
            secret_access_key=fields["SecretAccessKey"],
            session_token=fields["SessionToken"],
            expires_at=(expires if expires.tzinfo else expires.replace(tzinfo=UTC)).timestamp(),
        )
    except (KeyError, ValueError):
        raise StsError("STS answer lacks AccessKeyId, SecretAccessKey, SessionToken or a readable Expiration") from None


class WebIdentityCredentials(RefreshedCredentials):
    """An `AwsCredentialSource` refreshed by `run()`: AssumeRoleWithWebIdentity with the pod's token."""

    kind = "AWS web identity"

    def __init__(
        self,
        settings: WebIdentitySettings,
        *,
        clock: Callable[[], float] = time.time,
        retry_seconds: tuple[float, float] = (1.0, 60.0),
    ) -> None:
        super().__init__(
            clock=clock, retry_seconds=retry_seconds, refresh_margin_seconds=settings.refresh_margin_seconds
        )
        self.settings = settings

    def __repr__(self) -> str:
        return f"WebIdentityCredentials(role_arn={self.settings.role_arn!r})"

    async def _fetch(self, session: aiohttp.ClientSession) -> AwsCredentials:
        settings = self.settings
        token = (await asyncio.to_thread(settings.token_file.read_text)).strip()
        form = {
            "Action": "AssumeRoleWithWebIdentity",
            "Version": "2011-06-15",
            "RoleArn": settings.role_arn,
            "RoleSessionName": settings.session_name,
            "WebIdentityToken": token,
            "DurationSeconds": str(settings.duration_seconds),
        }
        timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
        async with session.post(settings.sts_url, data=form, timeout=timeout) as answer:
            body = await read_bounded(answer, "STS")
            status = answer.status
        return parse_sts_answer(status, body)
