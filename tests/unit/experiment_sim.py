"""A pure simulator of experiments: arms with known error rates, latencies, costs and quality.

Seeded `random.Random` only, no sockets, no clock. Normal metrics (quality, cost) are drawn as
their exact sufficient statistics per batch (the batch mean is normal, the sum of squared
deviations a scaled chi-square), so thousands of experiments cost little; errors are an exact
binomial draw; latencies are lognormal (skewed, as real ones are) and drawn one by one.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from controller.experiments.bandit import Reward, reward_shares, success_shares
from controller.experiments.counts import ArmStats, MeanStats, ProportionStats
from controller.experiments.decide import Decision, Metric, SequentialSpec, State, decide


@dataclass(frozen=True)
class ArmModel:
    error_rate: float = 0.02
    latency_median: float = 1.0  # seconds, lognormal
    latency_sigma: float = 0.6
    quality_mean: float = 0.7
    quality_sd: float = 0.2
    cost_mean: float = 0.002
    cost_sd: float = 0.0005


def binomial(rng: random.Random, n: int, p: float) -> int:
    """Exact Binomial(n, p) by geometric gaps between hits: about n * p draws, not n."""
    if p <= 0:
        return 0
    if p >= 1:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1 - p)
    log_q = math.log1p(-p)
    hits, position = 0, 0
    while True:
        position += int(math.log(1.0 - rng.random()) / log_q) + 1
        if position > n:
            return hits
        hits += 1


def normal_batch(rng: random.Random, n: int, mean: float, sd: float) -> MeanStats:
    """The count, sum and sum of squares of n normal values, drawn exactly without the values."""
    if n == 0:
        return MeanStats()
    average = rng.gauss(mean, sd / math.sqrt(n))
    spread = sd * sd * rng.gammavariate((n - 1) / 2, 2.0) if n > 1 else 0.0
    return MeanStats(n, n * average, spread + n * average * average)


def lognormal_batch(rng: random.Random, n: int, median: float, sigma: float) -> MeanStats:
    mu = math.log(median)
    return MeanStats.of(rng.lognormvariate(mu, sigma) for _ in range(n))


def draw(rng: random.Random, model: ArmModel, n: int, metrics: frozenset[Metric]) -> ArmStats:
    """One batch of n requests on one arm, counting only the metrics asked for (the rest cost time)."""
    failures = binomial(rng, n, model.error_rate) if Metric.ERROR_RATE in metrics else 0
    return ArmStats(
        requests=ProportionStats(n - failures, failures) if Metric.ERROR_RATE in metrics else ProportionStats(),
        latency=lognormal_batch(rng, n, model.latency_median, model.latency_sigma)
        if Metric.LATENCY in metrics
        else MeanStats(),
        quality=normal_batch(rng, n, model.quality_mean, model.quality_sd)
        if Metric.QUALITY in metrics
        else MeanStats(),
        cost=normal_batch(rng, n, model.cost_mean, model.cost_sd) if Metric.COST in metrics else MeanStats(),
    )


@dataclass
class Run:
    decision: Decision
    looks: int
    samples: dict[str, int] = field(default_factory=dict)


def run_experiment(
    spec: SequentialSpec,
    models: Mapping[str, ArmModel],
    *,
    control: str,
    rng: random.Random,
    batch: int,
    max_looks: int,
    metrics: frozenset[Metric] | None = None,
) -> Run:
    """Equal traffic to every arm, `batch` requests per arm between looks, a look after every batch.

    Time is counted in looks: the spec's max duration (if any) is a number of looks.
    """
    wanted = metrics or frozenset({spec.metric, *(g.metric for g in spec.guardrails)})
    counts = {arm: ArmStats() for arm in models}
    decision: Decision | None = None
    for look in range(1, max_looks + 1):
        counts = {arm: counts[arm].merge(draw(rng, models[arm], batch, wanted)) for arm in models}
        decision = decide(spec, counts, control=control, elapsed_seconds=look, previous=decision)
        if decision.done:
            return Run(decision, look, {arm: look * batch for arm in models})
    assert decision is not None
    return Run(decision, max_looks, {arm: max_looks * batch for arm in models})


def ever_crosses(
    rng: random.Random,
    *,
    make_batch: Callable[[random.Random], tuple[ArmStats, ArmStats]],
    looks: int,
    reject: Callable[[ArmStats, ArmStats], bool],
) -> bool:
    """Whether a test, read after every batch until `looks`, ever rejects (no other stop)."""
    arm, control = ArmStats(), ArmStats()
    for _ in range(looks):
        more_arm, more_control = make_batch(rng)
        arm, control = arm.merge(more_arm), control.merge(more_control)
        if reject(arm, control):
            return True
    return False


def binomial_upper(n: int, p: float, tail: float) -> int:
    """The smallest k with P(Binomial(n, p) > k) <= tail: the most false stops a rate of p allows."""
    cumulative, k = 0.0, 0
    while k <= n:
        cumulative += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if 1 - cumulative <= tail:
            return k
        k += 1
    return n


@dataclass
class Summary:
    """Many simulated experiments: how they ended and how many requests per arm they took."""

    runs: int
    ends: Counter[tuple[State, str | None]]
    samples: list[int]

    def count(self, state: State, winner: str | None = None) -> int:
        return sum(n for (s, w), n in self.ends.items() if s is state and (winner is None or w == winner))

    def rate(self, state: State, winner: str | None = None) -> float:
        return self.count(state, winner) / self.runs

    @property
    def median_samples(self) -> float:
        return statistics.median(self.samples)

    @property
    def mean_samples(self) -> float:
        return statistics.fmean(self.samples)


def simulate(
    spec: SequentialSpec,
    models: Mapping[str, ArmModel],
    *,
    control: str,
    seed: int,
    runs: int,
    batch: int,
    max_looks: int,
) -> Summary:
    rng = random.Random(seed)
    ends: Counter[tuple[State, str | None]] = Counter()
    sizes = []
    for _ in range(runs):
        run = run_experiment(spec, models, control=control, rng=rng, batch=batch, max_looks=max_looks)
        ends[run.decision.state, run.decision.winner] += 1
        sizes.append(run.samples[control])
    return Summary(runs, ends, sizes)


def split(rng: random.Random, shares: Mapping[str, float], n: int) -> dict[str, int]:
    """n requests sent to arms at random by their shares, as sidecars' weighted picks do."""
    arms = list(shares)
    counts = dict.fromkeys(arms, 0)
    for arm in rng.choices(arms, weights=[shares[a] for a in arms], k=n):
        counts[arm] += 1
    return counts


