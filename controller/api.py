"""The Modelway API (group modelway.io, version v1alpha1) as pydantic models.

Mirrors the CRDs in `crds/` (the source of truth; a test keeps the two in
step). The API server has already applied the schema's defaults and CEL rules
to anything read from Kubernetes; the same models validate the file source.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

GROUP = "modelway.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Gateway API's duration format: "500ms", "10s", "1m30s".
DURATION_PATTERN = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"
_DURATION_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}

Duration = Annotated[str, Field(pattern=DURATION_PATTERN)]
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ProviderType = Literal["openai", "azure-openai", "anthropic", "gemini", "openai-compatible"]


def duration_seconds(value: str) -> float:
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)


class ObjectMeta(BaseModel):
    """The parts of metadata the controller uses; the rest is ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)

    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 1
    resource_version: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    observed_generation: int = 0
    last_transition_time: str = ""


# --- ModelProvider --------------------------------------------------------------------


class SecretKeyRef(_Model):
    name: Annotated[str, Field(min_length=1)]
    key: str = "apiKey"


class AzureSettings(_Model):
    api_version: Annotated[str, Field(min_length=1)]


class ModelInfo(_Model):
    name: Annotated[str, Field(min_length=1)]
    input_price_per_million: Annotated[float, Field(ge=0)] | None = None
    output_price_per_million: Annotated[float, Field(ge=0)] | None = None
    context_window: Annotated[int, Field(ge=1)] | None = None


class ModelProviderSpec(_Model):
    type: ProviderType
    base_url: Annotated[str | None, Field(alias="baseURL", pattern=r"^https?://")] = None
    azure: AzureSettings | None = None
    region: str | None = None
    jurisdiction: str | None = None
    hosting: Literal["saas", "vpc", "in-cluster"] = "saas"
    credentials_ref: SecretKeyRef | None = None
    models: tuple[ModelInfo, ...] = ()


class ModelProvider(_Model):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)
    kind: Literal["ModelProvider"] = "ModelProvider"
    metadata: ObjectMeta
    spec: ModelProviderSpec


# --- ModelRoute -----------------------------------------------------------------------


class HeaderMatch(_Model):
    name: Annotated[str, Field(min_length=1)]
    value: str | None = None
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, regex: str | None) -> str | None:
        if regex is not None:
            re.compile(regex)
        return regex


class RouteMatch(_Model):
    headers: tuple[HeaderMatch, ...] = ()


class BackendRef(_Model):
    provider: Annotated[str, Field(min_length=1)]
    model: Annotated[str, Field(min_length=1)]
    weight: Annotated[int, Field(ge=0, le=1_000_000)] = 1


class RetrySpec(_Model):
    attempts: Annotated[int, Field(ge=1, le=10)] = 2
    retry_on: tuple[Literal["connect-error", "timeout", "429", "5xx"], ...] = ("connect-error", "timeout", "429", "5xx")
    backoff_base: Duration = "100ms"
    backoff_max: Duration = "2s"
    max_retry_after: Duration = "5s"


class TimeoutsSpec(_Model):
    total: Duration = "120s"
    first_token: Duration | None = None
    connect: Duration = "5s"


class RouteRule(_Model):
    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=63)] = "default"
    matches: RouteMatch = RouteMatch()
    backends: Annotated[tuple[BackendRef, ...], Field(min_length=1, max_length=16)]
    fallbacks: Annotated[tuple[BackendRef, ...], Field(max_length=16)] = ()
    retry: RetrySpec = RetrySpec()
    timeouts: TimeoutsSpec = TimeoutsSpec()


class LabelSelector(_Model):
    match_labels: dict[str, str] = Field(default_factory=dict)


class ModelRouteSpec(_Model):
    model: Annotated[str, Field(min_length=1, max_length=253)]
    workload_selector: LabelSelector | None = None
    rules: Annotated[tuple[RouteRule, ...], Field(min_length=1, max_length=32)]


class ModelRoute(_Model):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)
    kind: Literal["ModelRoute"] = "ModelRoute"
    metadata: ObjectMeta
    spec: ModelRouteSpec


# --- Secrets (the one core type the controller reads) ----------------------------------


class Secret(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)
    kind: Literal["Secret"] = "Secret"
    metadata: ObjectMeta
    data: dict[str, str] = Field(default_factory=dict)  # base64, as the API returns it
    string_data: dict[str, str] = Field(default_factory=dict)  # manifests in the file source


Resource = ModelProvider | ModelRoute | Secret
KINDS: dict[str, type[BaseModel]] = {"ModelProvider": ModelProvider, "ModelRoute": ModelRoute, "Secret": Secret}
PLURALS = {"ModelProvider": "modelproviders", "ModelRoute": "modelroutes"}


def parse_resource(obj: dict[str, Any]) -> Resource:
    """A Kubernetes object (dict) as one of the models; ValueError for kinds we do not handle."""
    kind = obj.get("kind")
    model = KINDS.get(kind or "")
    if model is None:
        raise ValueError(f"unsupported kind {kind!r}; expected one of {sorted(KINDS)}")
    return model.model_validate(obj)  # type: ignore[return-value]
