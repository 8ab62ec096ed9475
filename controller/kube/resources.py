"""Where a resource type lives in the API: core `/api/v1` vs `/apis/<group>/<version>`."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from controller.api import GROUP, PLURALS, VERSION


@dataclass(frozen=True, slots=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, *, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """`namespace=None` on a namespaced type means across all namespaces (list/watch)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [base]
        if self.namespaced and namespace is not None:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name is not None:
            parts.append(quote(name, safe=""))
            if subresource:
                parts.append(subresource)
        elif subresource:
            raise ValueError("a subresource needs an object name")
        if self.namespaced and name is not None and namespace is None:
            raise ValueError(f"{self.plural} are namespaced: give a namespace with the name")
        return "/".join(parts)


SECRETS = ResourceType("", "v1", "secrets", "Secret")
NAMESPACES = ResourceType("", "v1", "namespaces", "Namespace", namespaced=False)
PODS = ResourceType("", "v1", "pods", "Pod")
SERVICE_ACCOUNTS = ResourceType("", "v1", "serviceaccounts", "ServiceAccount")
EVENTS = ResourceType("events.k8s.io", "v1", "events", "Event")
LEASES = ResourceType("coordination.k8s.io", "v1", "leases", "Lease")
TOKEN_REVIEWS = ResourceType("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", namespaced=False)
MUTATING_WEBHOOK_CONFIGURATIONS = ResourceType(
    "admissionregistration.k8s.io",
    "v1",
    "mutatingwebhookconfigurations",
    "MutatingWebhookConfiguration",
    namespaced=False,
)
MODEL_PROVIDERS = ResourceType(GROUP, VERSION, PLURALS["ModelProvider"], "ModelProvider")
MODEL_ROUTES = ResourceType(GROUP, VERSION, PLURALS["ModelRoute"], "ModelRoute")
MODEL_POLICIES = ResourceType(GROUP, VERSION, PLURALS["ModelPolicy"], "ModelPolicy")
CLUSTER_MODEL_POLICIES = ResourceType(
    GROUP, VERSION, PLURALS["ClusterModelPolicy"], "ClusterModelPolicy", namespaced=False
)
