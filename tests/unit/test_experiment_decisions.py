"""The stop rule's decisions on given counts: the minimum sample, the states, the winner's side,
the Bonferroni split for more than two arms, guardrails, the maximum duration, and a
decision that survives a controller restart through the route's status."""

from __future__ import annotations

import pytest

from controller.experiments.counts import ArmStats, MeanStats, ProportionStats
from controller.experiments.decide import (
    Decision,
    Guardrail,
    Metric,
    SequentialSpec,
    State,
    Verdict,
    decide,
    guardrail_breach,
)
from controller.experiments.msprt import Difference, p_value


def quality(n: int, mean: float, sd: float = 0.2) -> ArmStats:
    """An arm whose quality scores have exactly this count, mean and standard deviation."""
    return ArmStats(quality=MeanStats(n, n * mean, (n - 1) * sd * sd + n * mean * mean))


def errors(n: int, failures: int) -> ArmStats:
    return ArmStats(requests=ProportionStats(n - failures, failures))


SPEC = SequentialSpec(metric=Metric.QUALITY, mde=0.02, min_samples=200)


def test_a_clear_difference_waits_for_the_minimum_sample():
    arms = {"control": quality(150, 0.60), "new": quality(150, 0.80)}
    early = decide(SPEC, arms, control="control", elapsed_seconds=60)
    assert early.state is State.RUNNING and early.winner is None
    assert early.comparisons[0].p_value < 1e-6  # shown in status, not acted on
    later = decide(
        SPEC, {"control": quality(200, 0.60), "new": quality(200, 0.80)}, control="control", elapsed_seconds=90
    )
    assert later.state is State.WINNER and later.winner == "new"


def test_the_winner_is_the_better_side_of_the_metric():
    slower = {
        "control": ArmStats(latency=MeanStats.of([1.0, 1.2] * 300)),
        "new": ArmStats(latency=MeanStats.of([1.5, 1.7] * 300)),
    }
    spec = SequentialSpec(metric=Metric.LATENCY, mde=0.1)
    decision = decide(spec, slower, control="control", elapsed_seconds=1)
    assert (decision.state, decision.winner, decision.comparisons[0].verdict) == (
        State.WINNER,
        "control",
        Verdict.WORSE,
    )
    worse_quality = decide(
        SPEC, {"control": quality(2000, 0.7), "new": quality(2000, 0.6)}, control="control", elapsed_seconds=1
    )
    assert worse_quality.winner == "control"
    fewer_errors = decide(
        SequentialSpec(metric=Metric.ERROR_RATE, mde=0.02),
        {"control": errors(3000, 300), "new": errors(3000, 60)},
        control="control",
        elapsed_seconds=1,
    )
    assert (fewer_errors.state, fewer_errors.winner) == (State.WINNER, "new")


def test_no_difference_once_the_sequence_rules_out_the_minimum_effect():
    close = {"control": quality(20000, 0.700), "new": quality(20000, 0.702)}
    decision = decide(SPEC, close, control="control", elapsed_seconds=1)
    assert decision.state is State.NO_DIFFERENCE and decision.winner is None
    comparison = decision.comparisons[0]
    assert -0.02 < comparison.interval.low < 0 < comparison.interval.high < 0.02
    not_yet = decide(
        SPEC, {"control": quality(800, 0.700), "new": quality(800, 0.702)}, control="control", elapsed_seconds=1
    )
    assert not_yet.state is State.RUNNING


def test_more_arms_split_alpha_between_their_comparisons():
    # Equal arms of n with sd s: V = 2 s^2 / n; pick a difference whose p-value is between alpha/2 and alpha.
    n, sd = 2000, 0.2
    variance = 2 * sd * sd / n
    gap = next(g / 10000 for g in range(1, 1000) if p_value(Difference(g / 10000, variance), tau=0.02) < 0.04)
    assert p_value(Difference(gap, variance), tau=0.02) > 0.025
    two = decide(SPEC, {"a": quality(n, 0.6), "b": quality(n, 0.6 + gap)}, control="a", elapsed_seconds=1)
    assert two.comparisons[0].verdict is Verdict.BETTER
    three = decide(
        SPEC, {"a": quality(n, 0.6), "b": quality(n, 0.6 + gap), "c": quality(n, 0.6)}, control="a", elapsed_seconds=1
    )
    assert three.comparisons[0].verdict is Verdict.RUNNING and three.state is State.RUNNING
    # The p-value in status is adjusted the same way: read against alpha itself.
    assert three.comparisons[0].p_value == pytest.approx(2 * two.comparisons[0].p_value)
    assert two.comparisons[0].p_value < SPEC.alpha < three.comparisons[0].p_value


def test_with_more_arms_the_best_arm_that_beats_the_control_wins_once_all_are_decided():
    arms = {"a": quality(5000, 0.60), "b": quality(5000, 0.65), "c": quality(5000, 0.70), "d": quality(5000, 0.50)}
    decision = decide(SPEC, arms, control="a", elapsed_seconds=1)
    assert [c.verdict for c in decision.comparisons] == [Verdict.BETTER, Verdict.BETTER, Verdict.WORSE]
    assert (decision.state, decision.winner) == (State.WINNER, "c")
    undecided = dict(arms, d=quality(5000, 0.6 + 0.010))
    waiting = decide(SPEC, undecided, control="a", elapsed_seconds=1)
    assert waiting.state is State.RUNNING  # d is neither better nor surely within the minimum effect yet


