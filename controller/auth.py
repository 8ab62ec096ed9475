"""Who is on the other end of a sidecar stream.

In a cluster: the sidecar's projected ServiceAccount token (audience
`modelway`), checked with a TokenReview, names a pod; its labels come from the
API, never from the sidecar's say-so. In `modelway dev`: a random token made at
start, shared through a file, standing for one configured workload.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from controller.policy import DATA_CLASS_ANNOTATION
from controller.workload import Workload


@dataclass(frozen=True, slots=True)
class Identity:
    namespace: str
    service_account: str
    pod_name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    data_class: str | None = None  # the pod's modelway.io/data-class annotation

    @property
    def workload(self) -> Workload:
        return Workload(
            namespace=self.namespace,
            service_account=self.service_account,
            labels=dict(self.labels),
            data_class=self.data_class,
        )

    def __str__(self) -> str:
        return f"{self.namespace}/{self.pod_name or '?'} (sa {self.service_account})"


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Identity | None:
        """The identity a token proves, or None (no token, no config)."""
        ...


class StaticAuthenticator:
    """For `modelway dev`: one shared secret token, one workload."""

    def __init__(self, *, token: str, identity: Identity) -> None:
        self._token = token
        self._identity = identity

    async def authenticate(self, token: str) -> Identity | None:
        return self._identity if token and hmac.compare_digest(token, self._token) else None


SA_PREFIX = "system:serviceaccount:"


class TokenReviewAuthenticator:
    """Kubernetes: TokenReview for the audience, then the pod it was minted for.

    `review(token)` returns the TokenReview status (dict) and `get_pod(ns, name)`
    the Pod object; both are thin calls on the Kubernetes client.
    """

    def __init__(
        self,
        *,
        review: Callable[[str], Awaitable[Mapping[str, Any]]],
        get_pod: Callable[[str, str], Awaitable[Mapping[str, Any] | None]],
    ) -> None:
        self._review = review
        self._get_pod = get_pod

    async def authenticate(self, token: str) -> Identity | None:
        if not token:
            return None
        status = await self._review(token)
        if not status.get("authenticated"):
            return None
        user = status.get("user") or {}
        username = str(user.get("username", ""))
        if not username.startswith(SA_PREFIX):
            return None
        namespace, _, service_account = username[len(SA_PREFIX) :].partition(":")
        extra = user.get("extra") or {}
        pod_names = extra.get("authentication.kubernetes.io/pod-name") or []
        pod_uids = extra.get("authentication.kubernetes.io/pod-uid") or []
        if not pod_names:
            return None  # a token not bound to a pod could be anyone's: refuse
        pod = await self._get_pod(namespace, pod_names[0])
        if pod is None or (pod_uids and pod.get("metadata", {}).get("uid") != pod_uids[0]):
            return None  # the pod is gone or replaced: the token outlived it
        metadata = pod.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        return Identity(
            namespace=namespace,
            service_account=service_account,
            pod_name=pod_names[0],
            labels=dict(metadata.get("labels") or {}),
            data_class=annotations.get(DATA_CLASS_ANNOTATION),
        )
