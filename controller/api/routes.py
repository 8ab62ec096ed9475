"""ModelRoute: which backends serve which requests, with retries, timeouts and experiments."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from controller.api.common import (
    AboveZero,
    Condition,
    Duration,
    ExperimentMetric,
    FrozenModel,
    ObjectMeta,
    above_zero,
    dns_label,
    duration_seconds,
)
from proxy.snapshot import check_regex


class ModelRouteStatus(FrozenModel):
    observed_generation: int = 0
    synced_sidecars: int = 0
    total_sidecars: int = 0
    experiment: str | None = None  # the EXPERIMENT column
    experiments: tuple[dict[str, Any], ...] | None = None  # controller.experiment_runner's entries
    conditions: tuple[Condition, ...] = ()


# --- ModelRoute -----------------------------------------------------------------------


class HeaderMatch(FrozenModel):
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


class TokenRange(FrozenModel):
    """The request's estimated input tokens are at least `min` and at most `max` (either may be left out)."""

    min: Annotated[int, Field(ge=0)] | None = None
    max: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> TokenRange:
        if self.min is None and self.max is None:
            raise ValueError("inputTokens needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"inputTokens: min {self.min} is above max {self.max}")
        return self


class RouteMatch(FrozenModel):
    headers: tuple[HeaderMatch, ...] = ()
    input_tokens: TokenRange | None = None

    @property
    def empty(self) -> bool:
        return not self.headers and self.input_tokens is None


class BackendRef(FrozenModel):
    provider: Annotated[str, Field(min_length=1)]
    model: Annotated[str, Field(min_length=1)]
    weight: Annotated[int, Field(ge=0, le=1_000_000)] = 1


class RetrySpec(FrozenModel):
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


class TimeoutsSpec(FrozenModel):
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


class ExperimentArm(FrozenModel):
    name: Annotated[str, Field(max_length=63), AfterValidator(dns_label)]
    weight: Annotated[int, Field(ge=0, le=1_000_000)] = 1
    backends: Annotated[tuple[BackendRef, ...], Field(min_length=1, max_length=16)]

    @model_validator(mode="after")
    def _weights(self) -> ExperimentArm:
        if not any(b.weight > 0 for b in self.backends):
            raise ValueError(f"arm {self.name}: at least one backend needs a weight above 0")
        return self


class ExperimentGuardrail(FrozenModel):
    metric: ExperimentMetric = "errorRate"
    margin: AboveZero


class RolloutSpec(FrozenModel):
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


RewardWeight = Annotated[float, Field(ge=0, le=1_000_000)]


class RewardSpec(FrozenModel):
    """What an adaptive rule maximises per request: `quality` times the app's score, minus `cost` times
    the request's cost (per USD), minus `latency` times its latency (per second)."""

    quality: RewardWeight = 0.0
    cost: RewardWeight = 0.0
    latency: RewardWeight = 0.0

    @model_validator(mode="after")
    def _some_weight(self) -> RewardSpec:
        if not (self.quality > 0 or self.cost > 0 or self.latency > 0):
            raise ValueError("a reward needs a weight above 0 on quality, cost or latency")
        return self


class ExperimentSpec(FrozenModel):
    """An A/B test or canary between arms (the first is the control), or an adaptive split."""

    arms: Annotated[tuple[ExperimentArm, ...], Field(min_length=2, max_length=16)]
    strategy: Literal["fixed", "adaptive"] = "fixed"
    metric: ExperimentMetric = "errorRate"
    alpha: Annotated[float, Field(ge=0, le=0.5), AfterValidator(above_zero)] = 0.05
    minimum_detectable_effect: AboveZero
    minimum_sample: Annotated[int, Field(ge=30, le=1_000_000_000)] = 200
    guardrails: Annotated[tuple[ExperimentGuardrail, ...], Field(max_length=4)] = ()
    max_duration: Duration | None = None
    sticky_header: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    # Winner: all traffic to it; StoppedByGuardrail: all back to the control (the controller's weights).
    promote: bool = False
    rollout: RolloutSpec | None = None
    # strategy adaptive: what the bandit maximises, in place of the metric's own (lower latency, ...).
    reward: RewardSpec | None = None

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
        if self.reward is not None and self.strategy != "adaptive":
            raise ValueError("a reward is what strategy adaptive maximises: it needs strategy adaptive")
        return self


class RouteRule(FrozenModel):
    name: Annotated[str, Field(max_length=63), AfterValidator(dns_label)] = "default"
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


class LabelSelectorRequirement(FrozenModel):
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


class LabelSelector(FrozenModel):
    """metav1.LabelSelector: every matchLabels pair and every matchExpressions requirement must hold.

    `{}` selects everything; controller/selectors.py says what selects what.
    """

    match_labels: dict[str, LabelValue] = Field(default_factory=dict)
    match_expressions: Annotated[tuple[LabelSelectorRequirement, ...], Field(max_length=32)] = ()


class ModelRouteSpec(FrozenModel):
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
            if rule.matches.empty:
                raise ValueError(
                    f"rule {rule.name} has no matches, so it matches every request and hides the "
                    "rules after it: only the last rule may be without matches"
                )
        return self


class ModelRoute(FrozenModel):
    model_config = ConfigDict(frozen=True, extra="ignore", alias_generator=to_camel, populate_by_name=True)
    kind: Literal["ModelRoute"] = "ModelRoute"
    metadata: ObjectMeta
    spec: ModelRouteSpec
