"""AWS credentials from EKS Pod Identity: the node's agent hands the pod temporary keys.

The pod-identity webhook sets `AWS_CONTAINER_CREDENTIALS_FULL_URI` (the agent, e.g.
`http://169.254.170.23/v1/credentials`) and `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (the
pod's projected token, sent as the `Authorization` header). The agent answers
`{"AccessKeyId", "SecretAccessKey", "Token", "Expiration", "AccountId"}`. The token file is
read at each fetch (kubelet rotates it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import msgspec
import orjson

from proxy.auth.refreshed import CredentialsError, RefreshedCredentials, read_bounded
from proxy.auth.sigv4 import AwsCredentials
from shared.scrub import scrub_shapes


class ContainerCredentialsSettings(msgspec.Struct, frozen=True):
    url: str
    token_file: Path | None
    timeout_seconds: float = 5.0

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> ContainerCredentialsSettings | None:
        url = env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        if not url:
            return None
        token_file = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
        return cls(url=url, token_file=Path(token_file) if token_file else None)


def parse_container_answer(status: int, body: bytes) -> AwsCredentials:
    try:
        data = orjson.loads(body)
    except ValueError:
        raise CredentialsError(f"the credentials agent answered {status} with a body that is not JSON") from None
    if not isinstance(data, dict):
        raise CredentialsError("the credentials agent's answer is not a JSON object")
    if status != 200:
        message = data.get("message") or data.get("Message") or ""
        code = data.get("code") or data.get("Code") or "unknown"
        raise CredentialsError(f"the credentials agent refused ({status} {code}): {scrub_shapes(str(message)[:300])}")
    try:
        expires = datetime.fromisoformat(str(data["Expiration"]))
        return AwsCredentials(
            access_key_id=str(data["AccessKeyId"]),
            secret_access_key=str(data["SecretAccessKey"]),
            session_token=str(data["Token"]),
            expires_at=(expires if expires.tzinfo else expires.replace(tzinfo=UTC)).timestamp(),
        )
    except (KeyError, ValueError):
        raise CredentialsError(
            "the credentials agent's answer lacks AccessKeyId, SecretAccessKey, Token or Expiration"
        ) from None


class ContainerCredentials(RefreshedCredentials):
    kind = "EKS Pod Identity"

    def __init__(
        self,
        settings: ContainerCredentialsSettings,
        *,
        clock: Callable[[], float] = time.time,
        retry_seconds: tuple[float, float] = (1.0, 60.0),
    ) -> None:
        super().__init__(clock=clock, retry_seconds=retry_seconds)
        self.settings = settings

    def __repr__(self) -> str:
        return f"ContainerCredentials(url={self.settings.url!r})"

    async def _fetch(self, session: aiohttp.ClientSession) -> AwsCredentials:
        settings = self.settings
        headers = {"accept": "application/json"}
        if settings.token_file is not None:
            headers["authorization"] = (await asyncio.to_thread(settings.token_file.read_text)).strip()
        timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
        async with session.get(settings.url, headers=headers, timeout=timeout) as answer:
            body = await read_bounded(answer, "the credentials agent")
            status = answer.status
        return parse_container_answer(status, body)
