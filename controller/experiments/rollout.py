"""A gradual rollout's steps: when to move the candidate's share up, when to roll back. Pure.

A rollout holds each step (the candidate arm's share of traffic, in percent) for at least a
pause, and moves on only when the guardrails show no breach and both arms have the minimum
sample on every guarded metric; a breach at any look rolls back at once (all traffic to the
control). After the last step's pause the candidate takes all the traffic (RolledOut). The
guardrails read the counts summed since the rollout began: a share that changes on a clock (not
with the outcomes) leaves each request's outcome as it was, so the always-valid interval of
`guardrail_breach` still holds however often it is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from controller.experiments.counts import ArmStats
from controller.experiments.decide import Breach, Guardrail, guardrail_breach, samples


class RolloutState(StrEnum):
    ROLLING_OUT = "RollingOut"
    ROLLED_OUT = "RolledOut"
    ROLLED_BACK = "RolledBack"


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutPlan:
    """The spec's rollout. `steps` in percent, increasing, 1..100."""

    steps: tuple[int, ...]
    pause_seconds: float
    guardrails: tuple[Guardrail, ...]
    min_samples: int
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if not self.steps or any(not 1 <= s <= 100 for s in self.steps):
            raise ValueError("rollout steps must be 1 to 100")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError("rollout steps must increase")
        if not self.pause_seconds > 0:
            raise ValueError("a rollout's pause must be above 0")


@dataclass(frozen=True, slots=True)
class RolloutProgress:
    state: RolloutState
    step: int  # index into the plan's steps
    step_started: float  # seconds since the epoch
    breach: Breach | None = None

    @property
    def done(self) -> bool:
        return self.state is not RolloutState.ROLLING_OUT


def start(now: float) -> RolloutProgress:
    return RolloutProgress(RolloutState.ROLLING_OUT, 0, now)


def candidate_share(plan: RolloutPlan, progress: RolloutProgress) -> int:
    """The candidate's share of traffic in percent."""
    if progress.state is RolloutState.ROLLED_BACK:
        return 0
    if progress.state is RolloutState.ROLLED_OUT:
        return 100
    return plan.steps[min(progress.step, len(plan.steps) - 1)]


def enough_sample(plan: RolloutPlan, arms: Mapping[str, ArmStats]) -> bool:
    return all(samples(stats, g.metric) >= plan.min_samples for g in plan.guardrails for stats in arms.values())


def advance(
    plan: RolloutPlan, progress: RolloutProgress, arms: Mapping[str, ArmStats], *, control: str, now: float
) -> RolloutProgress:
    """The rollout after one look at the counts. A finished rollout stays as it is."""
    if progress.done:
        return progress
    breach = guardrail_breach(plan.guardrails, arms, control=control, alpha=plan.alpha, min_samples=plan.min_samples)
    if breach is not None:
        return RolloutProgress(RolloutState.ROLLED_BACK, progress.step, progress.step_started, breach)
    if now - progress.step_started < plan.pause_seconds or not enough_sample(plan, arms):
        return progress
    if progress.step + 1 >= len(plan.steps):
        return replace(progress, state=RolloutState.ROLLED_OUT, step_started=now)
    return RolloutProgress(RolloutState.ROLLING_OUT, progress.step + 1, now)
