"""Thompson sampling shares: they move traffic to the better backend within a few rounds,
never leave a backend below the floor, and turn into the whole-number weights sidecars use."""

from __future__ import annotations

import random

import pytest

from controller.experiments.bandit import (
    Reward,
    mean_posterior,
    reward_posteriors,
    reward_shares,
    success_shares,
    to_weights,
)
from controller.experiments.counts import ArmStats, MeanStats, ProportionStats
from tests.unit.experiment_sim import ArmModel, run_reward_bandit, run_success_bandit

FLOOR = 0.05


def test_shares_are_deterministic_sum_to_one_and_respect_the_floor():
    counts = {"a": ProportionStats(900, 100), "b": ProportionStats(50, 50), "c": ProportionStats(3, 0)}
    shares = success_shares(counts, floor=FLOOR)
    assert shares == success_shares(counts, floor=FLOOR)  # every replica computes the same
    assert sum(shares.values()) == pytest.approx(1.0)
    assert min(shares.values()) >= FLOOR
    assert shares["b"] == pytest.approx(FLOOR)  # hopeless: the floor, no more


def test_with_no_data_every_backend_gets_about_the_same_share():
    shares = success_shares({"a": ProportionStats(), "b": ProportionStats(), "c": ProportionStats()}, floor=0.0)
    assert all(abs(share - 1 / 3) < 0.04 for share in shares.values())
    even = reward_shares({"a": ArmStats(), "b": ArmStats()}, Reward(cost_weight=1.0), floor=0.0)
    assert all(abs(share - 0.5) < 0.04 for share in even.values())


def test_an_excluded_backend_gets_nothing_and_the_floor_holds_for_the_rest():
    counts = {"a": ProportionStats(90, 10), "b": ProportionStats(99, 1), "c": ProportionStats(95, 5)}
    shares = success_shares(counts, floor=0.1, excluded={"b"})
    assert shares["b"] == 0.0 and min(shares["a"], shares["c"]) >= 0.1
    assert sum(shares.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        success_shares(counts, floor=0.1, excluded={"a", "b", "c"})
    with pytest.raises(ValueError):
        success_shares(counts, floor=0.4)


def test_weights_sum_to_the_total_and_keep_each_share_rounded_down():
    shares = {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3, "d": 0.0}
    weights = to_weights(shares, total=1000)
    assert sum(weights.values()) == 1000 and weights["d"] == 0
    assert all(weights[arm] >= int(shares[arm] * 1000) for arm in shares)
    floored = to_weights({"a": FLOOR, "b": 1 - FLOOR})
    assert floored == {"a": 50, "b": 950}


def test_the_reward_ranks_a_cheaper_backend_of_equal_quality_higher():
    same_quality = [0.6, 0.8] * 100
    arms = {
        "dear": ArmStats(quality=MeanStats.of(same_quality), cost=MeanStats.of([0.010] * 200)),
        "cheap": ArmStats(quality=MeanStats.of(same_quality), cost=MeanStats.of([0.004] * 200)),
    }
    posteriors = reward_posteriors(arms, Reward(quality_weight=1.0, cost_weight=5.0))
    assert posteriors["cheap"].mean - posteriors["dear"].mean == pytest.approx(5 * 0.006, rel=0.05)
    # Quality alone cannot tell them apart; cost cannot matter at a weight of 0.
    alike = reward_posteriors(arms, Reward(quality_weight=1.0))
    assert alike["cheap"].mean == pytest.approx(alike["dear"].mean)


def test_a_backend_without_data_starts_from_what_the_others_show():
    pooled = MeanStats.of([0.5, 0.7, 0.6, 0.8])
    fresh = mean_posterior(MeanStats(), pooled)
    assert fresh.mean == pytest.approx(pooled.mean) and fresh.variance == pytest.approx(pooled.variance)
    lucky = mean_posterior(MeanStats.of([0.9, 0.9]), pooled)  # two equal values do not mean no spread
    assert lucky.variance > 0


def test_thompson_sampling_moves_most_traffic_to_the_more_reliable_backend_within_ten_rounds():
    rng = random.Random(9)
    runs = [run_success_bandit(rng, {"a": 0.90, "b": 0.95}, rounds=10, per_round=200, floor=FLOOR) for _ in range(40)]
    converged = sum(run.shares[-1]["b"] >= 0.8 for run in runs)
    assert converged >= 36  # 90% of runs
    every_share = [share for run in runs for shares in run.shares for share in shares.values()]
    assert min(every_share) >= FLOOR - 1e-12
    assert all(min(to_weights(shares).values()) >= 50 for run in runs for shares in run.shares)


def test_thompson_sampling_on_quality_minus_cost_finds_the_cheaper_backend_of_equal_quality():
    models = {
        "dear": ArmModel(quality_mean=0.70, cost_mean=0.010, cost_sd=0.002),
        "cheap": ArmModel(quality_mean=0.70, cost_mean=0.004, cost_sd=0.001),
        "poor": ArmModel(quality_mean=0.60, cost_mean=0.002, cost_sd=0.0005),
    }
    reward = Reward(quality_weight=1.0, cost_weight=5.0, latency_weight=0.01)
    rng = random.Random(10)
    runs = [run_reward_bandit(rng, models, reward, rounds=10, per_round=200, floor=FLOOR) for _ in range(30)]
    converged = sum(run.shares[-1]["cheap"] >= 0.7 for run in runs)
    assert converged >= 27  # 90% of runs
    assert min(share for run in runs for shares in run.shares for share in shares.values()) >= FLOOR - 1e-12
