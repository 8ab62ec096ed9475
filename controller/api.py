"""The Modelway API (group modelway.io, version v1alpha1) as pydantic models.

Mirrors the CRDs in `crds/` (the source of truth; a test keeps the two in
step). The API server has already applied the schema's defaults and CEL rules
to anything read from Kubernetes; the same models validate the file source.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from proxy.snapshot import (
    GUARDRAIL_NAME,
    GUARDRAIL_TIMEOUT_MS_MAX,
    REDACTION_KINDS,
    REDACTION_NAME,
    REDACTION_REGEX_MAX,
    BedrockApi,
    ConfigProblem,
    RedactionKind,
    VertexPublisher,
    check_base_url,
    check_guardrail_url,
    check_redaction_regex,
    check_regex,
)
from shared.config_text import validation_problems
from shared.provider_types import ProviderType, needs_base_url, needs_region

GROUP = "modelway.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Durations as Kubernetes users write them: Go's time.ParseDuration without a sign, e.g. "300ms",
# "1.5s", "1m30s", "2h", "1h2m3.5s" (units h, m, s, ms, us, ns; "0" alone too). Bounded (at most
# 5 integer and 9 fraction digits a part, 7 parts) so Go, CEL's duration() and this parser all
# take every string it allows. The CRDs use this very regex in their CEL rules (a unit test
# checks), so kubectl, `modelway dev` and the compiler accept the same strings.
DURATION_PATTERN = r"^(0|(([0-9]{1,5}([.][0-9]{1,9})?|[.][0-9]{1,9})(h|ms|m|s|us|ns)){1,7})$"
DURATION_MAX_LENGTH = 32
DURATION_HELP = "write numbers with units, e.g. 300ms, 1.5s, 1m30s or 2h (units h, m, s, ms, us, ns)"
_DURATION = re.compile(DURATION_PATTERN)
_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?(h|ms|m|s|us|ns)")
_UNIT_NANOS = {"h": 3_600_000_000_000, "m": 60_000_000_000, "s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def _bounded(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


@functools.lru_cache(maxsize=1024)  # a handful of distinct strings, parsed for every rule compiled
def duration_seconds(value: str) -> float:
    """Seconds in a duration of DURATION_PATTERN, to the nanosecond as Go counts it; ValueError otherwise."""
    if len(value) > DURATION_MAX_LENGTH or not _DURATION.fullmatch(value):
        raise ValueError(f"{_bounded(value)!r} is not a duration: {DURATION_HELP}")
    nanos = 0
    for whole, fraction, unit in _DURATION_PART.findall(value):
        scale = _UNIT_NANOS[unit]
        nanos += int(whole or "0") * scale
        if fraction:
            nanos += int(fraction) * scale // 10 ** len(fraction)  # Go truncates below a nanosecond too
    return nanos / 1e9


def _valid_duration(value: str) -> str:
    duration_seconds(value)
    return value


Duration = Annotated[str, Field(max_length=DURATION_MAX_LENGTH), AfterValidator(_valid_duration)]
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # the CRD's CEL rule uses the same regex


def _dns_label(value: str) -> str:
    if not re.fullmatch(DNS_LABEL, value):
        raise ValueError(
            f"{_bounded(value)!r} is not a DNS label: use lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, e.g. beta-testers"
        )
    return value


Hosting = Literal["saas", "vpc", "in-cluster"]
DataClass = Literal["public", "internal", "personal", "restricted"]


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
    annotations: dict[str, str] = Field(default_factory=dict)


class Condition(_Model):
    """metav1.Condition: every field is written, as the CRD's status schema requires."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    message: str
    observed_generation: int
    last_transition_time: str  # RFC 3339


class ModelProviderStatus(_Model):
    observed_generation: int = 0
    conditions: tuple[Condition, ...] = ()


class ModelRouteStatus(_Model):
    observed_generation: int = 0
    synced_sidecars: int = 0
    total_sidecars: int = 0
    experiment: str | None = None  # the EXPERIMENT column
    experiments: tuple[dict[str, Any], ...] | None = None  # controller.experiment_runner's entries
    conditions: tuple[Condition, ...] = ()


