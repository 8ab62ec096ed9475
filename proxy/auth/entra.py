"""Microsoft Entra ID access tokens for Azure OpenAI: client credentials, or AKS Workload Identity.

Both are the OAuth 2.0 client credentials grant at
`POST {authority}/{tenant}/oauth2/v2.0/token` (form encoded) with
`scope=https://cognitiveservices.azure.com/.default`, and differ in how the client proves itself:

- a client secret (from the provider's Secret): `client_secret=<secret>`;
- AKS Workload Identity: the pod's federated service-account token (the file named by
  `AZURE_FEDERATED_TOKEN_FILE`, re-read at each fetch since kubelet rotates it) as
  `client_assertion`, with
  `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`; the webhook
  also sets `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` and `AZURE_AUTHORITY_HOST`.

The answer is `{"token_type": "Bearer", "expires_in": 3599, "access_token": "..."}`, or
`{"error": "invalid_client", "error_description": "AADSTS7000215: ...", ...}` with a 400/401.
The access token is sent to Azure OpenAI as `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote

import aiohttp
import msgspec

from proxy.auth.oauth import post_token_form
from proxy.auth.refreshed import AccessToken, CredentialsError, RefreshedToken

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class AzureEnvironment(msgspec.Struct, frozen=True):
    """What the pod's environment says about its Azure identity (read once by `__main__`)."""

    authority_host: str = DEFAULT_AUTHORITY
    federated_token_file: Path | None = None
    client_id: str | None = None
    tenant_id: str | None = None

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> AzureEnvironment:
        token_file = env.get("AZURE_FEDERATED_TOKEN_FILE")
        return cls(
            authority_host=(env.get("AZURE_AUTHORITY_HOST") or DEFAULT_AUTHORITY).rstrip("/"),
            federated_token_file=Path(token_file) if token_file else None,
            client_id=env.get("AZURE_CLIENT_ID") or None,
            tenant_id=env.get("AZURE_TENANT_ID") or None,
        )


def token_url(authority_host: str, tenant_id: str) -> str:
    return f"{authority_host.rstrip('/')}/{quote(tenant_id, safe='')}/oauth2/v2.0/token"


def client_secret_form(*, client_id: str, client_secret: str, scope: str) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret, "scope": scope}


def federated_form(*, client_id: str, assertion: str, scope: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_assertion_type": JWT_BEARER_ASSERTION,
        "client_assertion": assertion,
        "scope": scope,
    }


class EntraToken(RefreshedToken):
    """An Entra ID access token for one (tenant, client, credential), refreshed by `run()`."""

    kind = "Microsoft Entra ID"

    def __init__(
        self,
        *,
        authority_host: str,
        tenant_id: str,
        client_id: str,
        scope: str = COGNITIVE_SERVICES_SCOPE,
        client_secret: str | None = None,
        federated_token_file: Path | None = None,
        clock: Callable[[], float] = time.time,
        retry_seconds: tuple[float, float] = (1.0, 60.0),
        timeout_seconds: float = 10.0,
    ) -> None:
        # Entra tokens live 60-90 minutes; MSAL refreshes 5 minutes before expiry (half the life if shorter).
        super().__init__(clock=clock, retry_seconds=retry_seconds, refresh_margin_seconds=300.0)
        if (client_secret is None) == (federated_token_file is None):
            raise ValueError("an Entra token needs a client secret or a federated token file, not both")
        self.url = token_url(authority_host, tenant_id)
        self.client_id = client_id
        self.scope = scope
        self._client_secret = client_secret
        self._token_file = federated_token_file
        self._timeout = timeout_seconds

    def __repr__(self) -> str:
        how = "client secret" if self._client_secret is not None else "workload identity"
        return f"EntraToken(url={self.url!r}, client_id={self.client_id!r}, {how})"

    async def _fetch(self, session: aiohttp.ClientSession) -> AccessToken:
        if self._client_secret is not None:
            form = client_secret_form(client_id=self.client_id, client_secret=self._client_secret, scope=self.scope)
        else:
            assert self._token_file is not None
            try:
                assertion = (await asyncio.to_thread(self._token_file.read_text)).strip()
            except OSError as exc:
                raise CredentialsError(f"the federated token file cannot be read ({type(exc).__name__})") from None
            form = federated_form(client_id=self.client_id, assertion=assertion, scope=self.scope)
        return await post_token_form(session, self.url, form, what="Entra ID", clock=self._clock, timeout=self._timeout)
