"""The stop rule tested as statistics, on the pure simulator with fixed seeds.

A/A experiments (arms alike) are looked at after every batch until they stop: the share that
declares a winner must stay at or under alpha. Each count is allowed the binomial slack of
the number of runs: a rule whose true false-stop rate were exactly alpha would exceed
`binomial_upper(runs, alpha, 0.001)` false stops in at most 0.1% of seeds, so a count above it
says the rate is above alpha. A/B experiments with a real effect must find the right winner,
and a guardrail breach must stop an experiment long before its primary metric would.
"""

from __future__ import annotations

import random
import statistics

import pytest

from controller.experiments.counts import ArmStats
from controller.experiments.decide import Guardrail, Metric, SequentialSpec, State, difference, guardrail_breach
from controller.experiments.msprt import p_value
from tests.unit.experiment_sim import ArmModel, binomial_upper, draw, ever_crosses, simulate

ALPHA = 0.05
TAIL = 0.001


def allowed(runs: int, alpha: float = ALPHA) -> int:
    return binomial_upper(runs, alpha, TAIL)


def fixed_horizon_samples(sd: float, mde: float, alpha: float = ALPHA, power: float = 0.8) -> float:
    """Per arm, for a test read once: 2 sd^2 (z_{1-alpha/2} + z_power)^2 / mde^2."""
    z = statistics.NormalDist().inv_cdf
    return 2 * sd * sd * (z(1 - alpha / 2) + z(power)) ** 2 / (mde * mde)


def test_the_allowance_is_a_few_standard_deviations_above_alpha():
    # 1,000 runs at 5%: 50 expected, sd 6.9; 73 allowed. 500 runs: 25 expected, 41 allowed.
    assert (allowed(1000), allowed(500), allowed(300)) == (73, 41, 28)


A_A = {
    "quality (normal)": (SequentialSpec(metric=Metric.QUALITY, mde=0.02), ArmModel(), 1000, 400),
    "error rate (5%)": (SequentialSpec(metric=Metric.ERROR_RATE, mde=0.02), ArmModel(error_rate=0.05), 1000, 400),
    "latency (lognormal)": (SequentialSpec(metric=Metric.LATENCY, mde=0.1), ArmModel(latency_sigma=0.6), 300, 200),
}


@pytest.mark.parametrize("case", list(A_A))
def test_a_a_experiments_peeked_after_every_batch_rarely_declare_a_winner(case):
    spec, model, runs, looks = A_A[case]
    summary = simulate(spec, {"a": model, "b": model}, control="a", seed=1, runs=runs, batch=50, max_looks=looks)
    assert summary.count(State.WINNER) <= allowed(runs)
    # And they do end: the confidence sequence rules out the minimum effect in nearly all of them.
    assert summary.rate(State.NO_DIFFERENCE) >= 0.9


def test_the_msprt_alone_read_after_every_batch_stays_under_alpha_where_a_naive_test_does_not():
    """Without the NoDifference stop: the test itself, read 200 times up to 20,000 requests per arm."""
    model, spec = ArmModel(), SequentialSpec(metric=Metric.QUALITY, mde=0.02)
    metric = frozenset({Metric.QUALITY})

    def batch(rng):
        return draw(rng, model, 100, metric), draw(rng, model, 100, metric)

    def msprt(arm, control):
        return p_value(difference(spec.metric, arm, control), tau=spec.mde) <= ALPHA

    def naive(arm, control):  # a fixed-horizon z-test, read as if each look were the only one
        diff = difference(spec.metric, arm, control)
        return abs(diff.estimate) > 1.96 * diff.variance**0.5

    rng = random.Random(2)
    crossings = sum(ever_crosses(rng, make_batch=batch, looks=200, reject=msprt) for _ in range(1000))
    assert crossings <= allowed(1000)
    naive_rng = random.Random(3)
    naive_crossings = sum(ever_crosses(naive_rng, make_batch=batch, looks=200, reject=naive) for _ in range(200))
    assert naive_crossings / 200 > 4 * ALPHA  # peeking at a fixed-horizon test: the failure this rule avoids


