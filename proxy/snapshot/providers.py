"""Providers as the sidecar calls them: endpoint, credentials, cloud settings, prices, quotas."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator

from proxy.snapshot.base import _NAME, BedrockApi, Hosting, VertexPublisher, _Frozen
from proxy.snapshot.checks import check_base_url, check_service_account_key
from proxy.snapshot.policies import _COUNT
from shared.provider_types import ProviderType


class ModelPricing(_Frozen):
    """USD per million tokens, used for the cost attribute on spans."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)
    # Input tokens read from the provider's prompt cache; None: they cost the input price.
    cached_input_per_million: float | None = Field(default=None, ge=0)
    # Input tokens written to the provider's prompt cache; None: they cost the input price.
    cache_write_per_million: float | None = Field(default=None, ge=0)


class Capacity(_Frozen):
    """A provider account's own quota for the models matching `model` (a glob), shared by every sidecar."""

    key: Annotated[str, Field(min_length=1)]  # "ModelProvider/<namespace>/<name>/capacity/<model glob>"
    model: Annotated[str, Field(min_length=1)]
    requests_per_minute: _COUNT | None = None
    tokens_per_minute: _COUNT | None = None

    @model_validator(mode="after")
    def _says_something(self) -> Capacity:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError(f"capacity {self.key!r}: needs requestsPerMinute or tokensPerMinute")
        return self


class AwsKeys(_Frozen):
    """An AWS access key (and the session token of temporary ones), from the provider's Secret."""

    access_key_id: SecretStr
    secret_access_key: SecretStr
    session_token: SecretStr | None = None


class BedrockSettings(_Frozen):
    # The AWS region requests are signed for (and, without a baseURL, sent to).
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z0-9]+)+-[0-9]+$", max_length=32)]
    # None: a Bedrock API key (the provider's apiKey), or the pod's own AWS identity.
    credentials: AwsKeys | None = None
    # converse: every model, through Converse; anthropic-messages: Anthropic models through
    # InvokeModel with Anthropic's own body.
    api: BedrockApi = "converse"


class VertexSettings(_Frozen):
    """Google Vertex AI: the project and location in every URL, the publisher whose models (and body)
    the provider serves, and a service-account key (JSON) from the provider's Secret or, without
    one, the pod's GKE Workload Identity (the metadata server's tokens)."""

    project: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")]
    region: Annotated[str, Field(pattern=r"^[a-z]+(-[a-z0-9]+)*$", max_length=32)]
    publisher: VertexPublisher = "google"
    service_account_key: SecretStr | None = None

    @field_validator("service_account_key")
    @classmethod
    def _usable_key(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None:
            check_service_account_key(key.get_secret_value())
        return key


class EntraSettings(_Frozen):
    """Azure OpenAI with Microsoft Entra ID access tokens instead of an API key: client credentials
    (the client secret from the provider's Secret), or without a secret the pod's AKS Workload
    Identity (its federated token; tenant and client default to the pod's AZURE_TENANT_ID and
    AZURE_CLIENT_ID)."""

    tenant_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    client_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    client_secret: SecretStr | None = None
    scope: Annotated[str, Field(min_length=1, max_length=512)] = "https://cognitiveservices.azure.com/.default"

    @model_validator(mode="after")
    def _secret_names_its_client(self) -> EntraSettings:
        if self.client_secret is not None and (self.tenant_id is None or self.client_id is None):
            raise ValueError("Entra ID client credentials need tenantId and clientId")
        return self


class Provider(_Frozen):
    name: Annotated[str, Field(pattern=_NAME, max_length=253)]
    type: ProviderType
    base_url: Annotated[str, Field(pattern=r"^https?://")]
    api_key: SecretStr | None = None
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
    pricing: dict[str, ModelPricing] = Field(default_factory=dict)
    capacity: tuple[Capacity, ...] = ()

    @field_validator("base_url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        return check_base_url(url)

    @model_validator(mode="after")
    def _azure_needs_version(self) -> Provider:
        if self.type == "azure-openai" and not self.api_version:
            raise ValueError(f"provider {self.name!r}: type azure-openai needs apiVersion")
        if (self.type == "bedrock") != (self.bedrock is not None):
            raise ValueError(f"provider {self.name!r}: bedrock settings are for, and needed by, type bedrock only")
        if (self.type == "vertex") != (self.vertex is not None):
            raise ValueError(f"provider {self.name!r}: vertex settings are for, and needed by, type vertex only")
        if self.entra is not None and self.type != "azure-openai":
            raise ValueError(f"provider {self.name!r}: Entra ID settings are for type azure-openai only")
        return self

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