# --- ModelProvider --------------------------------------------------------------------


class SecretKeyRef(_Model):
    name: Annotated[str, Field(min_length=1)]
    key: str = "apiKey"


class EntraAuth(_Model):
    """Microsoft Entra ID tokens: client credentials when the provider has a credentialsRef (the
    Secret's `clientSecret`), else the pod's AKS Workload Identity (AZURE_* in its environment)."""

    tenant_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    client_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    scope: Annotated[str, Field(min_length=1, max_length=512)] | None = None


class AzureSettings(_Model):
    api_version: Annotated[str, Field(min_length=1)]
    entra: EntraAuth | None = None


AWS_REGION = r"^[a-z]{2}(-[a-z0-9]+)+-[0-9]+$"


class BedrockSettings(_Model):
    region: Annotated[str, Field(pattern=AWS_REGION, max_length=32)] | None = None
    api: BedrockApi = "converse"


class VertexSpec(_Model):
    project: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")]
    region: Annotated[str, Field(pattern=r"^[a-z]+(-[a-z0-9]+)*$", max_length=32)] | None = None
    publisher: VertexPublisher = "google"


class ModelInfo(_Model):
    name: Annotated[str, Field(min_length=1)]
    input_price_per_million: Annotated[float, Field(ge=0)] | None = None
    output_price_per_million: Annotated[float, Field(ge=0)] | None = None
    cached_input_price_per_million: Annotated[float, Field(ge=0)] | None = None
    context_window: Annotated[int, Field(ge=1)] | None = None


PER_MINUTE_MAX = 1_000_000_000_000
USD_MAX = 1_000_000_000
PerMinute = Annotated[int, Field(ge=1, le=PER_MINUTE_MAX)]


class ProviderCapacity(_Model):
    """The provider account's own quota for the models matching `model`, shared by every sidecar."""

    model: Annotated[str, Field(min_length=1, max_length=253)]
    requests_per_minute: PerMinute | None = None
    tokens_per_minute: PerMinute | None = None

    @model_validator(mode="after")
    def _says_something(self) -> ProviderCapacity:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            raise ValueError(
                f"capacity for model {_bounded(self.model)}: set requestsPerMinute, tokensPerMinute or both"
            )
        return self


class ModelProviderSpec(_Model):
    type: ProviderType
    base_url: Annotated[str | None, Field(alias="baseURL", pattern=r"^https?://", max_length=2048)] = None
    azure: AzureSettings | None = None
    bedrock: BedrockSettings | None = None
    vertex: VertexSpec | None = None
    region: str | None = None
    jurisdiction: str | None = None
    hosting: Hosting = "saas"
    credentials_ref: SecretKeyRef | None = None
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
        return regex if regex is None else check_regex(regex)  # the sidecar's own check

    @model_validator(mode="after")
    def _one_of(self) -> HeaderMatch:
        if self.value is not None and self.regex is not None:
            raise ValueError(f"header {self.name}: set at most one of value and regex")
        return self


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

    @model_validator(mode="after")
    def _backoff_order(self) -> RetrySpec:
        if duration_seconds(self.backoff_max) < duration_seconds(self.backoff_base):
            raise ValueError(
                f"backoffMax ({self.backoff_max}) must not be shorter than backoffBase ({self.backoff_base})"
            )
        return self


class TimeoutsSpec(_Model):
    total: Duration = "120s"
    first_token: Duration | None = None
    connect: Duration = "5s"

    @model_validator(mode="after")
    def _positive(self) -> TimeoutsSpec:
        for name, value in (("total", self.total), ("connect", self.connect), ("firstToken", self.first_token)):
            if value is not None and duration_seconds(value) <= 0:
                raise ValueError(f"{name} must be longer than 0, not {value}")
        if self.first_token is not None and duration_seconds(self.first_token) > duration_seconds(self.total):
            raise ValueError(f"firstToken ({self.first_token}) must not be longer than total ({self.total})")
        return self


ExperimentMetric = Literal["errorRate", "latency", "ttft", "cost", "quality"]


def _above_zero(value: float) -> float:
    if not value > 0:
        raise ValueError(f"must be above 0, not {value}")
    return value


