"""A thin async Kubernetes API client over aiohttp (no kubernetes/kubernetes_asyncio dependency)."""

from controller.kube.client import DEFAULT_AUDIENCE, FIELD_MANAGER, KubeClient
from controller.kube.config import ConfigError, KubeConfig, from_kubeconfig, in_cluster, load_config
from controller.kube.errors import KubeApiError, KubeConnectionError, KubeError, ResourceGone
from controller.kube.resources import (
    CLUSTER_MODEL_POLICIES,
    EVENTS,
    LEASES,
    MODEL_POLICIES,
    MODEL_PROVIDERS,
    MODEL_ROUTES,
    NAMESPACES,
    PODS,
    SECRETS,
    SERVICE_ACCOUNTS,
    TOKEN_REVIEWS,
    ResourceType,
)
from controller.kube.results import ObjectList, TokenReview
from controller.kube.watch import WatchEvent

__all__ = [
    "CLUSTER_MODEL_POLICIES",
    "DEFAULT_AUDIENCE",
    "EVENTS",
    "FIELD_MANAGER",
    "LEASES",
    "MODEL_POLICIES",
    "MODEL_PROVIDERS",
    "MODEL_ROUTES",
    "NAMESPACES",
    "PODS",
    "SECRETS",
    "SERVICE_ACCOUNTS",
    "TOKEN_REVIEWS",
    "ConfigError",
    "KubeApiError",
    "KubeClient",
    "KubeConfig",
    "KubeConnectionError",
    "KubeError",
    "ObjectList",
    "ResourceGone",
    "ResourceType",
    "TokenReview",
    "WatchEvent",
    "from_kubeconfig",
    "in_cluster",
    "load_config",
]
