"""Thompson sampling for adaptive rules: each backend's traffic share is the chance it is the best.

The controller computes the shares from the summed counts and sends sidecars plain weights,
so the sidecar's weighted pick is all the data plane does. The chance of being best is
estimated by Monte Carlo (`draws` joint samples from the posteriors, a fixed seed, so every
replica and every restart computes the same shares from the same counts); each backend keeps
at least `floor` of the traffic so a backend that looked bad early is still measured.

- Success-type rewards (a request answered, a thumbs-up): Beta(1 + successes, 1 + failures).
- Continuous rewards: reward = quality_weight * quality - cost_weight * cost - latency_weight
  * latency, per request. Each part's mean has a normal posterior (its sample mean and
  variance, shrunk by one pseudo-observation at the mean pooled over all backends, which is
  also the whole prior of a backend with no data). The parts are taken as independent, so
  the reward's posterior is normal with the weighted sum of means and of variances: the
  covariance of cost and latency on the same requests is left out, which widens or narrows
  the spread a little, not the mean. Quality counts only requests with feedback.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from controller.experiments.counts import ArmStats, MeanStats, ProportionStats

DRAWS = 2000
SEED = 20240601


@dataclass(frozen=True, slots=True, kw_only=True)
class Reward:
    """The per-request reward a spec asks to maximise (weights per unit: per second, per currency unit)."""

    quality_weight: float = 1.0
    cost_weight: float = 0.0
    latency_weight: float = 0.0


@dataclass(frozen=True, slots=True)
class NormalPosterior:
    mean: float
    variance: float


def success_shares(
    arms: Mapping[str, ProportionStats],
    *,
    floor: float,
    excluded: Collection[str] = (),
    draws: int = DRAWS,
    seed: int = SEED,
) -> dict[str, float]:
    """Shares from Beta-Bernoulli posteriors of each arm's success rate."""
    posteriors = {arm: (1.0 + s.successes, 1.0 + s.failures) for arm, s in arms.items() if arm not in excluded}
    return _shares(
        list(arms), {arm: _beta(a, b) for arm, (a, b) in posteriors.items()}, floor=floor, draws=draws, seed=seed
    )


def reward_shares(
    arms: Mapping[str, ArmStats],
    reward: Reward,
    *,
    floor: float,
    excluded: Collection[str] = (),
    draws: int = DRAWS,
    seed: int = SEED,
) -> dict[str, float]:
    """Shares from normal posteriors of each arm's mean reward."""
    posteriors = reward_posteriors({arm: s for arm, s in arms.items() if arm not in excluded}, reward)
    return _shares(list(arms), {arm: _normal(p) for arm, p in posteriors.items()}, floor=floor, draws=draws, seed=seed)


def reward_posteriors(arms: Mapping[str, ArmStats], reward: Reward) -> dict[str, NormalPosterior]:
    parts: list[tuple[float, Callable[[ArmStats], MeanStats]]] = [
        (reward.quality_weight, lambda s: s.quality),
        (-reward.cost_weight, lambda s: s.cost),
        (-reward.latency_weight, lambda s: s.latency),
    ]
    means = dict.fromkeys(arms, 0.0)
    variances = dict.fromkeys(arms, 0.0)
    for weight, part in parts:
        if weight == 0:
            continue
        pooled = MeanStats()
        for stats in arms.values():
            pooled = pooled.merge(part(stats))
        if pooled.count == 0:  # unknown everywhere: the same for every arm, so it cannot rank them
            continue
        for arm, stats in arms.items():
            posterior = mean_posterior(part(stats), pooled)
            means[arm] += weight * posterior.mean
            variances[arm] += weight * weight * posterior.variance
    return {arm: NormalPosterior(means[arm], variances[arm]) for arm in arms}


def mean_posterior(stats: MeanStats, pooled: MeanStats) -> NormalPosterior:
    """One arm's mean, shrunk by one pseudo-observation at the pooled mean and variance."""
    prior_variance = pooled.variance if pooled.count >= 2 else max(abs(pooled.mean), 1e-9) ** 2
    spread = ((stats.count - 1) * stats.variance + prior_variance) / stats.count if stats.count >= 2 else prior_variance
    return NormalPosterior((stats.total + pooled.mean) / (stats.count + 1), spread / (stats.count + 1))


def _beta(alpha: float, beta: float) -> Callable[[random.Random], float]:
    return lambda rng: rng.betavariate(alpha, beta)


def _normal(posterior: NormalPosterior) -> Callable[[random.Random], float]:
    sd = math.sqrt(posterior.variance)
    return lambda rng: rng.gauss(posterior.mean, sd)


def _shares(
    arms: list[str], samplers: Mapping[str, Callable[[random.Random], float]], *, floor: float, draws: int, seed: int
) -> dict[str, float]:
    if not samplers:
        raise ValueError("every backend is excluded")
    if draws < 1:
        raise ValueError("draws must be at least 1")
    if not 0 <= floor * len(samplers) <= 1:
        raise ValueError(f"a floor of {floor} for {len(samplers)} backends is more than all the traffic")
    rng = random.Random(seed)
    names = list(samplers)
    columns = [[samplers[arm](rng) for _ in range(draws)] for arm in names]
    wins = dict.fromkeys(names, 0)
    for row in zip(*columns, strict=True):
        best = max(row)
        if row.count(best) == 1:
            wins[names[row.index(best)]] += 1
        else:  # a tie (nothing known about any arm): any of them
            wins[rng.choice([arm for arm, value in zip(names, row, strict=True) if value == best])] += 1
    spare = 1.0 - floor * len(samplers)
    return {arm: floor + spare * wins[arm] / draws if arm in samplers else 0.0 for arm in arms}


def to_weights(shares: Mapping[str, float], *, total: int = 1000) -> dict[str, int]:
    """Whole-number weights summing to `total` (largest remainder); a share s gets at least floor(s * total)."""
    if total < 1:
        raise ValueError("total must be at least 1")
    exact = {arm: max(share, 0.0) * total for arm, share in shares.items()}
    weights = {arm: math.floor(value + 1e-9) for arm, value in exact.items()}
    by_remainder = sorted((arm for arm in exact if exact[arm] > 0), key=lambda arm: weights[arm] - exact[arm])
    for arm in by_remainder[: max(total - sum(weights.values()), 0)]:
        weights[arm] += 1
    return weights
