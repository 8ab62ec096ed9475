"""An experiment's decision from its arms' counts: Running, Winner, NoDifference, guardrail or time.

Pure and restart-safe: the decision depends on the counts, the time elapsed and the previous
decision (read back from the route's status), nothing else. A decided experiment stays decided.

- Primary metric: each arm against the control with the mSPRT (msprt.py). With k arms there are
  k - 1 comparisons, each at alpha / (k - 1) (Bonferroni), so the chance of any false winner
  stays at or under alpha; the p-values shown are multiplied by k - 1 to match. Each
  comparison's verdict is read from its confidence sequence: it excludes 0 (Better or Worse),
  or it lies inside (-mde, +mde) (NoDifference: no difference as large as the minimum
  detectable effect), or neither yet (Running).
- No verdict before both arms of a comparison have `min_samples` values of the metric: the
  normal approximation behind the test needs them (skewed latencies, rare errors).
- Guardrails: an arm whose metric is worse than the control's by more than `margin`, shown by
  the same confidence sequence (its whole interval beyond the margin), stops the experiment at
  once. The guardrail level is split over arms and guardrails (Bonferroni); reading one side
  of a two-sided sequence at that level is conservative.
- Time: at `max_duration_seconds` the experiment stops with the best Better arm as the winner
  if there is one, else MaxDurationReached.
- The winner among several Better arms is the one with the largest estimated improvement; the
  test shows each beats the control, not that it beats the other winners.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from controller.experiments.counts import ArmStats, BadCounts, MeanStats
from controller.experiments.msprt import (
    Difference,
    Interval,
    confidence_sequence,
    failure_rate_difference,
    mean_difference,
    p_value,
)

# Below this the normal approximation is not worth trusting even for well-behaved metrics.
MIN_SAMPLES_FLOOR = 30


class Metric(StrEnum):
    ERROR_RATE = "errorRate"
    LATENCY = "latency"
    TIME_TO_FIRST_TOKEN = "timeToFirstToken"
    COST = "cost"
    QUALITY = "quality"

    @property
    def higher_is_better(self) -> bool:
        return self is Metric.QUALITY


class State(StrEnum):
    RUNNING = "Running"
    WINNER = "Winner"
    NO_DIFFERENCE = "NoDifference"
    STOPPED_BY_GUARDRAIL = "StoppedByGuardrail"
    MAX_DURATION_REACHED = "MaxDurationReached"


class Verdict(StrEnum):
    RUNNING = "Running"
    BETTER = "Better"
    WORSE = "Worse"
    NO_DIFFERENCE = "NoDifference"


@dataclass(frozen=True, slots=True)
class Guardrail:
    """Stop when an arm's `metric` is worse than the control's by more than `margin` (the metric's unit)."""

    metric: Metric
    margin: float

    def __post_init__(self) -> None:
        if not self.margin > 0:
            raise ValueError("a guardrail's margin must be above 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class SequentialSpec:
    """What a rule's experiment asks for. `mde` is absolute, in the metric's unit."""

    metric: Metric
    mde: float
    alpha: float = 0.05
    min_samples: int = 200
    max_duration_seconds: float | None = None
    guardrails: tuple[Guardrail, ...] = ()
    guardrail_alpha: float = 0.05
    guardrail_min_samples: int | None = None  # default: min_samples

    def __post_init__(self) -> None:
        if not self.mde > 0:
            raise ValueError("the minimum detectable effect must be above 0")
        if not (0 < self.alpha < 1 and 0 < self.guardrail_alpha < 1):
            raise ValueError("alpha must be between 0 and 1")
        if min(self.min_samples, self.guardrail_samples) < MIN_SAMPLES_FLOOR:
            raise ValueError(f"the minimum sample per arm must be at least {MIN_SAMPLES_FLOOR}")
        if self.max_duration_seconds is not None and not self.max_duration_seconds > 0:
            raise ValueError("the maximum duration must be above 0")

    @property
    def guardrail_samples(self) -> int:
        return self.min_samples if self.guardrail_min_samples is None else self.guardrail_min_samples


def samples(stats: ArmStats, metric: Metric) -> int:
    return stats.requests.count if metric is Metric.ERROR_RATE else _means(stats, metric).count


def difference(metric: Metric, arm: ArmStats, control: ArmStats) -> Difference:
    """The metric's difference, arm minus control."""
    if metric is Metric.ERROR_RATE:
        return failure_rate_difference(arm.requests, control.requests)
    return mean_difference(_means(arm, metric), _means(control, metric))


def _means(stats: ArmStats, metric: Metric) -> MeanStats:
    if metric is Metric.LATENCY:
        return stats.latency
    if metric is Metric.TIME_TO_FIRST_TOKEN:
        return stats.time_to_first_token
    if metric is Metric.COST:
        return stats.cost
    return stats.quality


@dataclass(frozen=True, slots=True)
class Comparison:
    """One arm against the control on the primary metric, at the comparison's level."""

    arm: str
    estimate: float  # arm minus control
    interval: Interval  # confidence sequence, narrowed by earlier looks
    p_value: float  # always-valid (the smallest over looks), times the number of comparisons
    samples: int
    control_samples: int
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "estimate": self.estimate,
            "low": self.interval.low,
            "high": self.interval.high,
            "pValue": self.p_value,
            "samples": self.samples,
            "controlSamples": self.control_samples,
            "verdict": self.verdict.value,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Comparison:
        try:
            return cls(
                arm=str(raw["arm"]),
                estimate=float(raw["estimate"]),
                interval=Interval(float(raw["low"]), float(raw["high"])),
                p_value=float(raw["pValue"]),
                samples=int(raw["samples"]),
                control_samples=int(raw["controlSamples"]),
                verdict=Verdict(raw["verdict"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise BadCounts(f"not a comparison: {err}") from None


@dataclass(frozen=True, slots=True)
class Breach:
    """A guardrail crossed: `arm` is worse than the control by more than `margin` on `metric`."""

    arm: str
    metric: Metric
    margin: float
    estimate: float  # arm minus control
    interval: Interval

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "metric": self.metric.value,
            "margin": self.margin,
            "estimate": self.estimate,
            "low": self.interval.low,
            "high": self.interval.high,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Breach:
        try:
            return cls(
                arm=str(raw["arm"]),
                metric=Metric(raw["metric"]),
                margin=float(raw["margin"]),
                estimate=float(raw["estimate"]),
                interval=Interval(float(raw["low"]), float(raw["high"])),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise BadCounts(f"not a guardrail breach: {err}") from None


@dataclass(frozen=True, slots=True)
class Decision:
    state: State
    winner: str | None
    comparisons: tuple[Comparison, ...]
    breach: Breach | None = None

    @property
    def done(self) -> bool:
        return self.state is not State.RUNNING

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state.value, "comparisons": [c.to_dict() for c in self.comparisons]}
        if self.winner is not None:
            out["winner"] = self.winner
        if self.breach is not None:
            out["guardrail"] = self.breach.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: object) -> Decision:
        if not isinstance(raw, Mapping):
            raise BadCounts("a decision must be a mapping")
        try:
            state = State(raw["state"])
            comparisons = tuple(Comparison.from_dict(c) for c in raw.get("comparisons", ()))
        except (KeyError, TypeError, ValueError) as err:
            raise BadCounts(f"not a decision: {err}") from None
        winner = raw.get("winner")
        breach = Breach.from_dict(raw["guardrail"]) if raw.get("guardrail") is not None else None
        return cls(state, None if winner is None else str(winner), comparisons, breach)


def decide(
    spec: SequentialSpec,
    arms: Mapping[str, ArmStats],
    *,
    control: str,
    elapsed_seconds: float,
    previous: Decision | None = None,
) -> Decision:
    """The experiment's decision now. `arms` holds every arm (the control included), counted or not."""
    if control not in arms or len(arms) < 2:
        raise ValueError("an experiment needs a control and at least one other arm")
    if previous is not None and previous.done:
        return previous
    treatments = [arm for arm in arms if arm != control]
    earlier = {c.arm: c for c in previous.comparisons} if previous is not None else {}
    comparisons = tuple(
        _compare(spec, arm, arms[arm], arms[control], tests=len(treatments), earlier=earlier.get(arm))
        for arm in treatments
    )
    breach = guardrail_breach(
        spec.guardrails, arms, control=control, alpha=spec.guardrail_alpha, min_samples=spec.guardrail_samples
    )
    if breach is not None:
        return Decision(State.STOPPED_BY_GUARDRAIL, None, comparisons, breach)
    better = [c for c in comparisons if c.verdict is Verdict.BETTER]
    sign = 1.0 if spec.metric.higher_is_better else -1.0
    best = max(better, key=lambda c: sign * c.estimate).arm if better else None
    if all(c.verdict is not Verdict.RUNNING for c in comparisons):
        if best is not None:
            return Decision(State.WINNER, best, comparisons)
        if any(c.verdict is Verdict.WORSE for c in comparisons):
            return Decision(State.WINNER, control, comparisons)
        return Decision(State.NO_DIFFERENCE, None, comparisons)
    if spec.max_duration_seconds is not None and elapsed_seconds >= spec.max_duration_seconds:
        if best is not None:
            return Decision(State.WINNER, best, comparisons)
        return Decision(State.MAX_DURATION_REACHED, None, comparisons)
    return Decision(State.RUNNING, None, comparisons)


def _compare(
    spec: SequentialSpec, arm: str, stats: ArmStats, control: ArmStats, *, tests: int, earlier: Comparison | None
) -> Comparison:
    n_arm, n_control = samples(stats, spec.metric), samples(control, spec.metric)
    diff = difference(spec.metric, stats, control)
    interval = confidence_sequence(diff, tau=spec.mde, alpha=spec.alpha / tests)
    p = min(1.0, tests * p_value(diff, tau=spec.mde))  # Bonferroni-adjusted: compare with alpha itself
    enough = min(n_arm, n_control) >= spec.min_samples
    if not enough:  # shown, not decided on, and not carried into later looks
        return Comparison(arm, diff.estimate, interval, p, n_arm, n_control, Verdict.RUNNING)
    if earlier is not None and min(earlier.samples, earlier.control_samples) >= spec.min_samples:
        interval = interval.intersect(earlier.interval)
        p = min(p, earlier.p_value)
    higher = interval.low > 0
    if higher or interval.high < 0:
        verdict = Verdict.BETTER if higher == spec.metric.higher_is_better else Verdict.WORSE
    elif -spec.mde < interval.low and interval.high < spec.mde:
        verdict = Verdict.NO_DIFFERENCE
    else:
        verdict = Verdict.RUNNING
    return Comparison(arm, diff.estimate, interval, p, n_arm, n_control, verdict)


def guardrail_breach(
    guardrails: Sequence[Guardrail],
    arms: Mapping[str, ArmStats],
    *,
    control: str,
    alpha: float = 0.05,
    min_samples: int = MIN_SAMPLES_FLOOR,
) -> Breach | None:
    """The first arm shown worse than the control beyond a guardrail's margin, if any.

    On its own for a gradual rollout's step (guardrails, no primary metric); `decide` calls it
    too. alpha is split over arms and guardrails (Bonferroni).
    """
    return next(guardrail_breaches(guardrails, arms, control=control, alpha=alpha, min_samples=min_samples), None)


def guardrail_breaches(
    guardrails: Sequence[Guardrail],
    arms: Mapping[str, ArmStats],
    *,
    control: str,
    alpha: float = 0.05,
    min_samples: int = MIN_SAMPLES_FLOOR,
) -> Iterator[Breach]:
    """Every arm shown worse than the control beyond a guardrail's margin, each once (its first breach):
    an adaptive rule takes them all out of its split. alpha as in `guardrail_breach`."""
    treatments = [arm for arm in arms if arm != control]
    if not guardrails or not treatments:
        return
    alpha = alpha / (len(treatments) * len(guardrails))
    breached: set[str] = set()
    for guardrail in guardrails:
        for arm in treatments:
            stats, base = arms[arm], arms[control]
            if arm in breached or min(samples(stats, guardrail.metric), samples(base, guardrail.metric)) < min_samples:
                continue
            diff = difference(guardrail.metric, stats, base)
            interval = confidence_sequence(diff, tau=guardrail.margin, alpha=alpha)
            worse = (
                interval.high < -guardrail.margin
                if guardrail.metric.higher_is_better
                else interval.low > guardrail.margin
            )
            if worse:
                breached.add(arm)
                yield Breach(arm, guardrail.metric, guardrail.margin, diff.estimate, interval)
