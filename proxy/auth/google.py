"""Google OAuth access tokens for Vertex AI: a service-account key, or GKE Workload Identity.

- Service-account key (the JSON a Secret holds: `client_email`, `private_key`, `private_key_id`,
  `token_uri`): a JWT signed RS256 with the key (`iss` the account, `scope` cloud-platform, `aud`
  the token URI, an hour's `exp`) exchanged at `token_uri` with
  `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>` (RFC 7523).
- GKE Workload Identity (or any GCE/GKE node's account): `GET http://<metadata>/computeMetadata/v1/
  instance/service-accounts/default/token` with `Metadata-Flavor: Google`; the host is
  `metadata.google.internal`, or `GCE_METADATA_HOST` as in Google's client libraries.

Both answer `{"access_token": "ya29...", "expires_in": 3599, "token_type": "Bearer"}`.

RS256 needs `cryptography`, imported only when a service-account key is loaded, so a sidecar
serving no Vertex provider with a key never loads it.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import msgspec
import orjson

from proxy.auth.oauth import parse_token_answer, post_token_form
from proxy.auth.refreshed import AccessToken, CredentialsError, RefreshedToken, read_bounded
from proxy.snapshot import ConfigProblem, check_service_account_key

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_METADATA_HOST = "metadata.google.internal"
METADATA_TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
ASSERTION_LIFETIME = 3600  # the most Google accepts


class ServiceAccountKeyError(ValueError):
    """A service-account key that cannot be used (the message quotes no part of it)."""


class ServiceAccountKey(msgspec.Struct, frozen=True):
    client_email: str
    private_key: str
    private_key_id: str | None
    token_uri: str

    def __repr__(self) -> str:
        return f"ServiceAccountKey(client_email={self.client_email!r})"

    @classmethod
    def from_json(cls, text: str) -> ServiceAccountKey:
        try:
            data = check_service_account_key(text)
        except ConfigProblem as exc:
            raise ServiceAccountKeyError(str(exc)) from None
        key_id = data.get("private_key_id")
        return cls(
            client_email=data["client_email"],
            private_key=data["private_key"],
            private_key_id=key_id if isinstance(key_id, str) else None,
            token_uri=data.get("token_uri") or DEFAULT_TOKEN_URI,
        )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assertion_parts(key: ServiceAccountKey, *, now: float, scope: str = CLOUD_PLATFORM_SCOPE) -> tuple[Any, Any]:
    """The JWT's header and claims, before signing."""
    header: dict[str, str] = {"alg": "RS256", "typ": "JWT"}
    if key.private_key_id:
        header["kid"] = key.private_key_id
    issued = int(now)
    claims = {
        "iss": key.client_email,
        "scope": scope,
        "aud": key.token_uri,
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME,
    }
    return header, claims


class AssertionSigner:
    """Signs the JWT assertions of one service-account key (the PEM parsed once)."""

    def __init__(self, key: ServiceAccountKey) -> None:
        from cryptography.hazmat.primitives import serialization  # (lazily: only Vertex with a key needs it)
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = key
        try:
            private = serialization.load_pem_private_key(key.private_key.encode(), password=None)
        except (ValueError, TypeError):
            raise ServiceAccountKeyError(
                "the service-account key's private_key is not an unencrypted PEM key"
            ) from None
        if not isinstance(private, rsa.RSAPrivateKey):
            raise ServiceAccountKeyError("the service-account key's private_key is not an RSA key")
        self._private = private

    def assertion(self, *, now: float, scope: str = CLOUD_PLATFORM_SCOPE) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        header, claims = assertion_parts(self.key, now=now, scope=scope)
        signing_input = f"{_b64url(orjson.dumps(header))}.{_b64url(orjson.dumps(claims))}"
        signature = self._private.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


class ServiceAccountToken(RefreshedToken):
    """Access tokens for a service-account key, refreshed by `run()`."""

    kind = "Google service account"

    def __init__(
        self,
        key: ServiceAccountKey,
        *,
        scope: str = CLOUD_PLATFORM_SCOPE,
        clock: Callable[[], float] = time.time,
        retry_seconds: tuple[float, float] = (1.0, 60.0),
        timeout_seconds: float = 10.0,
    ) -> None:
        # google-auth refreshes a few minutes before expiry; tokens live an hour
        super().__init__(clock=clock, retry_seconds=retry_seconds, refresh_margin_seconds=300.0)
        self._signer = AssertionSigner(key)
        self.scope = scope
        self._timeout = timeout_seconds

    def __repr__(self) -> str:
        return f"ServiceAccountToken({self._signer.key.client_email!r})"

    async def _fetch(self, session: aiohttp.ClientSession) -> AccessToken:
        form = {
            "grant_type": JWT_BEARER_GRANT,
            "assertion": self._signer.assertion(now=self._clock(), scope=self.scope),
        }
        key = self._signer.key
        return await post_token_form(
            session, key.token_uri, form, what="Google OAuth", clock=self._clock, timeout=self._timeout
        )


class GoogleEnvironment(msgspec.Struct, frozen=True):
    metadata_host: str = DEFAULT_METADATA_HOST

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> GoogleEnvironment:
        return cls(metadata_host=env.get("GCE_METADATA_HOST") or DEFAULT_METADATA_HOST)

    @property
    def token_url(self) -> str:
        return f"http://{self.metadata_host}{METADATA_TOKEN_PATH}"


class MetadataServerToken(RefreshedToken):
    """The pod's own account's tokens from the metadata server (GKE Workload Identity), refreshed by `run()`."""

    kind = "GKE metadata server"

    def __init__(
        self,
        environment: GoogleEnvironment,
        *,
        clock: Callable[[], float] = time.time,
        retry_seconds: tuple[float, float] = (1.0, 60.0),
        timeout_seconds: float = 5.0,
    ) -> None:
        super().__init__(clock=clock, retry_seconds=retry_seconds, refresh_margin_seconds=300.0)
        self.url = environment.token_url
        self._timeout = timeout_seconds

    def __repr__(self) -> str:
        return f"MetadataServerToken({self.url!r})"

    async def _fetch(self, session: aiohttp.ClientSession) -> AccessToken:
        sent_at = self._clock()
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with session.get(self.url, headers={"Metadata-Flavor": "Google"}, timeout=timeout) as answer:
            body = await read_bounded(answer, "the metadata server")
            status = answer.status
        if status != 200 and not body.lstrip().startswith(b"{"):
            raise CredentialsError(f"the metadata server answered {status}")
        return parse_token_answer(status, body, what="the metadata server", now=sent_at)
