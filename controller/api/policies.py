"""ModelPolicy and ClusterModelPolicy: access, residency, redaction, limits and guardrails."""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from controller.api.common import Condition, DataClass, FrozenModel, Hosting, ObjectMeta, dns_label
from controller.api.providers import USD_MAX, PerMinute
from controller.api.routes import LabelSelector
from proxy.snapshot import (
    GUARDRAIL_NAME,
    GUARDRAIL_TIMEOUT_MS_MAX,
    REDACTION_KINDS,
    REDACTION_NAME,
    REDACTION_REGEX_MAX,
    RedactionKind,
    check_guardrail_url,
    check_redaction_regex,
)

# --- ModelPolicy and ClusterModelPolicy --------------------------------------------------


# up to 64 names (service accounts, glob patterns: 253 characters) or places (regions, jurisdictions: 63)
Names: TypeAlias = Annotated[tuple[Annotated[str, Field(min_length=1, max_length=253)], ...], Field(max_length=64)]
Places: TypeAlias = Annotated[tuple[Annotated[str, Field(min_length=1, max_length=63)], ...], Field(max_length=64)]


class PolicySubjects(FrozenModel):
    """Which workloads a policy binds; every part given must match, nothing given matches all."""

    service_accounts: Names = ()
    pod_selector: LabelSelector | None = None


class PolicyAccess(FrozenModel):
    """What the bound workloads may use, as glob patterns; a list left out allows anything."""

    providers: Names | None = None
    models: Names | None = None
    routes: Names | None = None


class RedactPattern(FrozenModel):
    """A custom kind to mask: every match of `regex` (Python `re`) becomes `<NAME_n>`."""

    name: Annotated[str, Field(pattern=REDACTION_NAME, min_length=1, max_length=40)]
    regex: Annotated[str, Field(min_length=1, max_length=REDACTION_REGEX_MAX)]

    @model_validator(mode="after")
    def _usable(self) -> RedactPattern:
        if self.name in REDACTION_KINDS:
            raise ValueError(f"redact pattern name {self.name} is a built-in kind; choose another name")
        check_redaction_regex(self.name, self.regex)  # the sidecar's own check
        return self


class RedactSpec(FrozenModel):
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


class ResidencyRule(FrozenModel):
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


class LimitBackend(FrozenModel):
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


class PolicyLimit(FrozenModel):
    """One limit: rates, concurrency and budgets counted together per workload, namespace or policy."""

    name: Annotated[str, Field(max_length=63), AfterValidator(dns_label)]
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


class GuardrailSpec(FrozenModel):
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


class ModelPolicySpec(FrozenModel):
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


class SubjectSpendStatus(FrozenModel):
    subject: str  # "<namespace>/<serviceaccount>" (per workload) or "<namespace>" (per namespace)
    spent_usd: float = Field(alias="spentUSD")


class BudgetSpendStatus(FrozenModel):
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


class PolicySpendStatus(FrozenModel):
    summary: str  # the SPEND column: "$12.40/$50 day"
    read_at: str | None = None  # when these numbers were read (RFC 3339); re-read often, written when they move
    budgets: tuple[BudgetSpendStatus, ...] = ()


class ModelPolicyStatus(FrozenModel):
    observed_generation: int = 0
    conditions: tuple[Condition, ...] = ()
    spend: PolicySpendStatus | None = None  # only for a policy with a budget


class ModelPolicy(FrozenModel):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)
    kind: Literal["ModelPolicy"] = "ModelPolicy"
    metadata: ObjectMeta
    spec: ModelPolicySpec = ModelPolicySpec()


class ClusterModelPolicy(FrozenModel):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)
    kind: Literal["ClusterModelPolicy"] = "ClusterModelPolicy"
    metadata: ObjectMeta
    spec: ClusterModelPolicySpec = ClusterModelPolicySpec()

    @field_validator("metadata")
    @classmethod
    def _cluster_scoped(cls, metadata: ObjectMeta) -> ObjectMeta:
        return metadata.model_copy(update={"namespace": ""})
