"""Providers as the sidecar calls them: endpoint, credentials, cloud settings, prices, quotas."""

from __future__ import annotations

import json
import re

import msgspec

from proxy.snapshot.base import (
    NAME,
    BedrockApi,
    Frozen,
    Hosting,
    Secret,
    VertexPublisher,
    check_count,
    check_field,
    check_length,
    check_pattern,
    check_range,
    hold_secrets,
)
from proxy.snapshot.checks import check_base_url, check_ca_bundle, check_service_account_key
from shared.provider_types import ProviderType

_AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+-[0-9]+$")
_GCP_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_GCP_REGION = re.compile(r"^[a-z]+(-[a-z0-9]+)*$")


class ModelPricing(Frozen, frozen=True, kw_only=True):
    """USD per million tokens, used for the cost attribute on spans."""

    input_per_million: float
    output_per_million: float
    # Input tokens read from the provider's prompt cache; None: they cost the input price.
    cached_input_per_million: float | None = None
    # Input tokens written to the provider's prompt cache; None: they cost the input price.
    cache_write_per_million: float | None = None

    def __post_init__(self) -> None:
        check_range("inputPerMillion", self.input_per_million, ge=0)
        check_range("outputPerMillion", self.output_per_million, ge=0)
        check_range("cachedInputPerMillion", self.cached_input_per_million, ge=0)
        check_range("cacheWritePerMillion", self.cache_write_per_million, ge=0)


class ModelWindow(Frozen, frozen=True, kw_only=True):
    """What one model can take: its context window (input and output together) and its output cap.

    Routing skips a backend whose window a request cannot fit (`proxy.routing.window`)."""

    context_window: int | None = None
    max_output_tokens: int | None = None

    def __post_init__(self) -> None:
        check_range("contextWindow", self.context_window, ge=1)
        check_range("maxOutputTokens", self.max_output_tokens, ge=1)


class Capacity(Frozen, frozen=True, kw_only=True):
    """A provider account's own quota for the models matching `model` (a glob), shared by every sidecar."""

    key: str  # "ModelProvider/<namespace>/<name>/capacity/<model glob>"
    model: str
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    def __post_init__(self) -> None:
        check_length("key", self.key)
        check_length("model", self.model)
        check_count("requestsPerMinute", self.requests_per_minute)
        check_count("tokensPerMinute", self.tokens_per_minute)
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError(f"capacity {self.key!r}: needs requestsPerMinute or tokensPerMinute")


class AwsKeys(Frozen, frozen=True, kw_only=True):
    """An AWS access key (and the session token of temporary ones), from the provider's Secret."""

    access_key_id: Secret
    secret_access_key: Secret
    session_token: Secret | None = None

    def __post_init__(self) -> None:
        hold_secrets(self, "access_key_id", "secret_access_key", "session_token")


class BedrockSettings(Frozen, frozen=True, kw_only=True):
    # The AWS region requests are signed for (and, without a baseURL, sent to).
    region: str
    # None: a Bedrock API key (the provider's apiKey), or the pod's own AWS identity.
    credentials: AwsKeys | None = None
    # converse: every model, through Converse; anthropic-messages: Anthropic models through
    # InvokeModel with Anthropic's own body.
    api: BedrockApi = "converse"

    def __post_init__(self) -> None:
        check_length("region", self.region, high=32)
        check_pattern("region", self.region, _AWS_REGION)


class VertexSettings(Frozen, frozen=True, kw_only=True):
    """Google Vertex AI: the project and location in every URL, the publisher whose models (and body)
    the provider serves, and a service-account key (JSON) from the provider's Secret or, without
    one, the pod's GKE Workload Identity (the metadata server's tokens)."""

    project: str
    region: str
    publisher: VertexPublisher = "google"
    service_account_key: Secret | None = None

    def __post_init__(self) -> None:
        hold_secrets(self, "service_account_key")
        check_pattern("project", self.project, _GCP_PROJECT)
        check_length("region", self.region, high=32)
        check_pattern("region", self.region, _GCP_REGION)
        if self.service_account_key is not None:
            check_field("serviceAccountKey", check_service_account_key, self.service_account_key.get_secret_value())


