"""The mixture sequential probability ratio test (mSPRT) on a difference between two arms.

Johari, Koomen, Pekelis and Walsh, "Always Valid Inference: Continuous Monitoring of A/B
Tests" (Operations Research, 2022). The difference estimate D (arm minus control) is treated
as normal with mean theta and variance V = var_arm / n_arm + var_control / n_control (the
plug-in variances of the arms). Against H0: theta = theta0, the likelihood ratio mixed over
theta ~ N(theta0, tau^2) is

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 (D - theta0)^2 / (2 V (V + tau^2)))

With balanced arms of n each and a common variance s^2 (V = 2 s^2 / n) this is the paper's
two-sample formula. Lambda is a nonnegative martingale under H0 in the information time 1/V,
so by Ville's inequality P(Lambda ever reaches 1/alpha) <= alpha however often it is read:
that is why the experiment may be looked at after every request. 1/Lambda (its running
minimum over looks) is the always-valid p-value, and the thetas not rejected at level alpha
form the confidence sequence

    |theta - D| < sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)))

which covers the true difference at every look at once with probability 1 - alpha.

tau is the minimum detectable effect: for a true difference delta, the tau that makes Lambda
largest at the moment it could first cross is sqrt(delta^2 - V), about delta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from controller.experiments.counts import MeanStats, ProportionStats


@dataclass(frozen=True, slots=True)
class Difference:
    """An estimated difference (arm minus control) and its estimated variance."""

    estimate: float
    variance: float


def mean_difference(arm: MeanStats, control: MeanStats) -> Difference:
    """Difference of means with each arm's own sample variance (Welch's plug-in)."""
    return Difference(
        arm.mean - control.mean, arm.variance / max(arm.count, 1) + control.variance / max(control.count, 1)
    )


def proportion_difference(arm_hits: int, arm_count: int, control_hits: int, control_count: int) -> Difference:
    """Difference of proportions (hits / count, arm minus control).

    The variance uses (hits + 1) / (count + 2) per arm (Agresti and Caffo's one success and one
    failure added), so an arm with no hit yet does not claim zero variance and a certain answer.
    """
    rate_arm = arm_hits / arm_count if arm_count else 0.0
    rate_control = control_hits / control_count if control_count else 0.0
    smooth_arm = (arm_hits + 1) / (arm_count + 2)
    smooth_control = (control_hits + 1) / (control_count + 2)
    variance = smooth_arm * (1 - smooth_arm) / max(arm_count, 1) + smooth_control * (1 - smooth_control) / max(
        control_count, 1
    )
    return Difference(rate_arm - rate_control, variance)


def failure_rate_difference(arm: ProportionStats, control: ProportionStats) -> Difference:
    return proportion_difference(arm.failures, arm.count, control.failures, control.count)


def log_likelihood_ratio(diff: Difference, *, tau: float, theta0: float = 0.0) -> float:
    """log Lambda of the mixture N(theta0, tau^2) against H0: theta = theta0."""
    if tau <= 0:
        raise ValueError("tau must be above 0")
    v, t2 = diff.variance, tau * tau
    gap = diff.estimate - theta0
    if v <= 0:  # no spread at all: the estimate is the difference
        return 0.0 if gap == 0 else math.inf
    return 0.5 * math.log(v / (v + t2)) + t2 * gap * gap / (2 * v * (v + t2))


def p_value(diff: Difference, *, tau: float, theta0: float = 0.0) -> float:
    """1 / Lambda capped at 1: the always-valid p-value at this look (take the minimum over looks)."""
    return math.exp(-max(log_likelihood_ratio(diff, tau=tau, theta0=theta0), 0.0))


def half_width(variance: float, *, tau: float, alpha: float) -> float:
    """Half the width of the confidence sequence at level 1 - alpha around the estimate."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    if variance <= 0:
        return 0.0
    t2 = tau * tau
    return math.sqrt(variance * (variance + t2) / t2 * (2 * math.log(1 / alpha) + math.log((variance + t2) / variance)))


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    def intersect(self, other: Interval | None) -> Interval:
        """This interval narrowed by an earlier one; an empty meet (a miss, rarer than alpha) keeps this one."""
        if other is None:
            return self
        low, high = max(self.low, other.low), min(self.high, other.high)
        return Interval(low, high) if low <= high else self


def confidence_sequence(diff: Difference, *, tau: float, alpha: float) -> Interval:
    width = half_width(diff.variance, tau=tau, alpha=alpha)
    return Interval(diff.estimate - width, diff.estimate + width)