AboveZero = Annotated[float, Field(ge=0, le=1_000_000), AfterValidator(_above_zero)]


class ExperimentArm(_Model):
    name: Annotated[str, Field(max_length=63), AfterValidator(_dns_label)]
    weight: Annotated[int, Field(ge=0, le=1_000_000)] = 1
    backends: Annotated[tuple[BackendRef, ...], Field(min_length=1, max_length=16)]

    @model_validator(mode="after")
    def _weights(self) -> ExperimentArm:
        if not any(b.weight > 0 for b in self.backends):
            raise ValueError(f"arm {self.name}: at least one backend needs a weight above 0")
        return self


class ExperimentGuardrail(_Model):
    metric: ExperimentMetric = "errorRate"
    margin: AboveZero


class RolloutSpec(_Model):
    """A canary's steps: the candidate (second) arm's share of traffic in percent, each held for `pause`."""

    steps: Annotated[tuple[Annotated[int, Field(ge=1, le=100)], ...], Field(min_length=1, max_length=20)]
    pause: Duration

    @model_validator(mode="after")
    def _steps(self) -> RolloutSpec:
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError(f"rollout steps must increase, got {list(self.steps)}")
        if duration_seconds(self.pause) <= 0:
            raise ValueError(f"pause must be longer than 0, not {self.pause}")
        return self


class ExperimentSpec(_Model):
    """An A/B test or canary between arms (the first is the control), or an adaptive split."""

    arms: Annotated[tuple[ExperimentArm, ...], Field(min_length=2, max_length=16)]
    strategy: Literal["fixed", "adaptive"] = "fixed"
    metric: ExperimentMetric = "errorRate"
    alpha: Annotated[float, Field(ge=0, le=0.5), AfterValidator(_above_zero)] = 0.05
    minimum_detectable_effect: AboveZero
    minimum_sample: Annotated[int, Field(ge=30, le=1_000_000_000)] = 200
    guardrails: Annotated[tuple[ExperimentGuardrail, ...], Field(max_length=4)] = ()
    max_duration: Duration | None = None
    sticky_header: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    # Winner: all traffic to it; StoppedByGuardrail: all back to the control (the controller's weights).
    promote: bool = False
    rollout: RolloutSpec | None = None

    @model_validator(mode="after")
    def _arms(self) -> ExperimentSpec:
        names = [a.name for a in self.arms]
        if len(names) != len(set(names)):
            raise ValueError(f"arm names must be unique, got {names}")
        if not any(a.weight > 0 for a in self.arms):
            raise ValueError("at least one arm needs a weight above 0")
        if self.max_duration is not None and duration_seconds(self.max_duration) <= 0:
            raise ValueError(f"maxDuration must be longer than 0, not {self.max_duration}")
        if self.rollout is not None:
            if len(self.arms) != 2 or self.strategy != "fixed":
                raise ValueError(
                    "a rollout needs exactly two arms (the control, then the candidate) and strategy fixed"
                )
            if not self.guardrails:
                raise ValueError("a rollout needs at least one guardrail to stop it")
        return self


class RouteRule(_Model):
    name: Annotated[str, Field(max_length=63), AfterValidator(_dns_label)] = "default"
    matches: RouteMatch = RouteMatch()
    # Without an experiment; with one, its arms hold the backends.
    backends: Annotated[tuple[BackendRef, ...], Field(min_length=1, max_length=16)] | None = None
    fallbacks: Annotated[tuple[BackendRef, ...], Field(max_length=16)] = ()
    retry: RetrySpec = RetrySpec()
    timeouts: TimeoutsSpec = TimeoutsSpec()
    experiment: ExperimentSpec | None = None

    @property
    def all_backends(self) -> tuple[BackendRef, ...]:
        """The rule's backends, or with an experiment every arm's (each once, in order)."""
        if self.experiment is None:
            return self.backends or ()
        seen: dict[tuple[str, str], BackendRef] = {}
        for arm in self.experiment.arms:
            for b in arm.backends:
                seen.setdefault((b.provider, b.model), b)
        return tuple(seen.values())

    @model_validator(mode="after")
    def _backends(self) -> RouteRule:
        if (self.backends is None) == (self.experiment is None):
            raise ValueError("set backends, or an experiment whose arms hold the backends, not both")
        if self.backends is not None and not any(b.weight > 0 for b in self.backends):
            raise ValueError("at least one backend needs a weight above 0")
        primaries = {(b.provider, b.model) for b in self.all_backends}
        for f in self.fallbacks:
            if (f.provider, f.model) in primaries:
                raise ValueError(
                    f"fallback {f.provider}/{f.model} is also a backend of this rule: a fallback "
                    "must differ from the rule's backends (provider and model)"
                )
        return self


SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
LabelKey = Annotated[str, Field(min_length=1, max_length=317)]  # a qualified name: prefix (253) / name (63)
LabelValue = Annotated[str, Field(max_length=63)]


class LabelSelectorRequirement(_Model):
    """metav1.LabelSelectorRequirement: `key` `operator` `values`, e.g. tier In (gold, silver)."""

    key: LabelKey
    operator: SelectorOperator
    values: Annotated[tuple[LabelValue, ...], Field(max_length=64)] = ()

    @model_validator(mode="after")
    def _values(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs values (key {self.key})")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(
                f"operator {self.operator} takes no values (key {self.key}): leave values out, or use In or NotIn"
            )
        return self


class LabelSelector(_Model):
    """metav1.LabelSelector: every matchLabels pair and every matchExpressions requirement must hold.

    `{}` selects everything; controller/selectors.py says what selects what.
    """

    match_labels: dict[str, LabelValue] = Field(default_factory=dict)
    match_expressions: Annotated[tuple[LabelSelectorRequirement, ...], Field(max_length=32)] = ()


class ModelRouteSpec(_Model):
    model: Annotated[str, Field(min_length=1, max_length=253)]
    operation: Literal["chat", "embeddings"] = "chat"
    workload_selector: LabelSelector | None = None
    rules: Annotated[tuple[RouteRule, ...], Field(min_length=1, max_length=32)]

    @model_validator(mode="after")
    def _rules(self) -> ModelRouteSpec:
        names = [r.name for r in self.rules]
        if len(names) != len(set(names)):
            raise ValueError(f"rule names must be unique, got {names}")
        for rule in self.rules[:-1]:
            if not rule.matches.headers:
                raise ValueError(
                    f"rule {rule.name} has no matches, so it matches every request and hides the "
                    "rules after it: only the last rule may be without matches"
                )
        return self


class ModelRoute(_Model):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)
    kind: Literal["ModelRoute"] = "ModelRoute"
    metadata: ObjectMeta
    spec: ModelRouteSpec


# --- ModelPolicy and ClusterModelPolicy --------------------------------------------------


# up to 64 names (service accounts, glob patterns: 253 characters) or places (regions, jurisdictions: 63)
Names: TypeAlias = Annotated[tuple[Annotated[str, Field(min_length=1, max_length=253)], ...], Field(max_length=64)]
Places: TypeAlias = Annotated[tuple[Annotated[str, Field(min_length=1, max_length=63)], ...], Field(max_length=64)]


class PolicySubjects(_Model):
    """Which workloads a policy binds; every part given must match, nothing given matches all."""

    service_accounts: Names = ()
    pod_selector: LabelSelector | None = None


class PolicyAccess(_Model):
    """What the bound workloads may use, as glob patterns; a list left out allows anything."""

    providers: Names | None = None
    models: Names | None = None
    routes: Names | None = None


class RedactPattern(_Model):
    """A custom kind to mask: every match of `regex` (Python `re`) becomes `<NAME_n>`."""

    name: Annotated[str, Field(pattern=REDACTION_NAME, min_length=1, max_length=40)]
    regex: Annotated[str, Field(min_length=1, max_length=REDACTION_REGEX_MAX)]

    @model_validator(mode="after")
    def _usable(self) -> RedactPattern:
        if self.name in REDACTION_KINDS:
            raise ValueError(f"redact pattern name {self.name} is a built-in kind; choose another name")
        check_redaction_regex(self.name, self.regex)  # the sidecar's own check
        return self