def test_more_arms_alike_rarely_declare_a_winner_with_the_split_alpha():
    model = ArmModel()
    spec = SequentialSpec(metric=Metric.QUALITY, mde=0.02)
    summary = simulate(
        spec, {"a": model, "b": model, "c": model}, control="a", seed=4, runs=500, batch=50, max_looks=300
    )
    assert summary.count(State.WINNER) <= allowed(500)


def test_a_a_guardrails_rarely_stop_an_experiment():
    model = ArmModel(error_rate=0.05)
    spec = SequentialSpec(
        metric=Metric.QUALITY, mde=0.02, guardrails=(Guardrail(Metric.ERROR_RATE, 0.01),), guardrail_min_samples=100
    )
    summary = simulate(spec, {"a": model, "b": model}, control="a", seed=5, runs=500, batch=50, max_looks=300)
    assert summary.count(State.STOPPED_BY_GUARDRAIL) <= allowed(500, spec.guardrail_alpha)


def test_a_real_quality_gain_is_found_with_fewer_requests_than_a_fixed_test_needs():
    control, better = ArmModel(quality_mean=0.70), ArmModel(quality_mean=0.73)  # 1.5 x the mde, sd 0.2
    spec = SequentialSpec(metric=Metric.QUALITY, mde=0.02)
    summary = simulate(spec, {"a": control, "b": better}, control="a", seed=6, runs=500, batch=50, max_looks=400)
    assert summary.rate(State.WINNER, "b") >= 0.95
    assert summary.count(State.WINNER, "a") <= allowed(500)
    # A fixed-horizon test sized for the mde (80% power) needs about 1,570 per arm.
    assert summary.median_samples < fixed_horizon_samples(0.2, spec.mde)


def test_a_real_rise_in_errors_makes_the_control_the_winner():
    control, worse = ArmModel(error_rate=0.05), ArmModel(error_rate=0.08)
    spec = SequentialSpec(metric=Metric.ERROR_RATE, mde=0.02)
    summary = simulate(spec, {"a": control, "b": worse}, control="a", seed=7, runs=500, batch=50, max_looks=400)
    assert summary.rate(State.WINNER, "a") >= 0.95
    assert summary.count(State.WINNER, "b") <= allowed(500)


def test_a_guardrail_breach_stops_long_before_the_primary_metric_would():
    control, broken = ArmModel(error_rate=0.02), ArmModel(error_rate=0.10)  # same quality
    spec = SequentialSpec(
        metric=Metric.QUALITY, mde=0.02, guardrails=(Guardrail(Metric.ERROR_RATE, 0.03),), guardrail_min_samples=100
    )
    breached = simulate(spec, {"a": control, "b": broken}, control="a", seed=8, runs=500, batch=50, max_looks=400)
    assert breached.rate(State.STOPPED_BY_GUARDRAIL) >= 0.95
    assert breached.median_samples <= 500
    unguarded = simulate(
        SequentialSpec(metric=Metric.QUALITY, mde=0.02),
        {"a": control, "b": broken},
        control="a",
        seed=8,
        runs=100,
        batch=50,
        max_looks=400,
    )
    assert breached.median_samples * 3 < unguarded.median_samples


def test_a_canary_at_a_tenth_of_the_traffic_alike_to_the_stable_backend_rarely_trips_its_guardrail():
    """A rollout step: 90 requests to the stable backend for every 10 to the canary, checked after each."""
    model = ArmModel(error_rate=0.05)
    rails = (Guardrail(Metric.ERROR_RATE, 0.02),)
    only_errors = frozenset({Metric.ERROR_RATE})
    rng = random.Random(12)
    tripped = 0
    for _ in range(300):
        arms = {"stable": ArmStats(), "canary": ArmStats()}
        for _ in range(300):
            arms = {
                "stable": arms["stable"].merge(draw(rng, model, 90, only_errors)),
                "canary": arms["canary"].merge(draw(rng, model, 10, only_errors)),
            }
            if guardrail_breach(rails, arms, control="stable", min_samples=100):
                tripped += 1
                break
    assert tripped <= allowed(300)
