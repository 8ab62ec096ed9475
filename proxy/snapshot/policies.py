"""What a workload's policies compile to: denials, redactions, limits and guardrails."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from proxy.snapshot.base import DataClass, _Frozen
from proxy.snapshot.checks import (
    GUARDRAIL_NAME,
    GUARDRAIL_TIMEOUT_MS_MAX,
    REDACTION_KINDS,
    REDACTION_NAME,
    REDACTION_REGEX_MAX,
    GuardrailKind,
    GuardrailPhase,
    RedactionKind,
    check_guardrail_url,
    check_redaction_regex,
)

# --- limits and capacity (enforced by proxy/limits) ---------------------------------------

LimitScope = Literal["workload", "namespace", "policy"]
BudgetAction = Literal["refuse", "reroute"]
FailureMode = Literal["open", "closed"]
_COUNT = Annotated[int, Field(ge=1, le=1_000_000_000_000)]
_USD = Annotated[float, Field(ge=0, le=1_000_000_000)]
_GLOBS = tuple[Annotated[str, Field(min_length=1)], ...]


class RerouteBackend(_Frozen):
    provider: Annotated[str, Field(min_length=1)]  # a compiled provider name, "<namespace>.<name>"
    model: Annotated[str, Field(min_length=1)]


class Limit(_Frozen):
    """One limit of one policy, compiled for this workload: its counter key names what is counted together.

    The key carries the scope value (`.../workload/<ns>/<sa>`, `.../namespace/<ns>` or `.../policy`), so
    sidecars of the same scope share one counter and others do not; the sidecar never works it out."""

    policy: str  # "ModelPolicy team-a/caps" or "ClusterModelPolicy org-caps", as in Denial.policy
    name: Annotated[str, Field(min_length=1)]
    key: Annotated[str, Field(min_length=1)]
    routes: _GLOBS | None = None  # ModelRoute names; None: every route
    providers: _GLOBS | None = None  # ModelProvider names; None: every provider
    models: _GLOBS | None = None  # upstream model names; None: every model
    requests_per_minute: _COUNT | None = None
    tokens_per_minute: _COUNT | None = None  # input and output together
    input_tokens_per_minute: _COUNT | None = None
    output_tokens_per_minute: _COUNT | None = None
    concurrent_requests: _COUNT | None = None
    usd_per_day: _USD | None = None  # UTC days
    usd_per_month: _USD | None = None  # UTC calendar months
    on_budget_spent: BudgetAction = "refuse"
    reroute_to: tuple[RerouteBackend, ...] = ()
    failure_mode: FailureMode = "open"

    @property
    def has_budget(self) -> bool:
        return self.usd_per_day is not None or self.usd_per_month is not None

    @model_validator(mode="after")
    def _consistent(self) -> Limit:
        numbers = (
            self.requests_per_minute,
            self.tokens_per_minute,
            self.input_tokens_per_minute,
            self.output_tokens_per_minute,
            self.concurrent_requests,
            self.usd_per_day,
            self.usd_per_month,
        )
        if all(n is None for n in numbers):
            raise ValueError(f"limit {self.name!r} of {self.policy}: sets no limit")
        if self.on_budget_spent == "reroute" and not self.reroute_to:
            raise ValueError(f"limit {self.name!r} of {self.policy}: onBudgetSpent reroute needs rerouteTo")
        return self


class Denial(_Frozen):
    """Why something is out of this workload's reach: which policy says so, and in what words."""

    policy: str  # "ModelPolicy team-a/eu-only" or "ClusterModelPolicy org-baseline"
    reason: str


class RouteDenial(_Frozen):
    model: str  # the route's model name: requests for it are refused
    denial: Denial


class BackendDenial(_Frozen):
    provider: str
    model: str  # the upstream model
    data_classes: Annotated[tuple[DataClass, ...], Field(min_length=1)]  # the classes it may not carry
    denial: Denial

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


class RedactionPattern(_Frozen):
    name: Annotated[str, Field(pattern=REDACTION_NAME)]
    regex: Annotated[str, Field(min_length=1, max_length=REDACTION_REGEX_MAX)]

    @model_validator(mode="after")
    def _usable(self) -> RedactionPattern:
        if self.name in REDACTION_KINDS:
            raise ValueError(f"redact pattern name {self.name!r} is a built-in kind; choose another name")
        check_redaction_regex(self.name, self.regex)
        return self


