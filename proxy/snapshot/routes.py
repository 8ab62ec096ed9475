"""Routes: the model names apps call, their rules, backends, retries, timeouts and experiments."""

from __future__ import annotations

from proxy.snapshot.base import Frozen, RetryOn, check_field, check_length, check_range
from proxy.snapshot.checks import check_regex


class Backend(Frozen, frozen=True, kw_only=True):
    provider: str
    model: str
    weight: int = 1

    def __post_init__(self) -> None:
        check_length("model", self.model)
        check_range("weight", self.weight, ge=0)

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


class HeaderMatch(Frozen, frozen=True, kw_only=True):
    """Matches when the header is present and, if given, equals `value` or matches `regex`."""

    name: str
    value: str | None = None
    regex: str | None = None

    def __post_init__(self) -> None:
        check_length("name", self.name)
        check_field("regex", check_regex, self.regex)


class TokenRange(Frozen, frozen=True, kw_only=True):
    """Matches a request whose estimated input tokens are within [min, max] (either end open)."""

    min: int | None = None
    max: int | None = None

    def __post_init__(self) -> None:
        check_range("min", self.min, ge=0)
        check_range("max", self.max, ge=0)
        if self.min is None and self.max is None:
            raise ValueError("inputTokens needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"inputTokens: min {self.min} is above max {self.max}")

    def holds(self, tokens: int) -> bool:
        return (self.min is None or tokens >= self.min) and (self.max is None or tokens <= self.max)


class Retry(Frozen, frozen=True, kw_only=True):
    # Attempts per backend, the first one included.
    attempts: int = 2
    retry_on: tuple[RetryOn, ...] = ("connect-error", "timeout", "429", "5xx")
    backoff_base_seconds: float = 0.1
    backoff_max_seconds: float = 2.0
    # A Retry-After longer than this is not waited for: the next backend is tried instead.
    max_retry_after_seconds: float = 5.0

    def __post_init__(self) -> None:
        check_range("attempts", self.attempts, ge=1, le=10)
        check_range("backoffBaseSeconds", self.backoff_base_seconds, ge=0)
        check_range("backoffMaxSeconds", self.backoff_max_seconds, ge=0)
        check_range("maxRetryAfterSeconds", self.max_retry_after_seconds, ge=0)


class Timeouts(Frozen, frozen=True, kw_only=True):
    # The whole request, all attempts included.
    total_seconds: float = 120.0
    # Streams only: from sending the request to the first content event.
    first_token_seconds: float | None = None
    connect_seconds: float = 5.0

    def __post_init__(self) -> None:
        check_range("totalSeconds", self.total_seconds, gt=0)
        check_range("firstTokenSeconds", self.first_token_seconds, gt=0)
        check_range("connectSeconds", self.connect_seconds, gt=0)


class Arm(Frozen, frozen=True, kw_only=True):
    """One arm of an experiment: its share of the rule's requests and the backends that serve it."""

    name: str
    weight: int = 1
    backends: tuple[Backend, ...]

    def __post_init__(self) -> None:
        check_length("name", self.name, high=63)
        check_range("weight", self.weight, ge=0)
        check_length("backends", self.backends)
        if not any(b.weight > 0 for b in self.backends):
            raise ValueError(f"arm {self.name!r}: at least one backend needs a weight above 0")


class Experiment(Frozen, frozen=True, kw_only=True):
    """A rule's traffic split into arms (the first is the control), each counted apart.

    `name` identifies the experiment to the controller ("<namespace>/<route>/<rule>"); with
    `sticky_header`, a request carrying that header goes to the arm its value hashes to (the
    same on every sidecar), others by weight."""

    name: str
    arms: tuple[Arm, ...]
    sticky_header: str | None = None

    def __post_init__(self) -> None:
        check_length("name", self.name, high=400)
        check_length("arms", self.arms, low=2, high=16)
        check_length("stickyHeader", self.sticky_header, high=256)
        names = [a.name for a in self.arms]
        if len(names) != len(set(names)):
            raise ValueError(f"experiment {self.name!r}: arm names must be unique, got {names}")
        if not any(a.weight > 0 for a in self.arms):
            raise ValueError(f"experiment {self.name!r}: at least one arm needs a weight above 0")


class Rule(Frozen, frozen=True, kw_only=True):
    name: str = "default"
    match_headers: tuple[HeaderMatch, ...] = ()
    # The request's estimated input tokens (`proxy.routing.window`) must be within this range.
    match_input_tokens: TokenRange | None = None
    # With an experiment: every arm's backends (what policy and provider references see); each
    # request uses only its arm's.
    backends: tuple[Backend, ...]
    fallbacks: tuple[Backend, ...] = ()
    retry: Retry = Retry()
    timeouts: Timeouts = Timeouts()
    experiment: Experiment | None = None

    def __post_init__(self) -> None:
        check_length("name", self.name)
        check_length("backends", self.backends)
        if not any(b.weight > 0 for b in self.backends):
            raise ValueError(f"rule {self.name!r}: at least one backend needs a weight above 0")
        if self.experiment is not None:
            keys = {b.key for b in self.backends}
            for arm in self.experiment.arms:
                missing = [b.key for b in arm.backends if b.key not in keys]
                if missing:
                    raise ValueError(f"rule {self.name!r}: arm {arm.name!r} backends {missing} are not rule backends")


class Route(Frozen, frozen=True, kw_only=True):
    """What apps call: the `model` name they send, and how it is served."""

    name: str
    model: str
    rules: tuple[Rule, ...]

    def __post_init__(self) -> None:
        check_length("name", self.name)
        check_length("model", self.model)
        check_length("rules", self.rules)
        names = [r.name for r in self.rules]
        if len(names) != len(set(names)):
            raise ValueError(f"route {self.name!r}: rule names must be unique, got {names}")