class RedactSpec(_Model):
    """Outside the rule's places, send the request masked instead of denying the provider."""

    kinds: Annotated[tuple[RedactionKind, ...], Field(max_length=len(REDACTION_KINDS))] | None = None
    patterns: Annotated[tuple[RedactPattern, ...], Field(max_length=16)] = ()
    restore: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> RedactSpec:
        names = [p.name for p in self.patterns]
        if len(names) != len(set(names)):
            raise ValueError(f"redact.patterns: names must be unique, got {names}")
        if self.kinds is not None and len(self.kinds) != len(set(self.kinds)):
            raise ValueError(f"redact.kinds: each kind once, got {list(self.kinds)}")
        if self.kinds == () and not self.patterns:
            raise ValueError("redact masks nothing: leave kinds out (every kind), or give patterns")
        return self


class ResidencyRule(_Model):
    """Where data of one class (and every class above it) may be processed."""

    data_class: DataClass
    jurisdictions: Places | None = None
    regions: Places | None = None
    hosting: Annotated[tuple[Hosting, ...], Field(max_length=3)] | None = None
    redact: RedactSpec | None = None  # outside these places: mask and send, instead of deny

    @model_validator(mode="after")
    def _says_something(self) -> ResidencyRule:
        if self.jurisdictions is None and self.regions is None and self.hosting is None:
            raise ValueError(
                "a residency rule needs at least one of jurisdictions, regions, hosting; the rule "
                f"for dataClass {self.data_class} has none"
            )
        return self


# Like Names, spelt as a type alias mypy can read.
Globs = Annotated[tuple[Annotated[str, Field(min_length=1, max_length=253)], ...], Field(max_length=64)]


class LimitBackend(_Model):
    """A cheaper backend a limit reroutes to once its budget is spent."""

    provider: Annotated[str, Field(min_length=1, max_length=253)]
    model: Annotated[str, Field(min_length=1, max_length=253)]


_LIMIT_NUMBERS = (
    "requestsPerMinute",
    "tokensPerMinute",
    "inputTokensPerMinute",
    "outputTokensPerMinute",
    "concurrentRequests",
    "usdPerDay",
    "usdPerMonth",
)