class Redaction(_Frozen):
    """What is masked before a request goes to a backend a residency rule would otherwise deny."""

    kinds: tuple[RedactionKind, ...] | None = None  # None: every built-in kind; (): custom patterns only
    patterns: tuple[RedactionPattern, ...] = ()
    restore: bool = True  # False: the app gets the placeholders, never the values

    @model_validator(mode="after")
    def _unique_names(self) -> Redaction:
        names = [p.name for p in self.patterns]
        if len(names) != len(set(names)):
            raise ValueError(f"redact pattern names must be unique, got {names}")
        if self.kinds == () and not self.patterns:
            raise ValueError("redact masks nothing: give kinds or patterns")
        return self


class BackendRedaction(_Frozen):
    """A backend that data of some classes may reach only masked (instead of being denied it)."""

    provider: str
    model: str  # the upstream model
    data_classes: Annotated[tuple[DataClass, ...], Field(min_length=1)]
    policy: str  # "ModelPolicy team-a/eu-only", as in Denial.policy
    redaction: Redaction

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


def merge_redactions(redactions: Iterable[Redaction]) -> Redaction:
    """The strictest of several redactions of one backend: every kind and pattern any of them masks
    (two patterns of one name mask what either matches), restored only if all of them restore."""
    kinds: set[str] | None = set()
    patterns: dict[str, str] = {}
    restore = True
    for redaction in redactions:
        if redaction.kinds is None:
            kinds = None
        elif kinds is not None:
            kinds.update(redaction.kinds)
        for pattern in redaction.patterns:
            known = patterns.get(pattern.name)
            patterns[pattern.name] = (
                pattern.regex if known in (None, pattern.regex) else f"(?:{known})|(?:{pattern.regex})"
            )
        restore = restore and redaction.restore
    return Redaction.model_validate(
        {
            "kinds": None if kinds is None else tuple(k for k in REDACTION_KINDS if k in kinds),
            "patterns": tuple({"name": name, "regex": regex} for name, regex in patterns.items()),
            "restore": restore,
        }
    )


class Guardrail(_Frozen):
    """An HTTP service a policy asks about a request's text before it goes out, and about its answer.

    `kind: modelway`: POST {phase, texts, model, route, workload} -> {decision: allow|deny|replace,
    reason, texts}; `kind: openai-moderation`: POST {input: texts} -> {results: [{flagged, categories}]}
    (OpenAI's /v1/moderations), any flagged result a deny. Answered late or not at all, `failure_mode`
    decides: open lets the request on, closed refuses it (503).
    """

    name: Annotated[str, Field(pattern=GUARDRAIL_NAME, max_length=63)]
    policy: str = ""  # the policy that names it, for the audit log
    url: Annotated[str, Field(max_length=2048)]
    kind: GuardrailKind = "modelway"
    phases: Annotated[tuple[GuardrailPhase, ...], Field(min_length=1, max_length=2)] = ("request", "response")
    timeout_ms: Annotated[int, Field(ge=1, le=GUARDRAIL_TIMEOUT_MS_MAX)] = 500
    failure_mode: Literal["open", "closed"] = "closed"
    data_classes: tuple[DataClass, ...] | None = None  # None: every class
    routes: tuple[Annotated[str, Field(min_length=1, max_length=253)], ...] | None = None  # globs; None: all
    # Streams: a check when this many new characters arrived (or a sentence ended past a quarter of it),
    # on the last `stream_window_chars` already checked plus the new ones.
    stream_check_chars: Annotated[int, Field(ge=16, le=65_536)] = 400
    stream_window_chars: Annotated[int, Field(ge=0, le=65_536)] = 800

    @field_validator("url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        return check_guardrail_url(url)


class Policy(_Frozen):
    """What the workload's ModelPolicies allow it, compiled by the controller for this workload.

    The sidecar never evaluates policies itself: it classifies each request, then
    drops the backends denied for that class. The empty default allows everything.
    """

    workload: str = ""  # "<namespace>/<serviceaccount>", as the controller verified it
    policies: tuple[str, ...] = ()  # the policies that apply, for the audit log
    default_class: DataClass = "internal"  # the floor: a request may raise its class, never go below
    detect_personal_data: bool = False  # raise requests whose prompt holds personal data to `personal`
    denied_routes: tuple[RouteDenial, ...] = ()
    denied_backends: tuple[BackendDenial, ...] = ()
    # Backends some classes may reach only masked; a denial of the same backend and class wins.
    redacted_backends: tuple[BackendRedaction, ...] = ()
    # Every limit of every policy that binds the workload; a request must pass all that bind it.
    limits: tuple[Limit, ...] = ()
    # Every guardrail of every policy that binds the workload, in the policies' order.
    guardrails: tuple[Guardrail, ...] = ()

    @model_validator(mode="after")
    def _unique_limit_keys(self) -> Policy:
        keys = [limit.key for limit in self.limits]
        if len(keys) != len(set(keys)):
            raise ValueError("limit keys must be unique")
        return self
