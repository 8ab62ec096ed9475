"""The mSPRT's formulas against their definitions: the mixture likelihood ratio is the integral
it claims to be, the confidence sequence is exactly the set of differences the test keeps,
and it is wider than a fixed-horizon interval (the price of looking at any time)."""

from __future__ import annotations

import math

import pytest

from controller.experiments.counts import MeanStats, ProportionStats
from controller.experiments.msprt import (
    Difference,
    Interval,
    confidence_sequence,
    failure_rate_difference,
    half_width,
    log_likelihood_ratio,
    mean_difference,
    p_value,
)


def _mixture_by_quadrature(diff: Difference, tau: float, theta0: float) -> float:
    """The definition: E over theta ~ N(theta0, tau^2) of N(D; theta, V) / N(D; theta0, V)."""
    steps, span = 20000, 12 * tau
    h = 2 * span / steps
    total = 0.0
    for i in range(steps + 1):
        theta = theta0 - span + i * h
        prior = math.exp(-((theta - theta0) ** 2) / (2 * tau * tau)) / math.sqrt(2 * math.pi * tau * tau)
        ratio = math.exp((-((diff.estimate - theta) ** 2) + (diff.estimate - theta0) ** 2) / (2 * diff.variance))
        total += prior * ratio * (0.5 if i in (0, steps) else 1.0)
    return total * h


@pytest.mark.parametrize(
    ("estimate", "variance", "tau", "theta0"),
    [(0.03, 0.0001, 0.02, 0.0), (-0.01, 0.0004, 0.05, 0.0), (0.5, 0.04, 0.3, 0.1), (0.0, 0.01, 0.1, 0.0)],
)
def test_the_likelihood_ratio_is_the_normal_mixture_it_claims_to_be(estimate, variance, tau, theta0):
    diff = Difference(estimate, variance)
    assert math.exp(log_likelihood_ratio(diff, tau=tau, theta0=theta0)) == pytest.approx(
        _mixture_by_quadrature(diff, tau, theta0), rel=1e-6
    )


def test_balanced_arms_give_the_papers_two_sample_formula():
    # Johari et al.: sqrt(2s^2 / (2s^2 + n tau^2)) exp(n^2 tau^2 D^2 / (4 s^2 (2 s^2 + n tau^2)))
    n, s2, tau, d = 400, 0.04, 0.02, 0.025
    paper = math.sqrt(2 * s2 / (2 * s2 + n * tau * tau)) * math.exp(
        n * n * tau * tau * d * d / (4 * s2 * (2 * s2 + n * tau * tau))
    )
    assert math.exp(log_likelihood_ratio(Difference(d, 2 * s2 / n), tau=tau)) == pytest.approx(paper, rel=1e-12)


@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.2])
def test_the_confidence_sequence_ends_exactly_where_the_test_rejects(alpha):
    diff, tau = Difference(0.013, 0.00005), 0.02
    interval = confidence_sequence(diff, tau=tau, alpha=alpha)
    for edge in (interval.low, interval.high):
        assert p_value(diff, tau=tau, theta0=edge) == pytest.approx(alpha, rel=1e-9)
    assert p_value(diff, tau=tau, theta0=diff.estimate) == 1.0
    inside = (interval.low + interval.high) / 2 + 0.99 * (interval.high - interval.low) / 2
    assert p_value(diff, tau=tau, theta0=inside) > alpha
    assert p_value(diff, tau=tau, theta0=interval.high * 1.01) < alpha


def test_the_sequence_is_wider_than_a_fixed_horizon_interval_and_narrows_with_data():
    tau, alpha = 0.02, 0.05
    widths = []
    for n in (100, 1000, 10000, 100000):
        variance = 2 * 0.04 / n
        width = half_width(variance, tau=tau, alpha=alpha)
        assert width > 1.96 * math.sqrt(variance)
        widths.append(width)
    assert widths == sorted(widths, reverse=True)


def test_an_arm_with_no_errors_yet_is_not_certain():
    diff = failure_rate_difference(ProportionStats(500, 0), ProportionStats(500, 0))
    assert diff.estimate == 0 and diff.variance > 0
    nothing_yet = failure_rate_difference(ProportionStats(), ProportionStats())
    assert nothing_yet.variance > 0 and p_value(nothing_yet, tau=0.01) == 1.0


def test_a_difference_of_means_uses_each_arms_own_variance():
    arm, control = MeanStats.of([1.0, 2.0, 3.0, 4.0]), MeanStats.of([1.0, 1.0, 1.0, 3.0, 3.0, 3.0])
    diff = mean_difference(arm, control)
    assert diff.estimate == pytest.approx(0.5)
    assert diff.variance == pytest.approx(arm.variance / 4 + control.variance / 6)


def test_constant_values_decide_without_dividing_by_zero():
    same = mean_difference(MeanStats.of([2.0] * 50), MeanStats.of([2.0] * 50))
    apart = mean_difference(MeanStats.of([3.0] * 50), MeanStats.of([2.0] * 50))
    assert p_value(same, tau=0.1) == 1.0 and p_value(apart, tau=0.1) == 0.0
    assert confidence_sequence(apart, tau=0.1, alpha=0.05) == Interval(1.0, 1.0)


def test_narrowing_by_an_earlier_look_keeps_the_overlap_and_ignores_a_miss():
    now = Interval(-0.01, 0.03)
    assert now.intersect(Interval(0.0, 0.05)) == Interval(0.0, 0.03)
    assert now.intersect(Interval(0.04, 0.05)) == now
    assert now.intersect(None) == now