class PolicyLimit(_Model):
    """One limit: rates, concurrency and budgets counted together per workload, namespace or policy."""

    name: Annotated[str, Field(max_length=63), AfterValidator(_dns_label)]
    requests_per_minute: PerMinute | None = None
    tokens_per_minute: PerMinute | None = None
    input_tokens_per_minute: PerMinute | None = None
    output_tokens_per_minute: PerMinute | None = None
    concurrent_requests: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    usd_per_day: Annotated[float, Field(ge=0, le=USD_MAX)] | None = None
    usd_per_month: Annotated[float, Field(ge=0, le=USD_MAX)] | None = None
    per: Literal["workload", "namespace", "policy"] = "workload"
    routes: Globs | None = None
    providers: Globs | None = None
    models: Globs | None = None
    on_budget_spent: Literal["refuse", "reroute"] = "refuse"
    reroute_to: Annotated[tuple[LimitBackend, ...], Field(max_length=8)] = ()
    failure_mode: Literal["open", "closed"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PolicyLimit:
        values = self.model_dump(by_alias=True)
        if all(values[n] is None for n in _LIMIT_NUMBERS):
            raise ValueError(f"limit {self.name} sets no limit: set at least one of {', '.join(_LIMIT_NUMBERS)}")
        budget = self.usd_per_day is not None or self.usd_per_month is not None
        if self.on_budget_spent == "reroute" and not self.reroute_to:
            raise ValueError(f"limit {self.name}: rerouteTo is required when onBudgetSpent is reroute")
        if self.on_budget_spent == "reroute" and not budget:
            raise ValueError(
                f"limit {self.name}: onBudgetSpent reroute needs a budget (usdPerDay or usdPerMonth) to be spent"
            )
        if self.on_budget_spent != "reroute" and self.reroute_to:
            raise ValueError(f"limit {self.name}: rerouteTo is only used when onBudgetSpent is reroute")
        return self

    @property
    def effective_failure_mode(self) -> Literal["open", "closed"]:
        """Closed for a limit with a budget (money), open for rates and concurrency (availability)."""
        if self.failure_mode is not None:
            return self.failure_mode
        return "closed" if self.usd_per_day is not None or self.usd_per_month is not None else "open"


class GuardrailSpec(_Model):
    """An HTTP service asked about a request's text before it goes out and about its answer
    (the protocols: docs/guardrails.md)."""

    name: Annotated[str, Field(pattern=GUARDRAIL_NAME, min_length=1, max_length=63)]
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    kind: Literal["modelway", "openai-moderation"] = "modelway"
    phases: Annotated[tuple[Literal["request", "response"], ...], Field(min_length=1, max_length=2)] = (
        "request",
        "response",
    )
    timeout_ms: Annotated[int, Field(ge=1, le=GUARDRAIL_TIMEOUT_MS_MAX)] = 500
    failure_mode: Literal["open", "closed"] = "closed"
    data_classes: Annotated[tuple[DataClass, ...], Field(max_length=4)] | None = None
    routes: Globs | None = None
    stream_check_chars: Annotated[int, Field(ge=16, le=65_536)] = 400
    stream_window_chars: Annotated[int, Field(ge=0, le=65_536)] = 800

    @model_validator(mode="after")
    def _consistent(self) -> GuardrailSpec:
        check_guardrail_url(self.url)  # the sidecar's own check
        if len(self.phases) != len(set(self.phases)):
            raise ValueError(f"guardrail {self.name}: phases: each phase once, got {list(self.phases)}")
        return self


class ModelPolicySpec(_Model):
    subjects: PolicySubjects = PolicySubjects()
    access: PolicyAccess = PolicyAccess()
    default_data_class: DataClass | None = None
    detect_personal_data: bool = False
    residency: Annotated[tuple[ResidencyRule, ...], Field(max_length=4)] = ()
    limits: Annotated[tuple[PolicyLimit, ...], Field(max_length=16)] = ()
    guardrails: Annotated[tuple[GuardrailSpec, ...], Field(max_length=8)] = ()

    @model_validator(mode="after")
    def _one_rule_per_class(self) -> ModelPolicySpec:
        classes = [r.data_class for r in self.residency]
        if len(classes) != len(set(classes)):
            raise ValueError(f"residency has more than one rule for a data class: {classes}")
        names = [limit.name for limit in self.limits]
        if len(names) != len(set(names)):
            raise ValueError(f"limits: names must be unique, got {names}")
        guardrails = [g.name for g in self.guardrails]
        if len(guardrails) != len(set(guardrails)):
            raise ValueError(f"guardrails: names must be unique, got {guardrails}")
        return self


class ClusterModelPolicySpec(ModelPolicySpec):
    namespace_selector: LabelSelector | None = None


class SubjectSpendStatus(_Model):
    subject: str  # "<namespace>/<serviceaccount>" (per workload) or "<namespace>" (per namespace)
    spent_usd: float = Field(alias="spentUSD")


class BudgetSpendStatus(_Model):
    """One budget of one limit, as last read from the shared counters."""

    limit: str
    per: Literal["workload", "namespace", "policy"]
    window: Literal["day", "month"]
    period: str  # the UTC day or month the numbers are of: "2026-03-31", "2026-03"
    budget_usd: float = Field(alias="budgetUSD")
    spent_usd: float = Field(alias="spentUSD")  # per workload or namespace: the subject that spent most
    total_usd: float = Field(alias="totalUSD")  # every subject together
    subjects: int = 0  # how many workloads or namespaces spent in the window
    top: tuple[SubjectSpendStatus, ...] = ()


class PolicySpendStatus(_Model):
    summary: str  # the SPEND column: "$12.40/$50 day"
    read_at: str | None = None  # when these numbers were read (RFC 3339); re-read often, written when they move
    budgets: tuple[BudgetSpendStatus, ...] = ()


class ModelPolicyStatus(_Model):
    observed_generation: int = 0
    conditions: tuple[Condition, ...] = ()
    spend: PolicySpendStatus | None = None  # only for a policy with a budget


class ModelPolicy(_Model):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)
    kind: Literal["ModelPolicy"] = "ModelPolicy"
    metadata: ObjectMeta
    spec: ModelPolicySpec = ModelPolicySpec()


