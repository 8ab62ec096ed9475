"""What a workload's policies compile to: denials, redactions, limits and guardrails."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from proxy.snapshot.base import (
    DataClass,
    Frozen,
    check_count,
    check_each_length,
    check_field,
    check_length,
    check_pattern,
    check_range,
)
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
USD_MAX = 1_000_000_000
_REDACTION_NAME = re.compile(REDACTION_NAME)
_GUARDRAIL_NAME = re.compile(GUARDRAIL_NAME)


class RerouteBackend(Frozen, frozen=True, kw_only=True):
    provider: str  # a compiled provider name, "<namespace>.<name>"
    model: str

    def __post_init__(self) -> None:
        check_length("provider", self.provider)
        check_length("model", self.model)


class Limit(Frozen, frozen=True, kw_only=True):
    """One limit of one policy, compiled for this workload: its counter key names what is counted together.

    The key carries the scope value (`.../workload/<ns>/<sa>`, `.../namespace/<ns>` or `.../policy`), so
    sidecars of the same scope share one counter and others do not; the sidecar never works it out."""

    policy: str  # "ModelPolicy team-a/caps" or "ClusterModelPolicy org-caps", as in Denial.policy
    name: str
    key: str
    routes: tuple[str, ...] | None = None  # ModelRoute names; None: every route
    providers: tuple[str, ...] | None = None  # ModelProvider names; None: every provider
    models: tuple[str, ...] | None = None  # upstream model names; None: every model
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None  # input and output together
    input_tokens_per_minute: int | None = None
    output_tokens_per_minute: int | None = None
    concurrent_requests: int | None = None
    usd_per_day: float | None = None  # UTC days
    usd_per_month: float | None = None  # UTC calendar months
    on_budget_spent: BudgetAction = "refuse"
    reroute_to: tuple[RerouteBackend, ...] = ()
    failure_mode: FailureMode = "open"

    @property
    def has_budget(self) -> bool:
        return self.usd_per_day is not None or self.usd_per_month is not None

    def __post_init__(self) -> None:
        check_length("name", self.name)
        check_length("key", self.key)
        for field, globs in (("routes", self.routes), ("providers", self.providers), ("models", self.models)):
            check_each_length(field, globs)
        check_count("requestsPerMinute", self.requests_per_minute)
        check_count("tokensPerMinute", self.tokens_per_minute)
        check_count("inputTokensPerMinute", self.input_tokens_per_minute)
        check_count("outputTokensPerMinute", self.output_tokens_per_minute)
        check_count("concurrentRequests", self.concurrent_requests)
        check_range("usdPerDay", self.usd_per_day, ge=0, le=USD_MAX)
        check_range("usdPerMonth", self.usd_per_month, ge=0, le=USD_MAX)
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


class Denial(Frozen, frozen=True, kw_only=True):
    """Why something is out of this workload's reach: which policy says so, and in what words."""

    policy: str  # "ModelPolicy team-a/eu-only" or "ClusterModelPolicy org-baseline"
    reason: str


class RouteDenial(Frozen, frozen=True, kw_only=True):
    model: str  # the route's model name: requests for it are refused
    denial: Denial


class BackendDenial(Frozen, frozen=True, kw_only=True):
    provider: str
    model: str  # the upstream model
    data_classes: tuple[DataClass, ...]  # the classes it may not carry
    denial: Denial

    def __post_init__(self) -> None:
        check_length("dataClasses", self.data_classes)

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


class RedactionPattern(Frozen, frozen=True, kw_only=True):
    name: str
    regex: str

    def __post_init__(self) -> None:
        check_pattern("name", self.name, _REDACTION_NAME)
        check_length("regex", self.regex, high=REDACTION_REGEX_MAX)
        if self.name in REDACTION_KINDS:
            raise ValueError(f"redact pattern name {self.name!r} is a built-in kind; choose another name")
        check_redaction_regex(self.name, self.regex)


class Redaction(Frozen, frozen=True, kw_only=True):
    """What is masked before a request goes to a backend a residency rule would otherwise deny."""

    kinds: tuple[RedactionKind, ...] | None = None  # None: every built-in kind; (): custom patterns only
    patterns: tuple[RedactionPattern, ...] = ()
    restore: bool = True  # False: the app gets the placeholders, never the values

    def __post_init__(self) -> None:
        names = [p.name for p in self.patterns]
        if len(names) != len(set(names)):
            raise ValueError(f"redact pattern names must be unique, got {names}")
        if self.kinds == () and not self.patterns:
            raise ValueError("redact masks nothing: give kinds or patterns")


class BackendRedaction(Frozen, frozen=True, kw_only=True):
    """A backend that data of some classes may reach only masked (instead of being denied it)."""

    provider: str
    model: str  # the upstream model
    data_classes: tuple[DataClass, ...]
    policy: str  # "ModelPolicy team-a/eu-only", as in Denial.policy
    redaction: Redaction

    def __post_init__(self) -> None:
        check_length("dataClasses", self.data_classes)

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
    return Redaction(
        kinds=None if kinds is None else tuple(k for k in REDACTION_KINDS if k in kinds),
        patterns=tuple(RedactionPattern(name=name, regex=regex) for name, regex in patterns.items()),
        restore=restore,
    )


class Guardrail(Frozen, frozen=True, kw_only=True):
    """An HTTP service a policy asks about a request's text before it goes out, and about its answer.

    `kind: modelway`: POST {phase, texts, model, route, workload} -> {decision: allow|deny|replace,
    reason, texts}; `kind: openai-moderation`: POST {input: texts} -> {results: [{flagged, categories}]}
    (OpenAI's /v1/moderations), any flagged result a deny. Answered late or not at all, `failure_mode`
    decides: open lets the request on, closed refuses it (503).
    """

    name: str
    policy: str = ""  # the policy that names it, for the audit log
    url: str
    kind: GuardrailKind = "modelway"
    phases: tuple[GuardrailPhase, ...] = ("request", "response")
    timeout_ms: int = 500
    failure_mode: Literal["open", "closed"] = "closed"
    data_classes: tuple[DataClass, ...] | None = None  # None: every class
    routes: tuple[str, ...] | None = None  # globs; None: all
    # Streams: a check when this many new characters arrived (or a sentence ended past a quarter of it),
    # on the last `stream_window_chars` already checked plus the new ones.
    stream_check_chars: int = 400
    stream_window_chars: int = 800

    def __post_init__(self) -> None:
        check_length("name", self.name, high=63)
        check_pattern("name", self.name, _GUARDRAIL_NAME)
        check_length("url", self.url, low=0, high=2048)
        check_field("url", check_guardrail_url, self.url)
        check_length("phases", self.phases, high=2)
        check_range("timeoutMs", self.timeout_ms, ge=1, le=GUARDRAIL_TIMEOUT_MS_MAX)
        check_each_length("routes", self.routes, high=253)
        check_range("streamCheckChars", self.stream_check_chars, ge=16, le=65_536)
        check_range("streamWindowChars", self.stream_window_chars, ge=0, le=65_536)


class Policy(Frozen, frozen=True, kw_only=True):
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

    def __post_init__(self) -> None:
        keys = [limit.key for limit in self.limits]
        if len(keys) != len(set(keys)):
            raise ValueError("limit keys must be unique")