def test_the_maximum_duration_stops_an_undecided_experiment():
    spec = SequentialSpec(metric=Metric.QUALITY, mde=0.02, max_duration_seconds=3600)
    arms = {"control": quality(500, 0.700), "new": quality(500, 0.705)}
    assert decide(spec, arms, control="control", elapsed_seconds=3599).state is State.RUNNING
    assert decide(spec, arms, control="control", elapsed_seconds=3600).state is State.MAX_DURATION_REACHED


def test_at_the_maximum_duration_an_arm_already_shown_better_wins():
    spec = SequentialSpec(metric=Metric.QUALITY, mde=0.02, max_duration_seconds=3600)
    arms = {"a": quality(5000, 0.60), "b": quality(5000, 0.65), "c": quality(5000, 0.61)}  # c still open
    assert decide(spec, arms, control="a", elapsed_seconds=3000).state is State.RUNNING
    final = decide(spec, arms, control="a", elapsed_seconds=3600)
    assert (final.state, final.winner) == (State.WINNER, "b")


def test_a_guardrail_breach_stops_at_once_and_names_the_arm():
    spec = SequentialSpec(
        metric=Metric.QUALITY,
        mde=0.02,
        min_samples=2000,
        guardrails=(Guardrail(Metric.ERROR_RATE, 0.02),),
        guardrail_min_samples=100,
    )
    arms = {
        "control": ArmStats(requests=ProportionStats(490, 10), quality=MeanStats.of([0.7] * 10)),
        "new": ArmStats(requests=ProportionStats(400, 100), quality=MeanStats.of([0.9] * 10)),
    }
    decision = decide(spec, arms, control="control", elapsed_seconds=5)
    assert decision.state is State.STOPPED_BY_GUARDRAIL and decision.winner is None
    assert decision.breach is not None and decision.breach.arm == "new" and decision.breach.interval.low > 0.02
    small = {"control": errors(500, 10), "new": errors(500, 25)}  # worse, but not surely by more than 2 points
    assert decide(spec, small, control="control", elapsed_seconds=5).state is State.RUNNING


def test_a_quality_guardrail_looks_down_not_up():
    spec = SequentialSpec(metric=Metric.LATENCY, mde=0.1, guardrails=(Guardrail(Metric.QUALITY, 0.05),))
    better = {"control": quality(1000, 0.6), "new": quality(1000, 0.8)}
    assert decide(spec, better, control="control", elapsed_seconds=1).state is State.RUNNING
    worse = {"control": quality(1000, 0.8), "new": quality(1000, 0.6)}
    assert decide(spec, worse, control="control", elapsed_seconds=1).state is State.STOPPED_BY_GUARDRAIL


def test_a_decided_experiment_stays_decided_and_reads_back_from_status():
    first = decide(
        SPEC, {"control": quality(2000, 0.6), "new": quality(2000, 0.7)}, control="control", elapsed_seconds=1
    )
    assert first.state is State.WINNER
    restored = Decision.from_dict(first.to_dict())
    assert restored == first
    # New counts pointing the other way do not undo a stopped experiment.
    later = decide(
        SPEC,
        {"control": quality(9000, 0.7), "new": quality(9000, 0.6)},
        control="control",
        elapsed_seconds=2,
        previous=restored,
    )
    assert later == first


def test_a_running_experiment_keeps_its_smallest_p_value_and_narrowest_interval_across_a_restart():
    spec = SequentialSpec(metric=Metric.QUALITY, mde=0.02, min_samples=200)
    first = decide(
        spec, {"control": quality(3000, 0.700), "new": quality(3000, 0.708)}, control="control", elapsed_seconds=1
    )
    assert first.state is State.RUNNING
    status = first.to_dict()
    second = decide(
        spec,
        {"control": quality(3100, 0.700), "new": quality(3100, 0.703)},
        control="control",
        elapsed_seconds=2,
        previous=Decision.from_dict(status),
    )
    before, after = first.comparisons[0], second.comparisons[0]
    assert after.p_value == before.p_value  # the always-valid p-value never goes up
    assert before.interval.low <= after.interval.low and after.interval.high <= before.interval.high


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mde": 0.0},
        {"mde": 0.02, "alpha": 1.0},
        {"mde": 0.02, "min_samples": 5},
        {"mde": 0.02, "guardrail_min_samples": 10},
        {"mde": 0.02, "max_duration_seconds": 0},
    ],
)
def test_a_spec_that_cannot_be_tested_is_refused(kwargs):
    with pytest.raises(ValueError):
        SequentialSpec(metric=Metric.QUALITY, **kwargs)


def test_an_experiment_needs_its_control_and_another_arm():
    with pytest.raises(ValueError):
        decide(SPEC, {"control": quality(10, 0.5)}, control="control", elapsed_seconds=0)
    with pytest.raises(ValueError):
        decide(SPEC, {"a": quality(10, 0.5), "b": quality(10, 0.5)}, control="control", elapsed_seconds=0)
    with pytest.raises(ValueError):
        Guardrail(Metric.ERROR_RATE, 0)


def test_a_rollout_step_checks_its_guardrails_on_unequal_traffic():
    rails = (Guardrail(Metric.ERROR_RATE, 0.02), Guardrail(Metric.LATENCY, 0.5))
    healthy = {"stable": errors(19000, 380), "canary": errors(1000, 25)}  # 2% and 2.5% at a 5% step
    assert guardrail_breach(rails, healthy, control="stable") is None
    failing = {"stable": errors(19000, 380), "canary": errors(1000, 90)}  # 9% errors on the canary
    breach = guardrail_breach(rails, failing, control="stable")
    assert breach is not None and (breach.arm, breach.metric) == ("canary", Metric.ERROR_RATE)
    assert guardrail_breach(rails, failing, control="stable", min_samples=2000) is None  # not enough canary yet