class ClusterModelPolicy(_Model):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)
    kind: Literal["ClusterModelPolicy"] = "ClusterModelPolicy"
    metadata: ObjectMeta
    spec: ClusterModelPolicySpec = ClusterModelPolicySpec()

    @field_validator("metadata")
    @classmethod
    def _cluster_scoped(cls, metadata: ObjectMeta) -> ObjectMeta:
        return metadata.model_copy(update={"namespace": ""})


# --- Core types the controller reads: Secrets (credentials) and Namespaces (labels, annotations)


class Secret(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)
    kind: Literal["Secret"] = "Secret"
    metadata: ObjectMeta
    data: dict[str, str] = Field(default_factory=dict)  # base64, as the API returns it
    string_data: dict[str, str] = Field(default_factory=dict)  # manifests in the file source


class Namespace(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)
    kind: Literal["Namespace"] = "Namespace"
    metadata: ObjectMeta

    @field_validator("metadata")
    @classmethod
    def _cluster_scoped(cls, metadata: ObjectMeta) -> ObjectMeta:
        return metadata.model_copy(update={"namespace": ""})


Resource = ModelProvider | ModelRoute | ModelPolicy | ClusterModelPolicy | Secret | Namespace
KINDS: dict[str, type[BaseModel]] = {
    "ModelProvider": ModelProvider,
    "ModelRoute": ModelRoute,
    "ModelPolicy": ModelPolicy,
    "ClusterModelPolicy": ClusterModelPolicy,
    "Secret": Secret,
    "Namespace": Namespace,
}
CLUSTER_KINDS = frozenset({"ClusterModelPolicy", "Namespace"})
PLURALS = {
    "ModelProvider": "modelproviders",
    "ModelRoute": "modelroutes",
    "ModelPolicy": "modelpolicies",
    "ClusterModelPolicy": "clustermodelpolicies",
}


# Kinds with a status: one of them that fails validation is kept as an InvalidObject, so its
# status can say why (the others are simply absent while invalid).
STATUS_KINDS = frozenset({"ModelProvider", "ModelRoute", "ModelPolicy", "ClusterModelPolicy"})


@dataclass(frozen=True, slots=True)
class InvalidObject:
    """An object the API server holds that the controller cannot use, and why.

    Kept beside (not instead of) the last valid version of the same object: that
    version keeps serving while the status of this one says what is wrong."""

    kind: str
    metadata: ObjectMeta
    reason: str  # a condition reason: InvalidRegex, InvalidURL, or Invalid
    message: str


def problems(exc: ValidationError) -> str:
    """Every problem as `field.path: message`, without input values (a Secret's never reach a log)."""
    return validation_problems(exc)


def _reason(exc: ValidationError) -> str:
    for error in exc.errors(include_input=False, include_url=False):
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigProblem):
            return cause.reason
    return "Invalid"


def parse_object(obj: dict[str, Any]) -> Resource | InvalidObject:
    """Like `parse_resource`, but an object of a kind with a status that fails validation comes
    back as an InvalidObject naming its problems. Raises for what cannot even be named."""
    try:
        return parse_resource(obj)
    except ValidationError as exc:
        kind = str(obj.get("kind"))
        if kind not in STATUS_KINDS:
            raise
        try:
            metadata = ObjectMeta.model_validate(obj.get("metadata") or {})
        except ValidationError:
            raise exc from None
        if kind in CLUSTER_KINDS:
            metadata = metadata.model_copy(update={"namespace": ""})
        return InvalidObject(kind=kind, metadata=metadata, reason=_reason(exc), message=problems(exc))


def parse_resource(obj: dict[str, Any]) -> Resource:
    """A Kubernetes object (dict) as one of the models; ValueError for kinds we do not handle."""
    kind = obj.get("kind")
    model = KINDS.get(kind or "")
    if model is None:
        raise ValueError(f"unsupported kind {kind!r}; expected one of {sorted(KINDS)}")
    return model.model_validate(obj)  # type: ignore[return-value]
