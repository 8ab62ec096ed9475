"""The pod's own AWS identity, as the AWS SDKs find it: IRSA web identity first (AWS_ROLE_ARN and
AWS_WEB_IDENTITY_TOKEN_FILE), then EKS Pod Identity (AWS_CONTAINER_CREDENTIALS_FULL_URI); built
once by the sidecar's `__main__`, read by every snapshot's Bedrock translators, refreshed by
`keep_refreshed` in the background."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from proxy.auth.refreshed import RefreshedCredentials

# The variables either source needs; a pod with none of them imports neither client.
_IDENTITY_VARIABLES = ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


def pod_identity(env: Mapping[str, str]) -> RefreshedCredentials | None:
    if not any(env.get(name) for name in _IDENTITY_VARIABLES):
        return None
    from proxy.auth.eks_pod_identity import ContainerCredentials, ContainerCredentialsSettings
    from proxy.auth.web_identity import WebIdentityCredentials, WebIdentitySettings

    web_identity = WebIdentitySettings.from_environment(env)
    if web_identity is not None:
        return WebIdentityCredentials(web_identity)
    container = ContainerCredentialsSettings.from_environment(env)
    return ContainerCredentials(container) if container is not None else None


async def keep_refreshed(identity: RefreshedCredentials) -> None:
    """The background task of a sidecar with an AWS identity (HTTPS_PROXY and friends honoured; the
    Pod Identity agent's link-local address is in NO_PROXY where a proxy is set, as AWS documents)."""
    async with aiohttp.ClientSession(trust_env=True) as session:
        await identity.run(session)