class EntraSettings(Frozen, frozen=True, kw_only=True):
    """Azure OpenAI with Microsoft Entra ID access tokens instead of an API key: client credentials
    (the client secret from the provider's Secret), or without a secret the pod's AKS Workload
    Identity (its federated token; tenant and client default to the pod's AZURE_TENANT_ID and
    AZURE_CLIENT_ID)."""

    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: Secret | None = None
    scope: str = "https://cognitiveservices.azure.com/.default"

    def __post_init__(self) -> None:
        hold_secrets(self, "client_secret")
        check_length("tenantId", self.tenant_id, high=128)
        check_length("clientId", self.client_id, high=128)
        check_length("scope", self.scope, high=512)
        if self.client_secret is not None and (self.tenant_id is None or self.client_id is None):
            raise ValueError("Entra ID client credentials need tenantId and clientId")


class Provider(Frozen, frozen=True, kw_only=True):
    name: str
    type: ProviderType
    base_url: str
    api_key: Secret | None = None
    # Azure OpenAI only: the `api-version` query parameter.
    api_version: str | None = None
    # Bedrock only: its signing region and AWS keys.
    bedrock: BedrockSettings | None = None
    # Azure OpenAI only: Microsoft Entra ID tokens instead of apiKey.
    entra: EntraSettings | None = None
    # Vertex only: project, location, publisher, credentials.
    vertex: VertexSettings | None = None
    region: str | None = None
    jurisdiction: str | None = None
    hosting: Hosting = "saas"
    pricing: dict[str, ModelPricing] = msgspec.field(default_factory=dict)
    capacity: tuple[Capacity, ...] = ()
    # Per model name: its context window and output cap, for the models that declare one.
    models: dict[str, ModelWindow] = msgspec.field(default_factory=dict)
    # PEM CA certificates this provider's TLS certificate chains to, trusted instead of the system's.
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        hold_secrets(self, "api_key")
        check_length("name", self.name, high=253)
        check_pattern("name", self.name, NAME)
        check_field("baseUrl", check_base_url, self.base_url)
        check_field("caBundle", check_ca_bundle, self.ca_bundle)
        if self.type == "azure-openai" and not self.api_version:
            raise ValueError(f"provider {self.name!r}: type azure-openai needs apiVersion")
        if (self.type == "bedrock") != (self.bedrock is not None):
            raise ValueError(f"provider {self.name!r}: bedrock settings are for, and needed by, type bedrock only")
        if (self.type == "vertex") != (self.vertex is not None):
            raise ValueError(f"provider {self.name!r}: vertex settings are for, and needed by, type vertex only")
        if self.entra is not None and self.type != "azure-openai":
            raise ValueError(f"provider {self.name!r}: Entra ID settings are for type azure-openai only")

    def secrets(self) -> list[str]:
        """Every credential value this provider holds, for the scrubber."""
        values = [self.api_key] if self.api_key is not None else []
        keys = self.bedrock.credentials if self.bedrock is not None else None
        if keys is not None:
            values += [keys.access_key_id, keys.secret_access_key]
            values += [keys.session_token] if keys.session_token is not None else []
        if self.entra is not None and self.entra.client_secret is not None:
            values.append(self.entra.client_secret)
        found = [v.get_secret_value() for v in values]
        if self.vertex is not None and self.vertex.service_account_key is not None:
            key = self.vertex.service_account_key.get_secret_value()
            found.append(key)
            try:  # the private key as a parser or a provider would quote it: with real line breaks
                private = json.loads(key).get("private_key")
            except (ValueError, AttributeError):
                private = None
            if isinstance(private, str):
                found += [line for line in private.splitlines() if len(line) >= 16 and "PRIVATE KEY" not in line]
        return found
