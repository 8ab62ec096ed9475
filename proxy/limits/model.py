"""The facts the limiter works with: counters, what a request needs, and what was decided."""

from __future__ import annotations

from typing import Literal

import msgspec

from proxy.snapshot import FailureMode, RerouteBackend

# What a counter counts. Rates are per minute; `usd_*` are budgets in micro-USD per UTC day or month.
Measure = Literal["requests", "tokens", "input_tokens", "output_tokens", "concurrency", "usd_day", "usd_month"]
RATES: frozenset[Measure] = frozenset({"requests", "tokens", "input_tokens", "output_tokens"})
BUDGETS: frozenset[Measure] = frozenset({"usd_day", "usd_month"})
MICRO_USD = 1_000_000


class Counter(msgspec.Struct, frozen=True):
    """One number a request is checked against and charged to."""

    key: str  # unique: the limit's (or capacity's) key and the measure, e.g. ".../workload/team-a/bot/tokens"
    measure: Measure
    limit: int  # per minute (rates), at once (concurrency), or micro-USD per window (budgets)
    owner: str  # "ModelPolicy team-a/caps", "ClusterModelPolicy org", "ModelProvider team-a/openai"
    name: str  # the limit's name, or "capacity <model glob>"
    failure_mode: FailureMode
    capacity: bool = False  # a provider's quota: the caller tries the next backend
    reroute_to: tuple[RerouteBackend, ...] = ()  # budgets of a limit that reroutes when spent


class Demand(msgspec.Struct, frozen=True):
    """What one request reserves before the call, and the prices that turn its usage into micro-USD."""

    input_tokens: int
    output_tokens: int
    input_micro_usd_per_token: float = 0.0  # = USD per million tokens
    output_micro_usd_per_token: float = 0.0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def micro_usd(self, input_tokens: int | None = None, output_tokens: int | None = None) -> int:
        """The cost in micro-USD, rounded up (of these token counts, or of the reservation)."""
        i = self.input_tokens if input_tokens is None else input_tokens
        o = self.output_tokens if output_tokens is None else output_tokens
        return round_up(i * self.input_micro_usd_per_token + o * self.output_micro_usd_per_token)

    def cost(self, measure: Measure) -> int:
        return amount(measure, self, self.input_tokens, self.output_tokens)


class Usage(msgspec.Struct, frozen=True):
    """What the answer actually used; `micro_usd` is what it cost when the answer was priced (the
    span's cost, prompt-cache reads and writes at their own prices), else budgets price the tokens."""

    input_tokens: int
    output_tokens: int
    micro_usd: int | None = None


def amount(measure: Measure, demand: Demand, input_tokens: int, output_tokens: int) -> int:
    """How much of `measure` a request with these token counts takes."""
    if measure in ("requests", "concurrency"):
        return 1
    if measure == "tokens":
        return input_tokens + output_tokens
    if measure == "input_tokens":
        return input_tokens
    if measure == "output_tokens":
        return output_tokens
    return demand.micro_usd(input_tokens, output_tokens)


def charged(measure: Measure, demand: Demand, usage: Usage) -> int:
    """How much of `measure` a request that used `usage` is charged when it settles."""
    if usage.micro_usd is not None and measure in BUDGETS:
        return usage.micro_usd
    return amount(measure, demand, usage.input_tokens, usage.output_tokens)


def round_up(value: float) -> int:
    whole = int(value)
    return whole + 1 if value > whole else whole


class CounterState(msgspec.Struct, frozen=True):
    """Where one counter stands after the check (after the charge when admitted)."""

    counter: Counter
    ok: bool
    remaining: int  # what is left of the limit
    reset_seconds: float  # until the counter is back to its full limit (budgets: the window's end)
    retry_after_seconds: float = 0.0  # refused: until this request could pass
    unreachable: bool = False  # the shared store did not answer: decided by the failure mode


class Reservation(msgspec.Struct, frozen=True):
    """What was charged, to settle once the answer's usage is known."""

    lease: str
    counters: tuple[Counter, ...]  # the counters charged (none when every one was skipped)
    windows: tuple[str, ...]  # per counter: the budget window charged ("" for the others)
    demand: Demand


class Decision(msgspec.Struct, frozen=True):
    allowed: bool
    states: tuple[CounterState, ...]
    reservation: Reservation | None  # None when refused, or when nothing was counted
    refusal: CounterState | None = None  # refused: the counter that holds it back longest
    reroute_to: tuple[RerouteBackend, ...] = ()  # refused only by budgets that reroute: go there instead
    store_unreachable: bool = False

    @property
    def capacity_refused(self) -> bool:
        """Refused by a provider's quota alone: the next backend may still take the request."""
        return not self.allowed and all(s.counter.capacity for s in self.states if not s.ok)


# A request no counter binds.
UNBOUND = Decision(allowed=True, states=(), reservation=None)