@dataclass
class BanditRun:
    shares: list[dict[str, float]]  # after each round


def run_success_bandit(
    rng: random.Random, success: Mapping[str, float], *, rounds: int, per_round: int, floor: float
) -> BanditRun:
    """Rounds of requests split by the current shares; after each, the controller's new shares."""
    counts = {arm: ProportionStats() for arm in success}
    shares = {arm: 1 / len(success) for arm in success}
    history = []
    for _ in range(rounds):
        sent = split(rng, shares, per_round)
        for arm, n in sent.items():
            hits = binomial(rng, n, success[arm])
            counts[arm] = counts[arm].merge(ProportionStats(hits, n - hits))
        shares = success_shares(counts, floor=floor)
        history.append(shares)
    return BanditRun(history)


def run_reward_bandit(
    rng: random.Random, models: Mapping[str, ArmModel], reward: Reward, *, rounds: int, per_round: int, floor: float
) -> BanditRun:
    counts = {arm: ArmStats() for arm in models}
    shares = {arm: 1 / len(models) for arm in models}
    metrics = frozenset({Metric.QUALITY, Metric.COST, Metric.LATENCY})
    history = []
    for _ in range(rounds):
        sent = split(rng, shares, per_round)
        for arm, n in sent.items():
            counts[arm] = counts[arm].merge(draw(rng, models[arm], n, metrics))
        shares = reward_shares(counts, reward, floor=floor)
        history.append(shares)
    return BanditRun(history)
