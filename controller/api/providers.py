"""ModelProvider: where a model is served, how to reach it and what it costs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from controller.api.common import Condition, FrozenModel, Hosting, ObjectMeta, bounded
from proxy.snapshot import BedrockApi, VertexPublisher, check_base_url
from shared.provider_types import ProviderType, needs_base_url, needs_region


class ModelProviderStatus(FrozenModel):
    observed_generation: int = 0
    conditions: tuple[Condition, ...] = ()


# --- ModelProvider --------------------------------------------------------------------


class SecretKeyRef(FrozenModel):
    name: Annotated[str, Field(min_length=1)]
    key: str = "apiKey"


class EntraAuth(FrozenModel):
    """Microsoft Entra ID tokens: client credentials when the provider has a credentialsRef (the
    Secret's `clientSecret`), else the pod's AKS Workload Identity (AZURE_* in its environment)."""

    tenant_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    client_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    scope: Annotated[str, Field(min_length=1, max_length=512)] | None = None


class AzureSettings(FrozenModel):
    api_version: Annotated[str, Field(min_length=1)]
    entra: EntraAuth | None = None


AWS_REGION = r"^[a-z]{2}(-[a-z0-9]+)+-[0-9]+$"


class BedrockSettings(FrozenModel):
    region: Annotated[str, Field(pattern=AWS_REGION, max_length=32)] | None = None
    api: BedrockApi = "converse"


class VertexSpec(FrozenModel):
    project: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")]
    region: Annotated[str, Field(pattern=r"^[a-z]+(-[a-z0-9]+)*$", max_length=32)] | None = None
    publisher: VertexPublisher = "google"


class ModelInfo(FrozenModel):
    name: Annotated[str, Field(min_length=1)]
    input_price_per_million: Annotated[float, Field(ge=0)] | None = None
    output_price_per_million: Annotated[float, Field(ge=0)] | None = None
    cached_input_price_per_million: Annotated[float, Field(ge=0)] | None = None
    cache_write_price_per_million: Annotated[float, Field(ge=0)] | None = None
    # Routing skips a backend whose window a request cannot fit (its estimated input plus the output
    # it asks for, capped by max_output_tokens, else max_output_tokens).
    context_window: Annotated[int, Field(ge=1)] | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None


PER_MINUTE_MAX = 1_000_000_000_000
USD_MAX = 1_000_000_000
PerMinute = Annotated[int, Field(ge=1, le=PER_MINUTE_MAX)]


class ProviderCapacity(FrozenModel):
    """The provider account's own quota for the models matching `model`, shared by every sidecar."""

    model: Annotated[str, Field(min_length=1, max_length=253)]
    requests_per_minute: PerMinute | None = None
    tokens_per_minute: PerMinute | None = None

    @model_validator(mode="after")
    def _says_something(self) -> ProviderCapacity:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError(
                f"capacity for model {bounded(self.model)}: set requestsPerMinute, tokensPerMinute or both"
            )
        return self


class ProviderTls(FrozenModel):
    """How the sidecar checks the provider's TLS certificate."""

    # PEM CA certificates the provider's certificate chains to (e.g. a corporate CA), trusted
    # instead of the system's; public, so in the spec rather than a Secret. Checked when compiled.
    ca_bundle: Annotated[str, Field(min_length=1, max_length=262144)] | None = None


class ModelProviderSpec(FrozenModel):
    type: ProviderType
    base_url: Annotated[str | None, Field(alias="baseURL", pattern=r"^https?://", max_length=2048)] = None
    azure: AzureSettings | None = None
    bedrock: BedrockSettings | None = None
    vertex: VertexSpec | None = None
    region: str | None = None
    jurisdiction: str | None = None
    hosting: Hosting = "saas"
    credentials_ref: SecretKeyRef | None = None
    tls: ProviderTls | None = None
    models: tuple[ModelInfo, ...] = ()
    capacity: Annotated[tuple[ProviderCapacity, ...], Field(max_length=32)] = ()

    @field_validator("base_url")
    @classmethod
    def _usable_url(cls, url: str | None) -> str | None:
        return url if url is None else check_base_url(url)  # the sidecar's own check

    @model_validator(mode="after")
    def _type_settings(self) -> ModelProviderSpec:
        if self.type == "azure-openai" and self.azure is None:
            raise ValueError("type azure-openai needs spec.azure (with apiVersion)")
        if self.type != "azure-openai" and self.azure is not None:
            raise ValueError(f"spec.azure is only allowed when type is azure-openai, not {self.type}")
        if self.type != "bedrock" and self.bedrock is not None:
            raise ValueError(f"spec.bedrock is only allowed when type is bedrock, not {self.type}")
        if (self.type == "vertex") != (self.vertex is not None):
            raise ValueError(f"spec.vertex (with project) is for, and needed by, type vertex; this is {self.type}")
        entra = self.azure.entra if self.azure is not None else None
        if (
            entra is not None
            and self.credentials_ref is not None
            and (entra.tenant_id is None or entra.client_id is None)
        ):
            raise ValueError("spec.azure.entra with a credentialsRef (a client secret) needs tenantId and clientId")
        if needs_region(self.type) and self.signing_region is None:
            raise ValueError(f"type {self.type} needs a region: spec.{self.type}.region or spec.region")
        if needs_base_url(self.type) and self.base_url is None:
            raise ValueError(f"type {self.type} needs spec.baseURL: it has no default endpoint")
        globs = [c.model for c in self.capacity]
        if len(globs) != len(set(globs)):
            raise ValueError(f"spec.capacity has more than one entry for a model: {globs}")
        return self

    @property
    def signing_region(self) -> str | None:
        """The region of a per-region provider (bedrock's AWS region, vertex's location):
        spec.bedrock.region or spec.vertex.region, else spec.region."""
        if self.bedrock is not None and self.bedrock.region is not None:
            return self.bedrock.region
        if self.vertex is not None and self.vertex.region is not None:
            return self.vertex.region
        return self.region


class ModelProvider(FrozenModel):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)
    kind: Literal["ModelProvider"] = "ModelProvider"
    metadata: ObjectMeta
    spec: ModelProviderSpec
