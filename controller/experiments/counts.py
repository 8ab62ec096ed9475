"""Per-arm sufficient statistics: what sidecars count and the controller sums.

Every number here is additive, so a sidecar counts its own requests, the
controller sums what all sidecars (across all replicas) report, and the sum is
exactly what one process seeing every request would have counted. A count is
a plain small dict when it travels (the controller stream) or rests (a route's
status); `from_dict` rejects what is not such a dict instead of guessing.

Means are kept as count, sum and sum of squares rather than a running mean and
M2: sums merge by addition alone, which is what many reporters need. Their
cancellation error stays far below the noise of the tests that read them for
the metrics counted here (latencies in seconds, costs in currency units,
quality scores), and a variance is never negative (clamped at 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class BadCounts(ValueError):
    """A dict that is not a count (wrong keys, negative or non-finite numbers)."""


def _count(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadCounts(f"{key!r} must be a whole number at least 0, not {value!r}")
    return value


def _number(raw: Mapping[str, Any], key: str) -> float:
    value = raw.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadCounts(f"{key!r} must be a finite number, not {value!r}")
    return float(value)


def _mapping(raw: object, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise BadCounts(f"{what} must be a mapping, not {type(raw).__name__}")
    return raw


@dataclass(frozen=True, slots=True)
class MeanStats:
    """Count, sum and sum of squares of one continuous metric (latency, cost, quality)."""

    count: int = 0
    total: float = 0.0
    total_squares: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float]) -> MeanStats:
        count, total, squares = 0, 0.0, 0.0
        for value in values:
            count += 1
            total += value
            squares += value * value
        return cls(count, total, squares)

    def add(self, value: float) -> MeanStats:
        return MeanStats(self.count + 1, self.total + value, self.total_squares + value * value)

    def merge(self, other: MeanStats) -> MeanStats:
        return MeanStats(self.count + other.count, self.total + other.total, self.total_squares + other.total_squares)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    @property
    def variance(self) -> float:
        """The unbiased sample variance (0 below two values)."""
        if self.count < 2:
            return 0.0
        return max(0.0, (self.total_squares - self.total * self.total / self.count) / (self.count - 1))

    def to_dict(self) -> dict[str, int | float]:
        return {"count": self.count, "sum": self.total, "sumSquares": self.total_squares}

    @classmethod
    def from_dict(cls, raw: object) -> MeanStats:
        data = _mapping(raw, "a mean count")
        stats = cls(_count(data, "count"), _number(data, "sum"), _number(data, "sumSquares"))
        if stats.total_squares < 0 or (stats.count == 0 and (stats.total or stats.total_squares)):
            raise BadCounts(f"inconsistent mean count {dict(data)!r}")
        return stats


@dataclass(frozen=True, slots=True)
class ProportionStats:
    """Successes and failures of a yes/no outcome (a request answered without error, a thumbs-up)."""

    successes: int = 0
    failures: int = 0

    @classmethod
    def of(cls, outcomes: Iterable[bool]) -> ProportionStats:
        successes = failures = 0
        for ok in outcomes:
            if ok:
                successes += 1
            else:
                failures += 1
        return cls(successes, failures)

    def add(self, success: bool) -> ProportionStats:
        return ProportionStats(self.successes + success, self.failures + (not success))

    def merge(self, other: ProportionStats) -> ProportionStats:
        return ProportionStats(self.successes + other.successes, self.failures + other.failures)

    @property
    def count(self) -> int:
        return self.successes + self.failures

    @property
    def failure_rate(self) -> float:
        return self.failures / self.count if self.count else 0.0

    @property
    def success_rate(self) -> float:
        return self.successes / self.count if self.count else 0.0

    def to_dict(self) -> dict[str, int]:
        return {"successes": self.successes, "failures": self.failures}

    @classmethod
    def from_dict(cls, raw: object) -> ProportionStats:
        data = _mapping(raw, "a proportion count")
        return cls(_count(data, "successes"), _count(data, "failures"))


@dataclass(frozen=True, slots=True)
class ArmStats:
    """Everything counted for one arm of an experiment or one backend of an adaptive rule.

    `requests` counts answered (success) and failed (failure) requests: the error rate.
    Latency and time to first token are in seconds, cost in the pricing's currency units,
    quality in whatever scale apps send as feedback (only requests with feedback count there).
    """

    requests: ProportionStats = field(default_factory=ProportionStats)
    latency: MeanStats = field(default_factory=MeanStats)
    time_to_first_token: MeanStats = field(default_factory=MeanStats)
    cost: MeanStats = field(default_factory=MeanStats)
    quality: MeanStats = field(default_factory=MeanStats)

    def merge(self, other: ArmStats) -> ArmStats:
        return ArmStats(
            requests=self.requests.merge(other.requests),
            latency=self.latency.merge(other.latency),
            time_to_first_token=self.time_to_first_token.merge(other.time_to_first_token),
            cost=self.cost.merge(other.cost),
            quality=self.quality.merge(other.quality),
        )

    def to_dict(self) -> dict[str, dict[str, int | float]]:
        """Only what was counted: an arm with no quality feedback has no `quality` key."""
        out: dict[str, dict[str, int | float]] = {}
        if self.requests.count:
            out["requests"] = dict(self.requests.to_dict())
        for key, stats in self._means():
            if stats.count:
                out[key] = stats.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: object) -> ArmStats:
        # A count this controller does not know (a newer sidecar's) is left out, not the whole report:
        # during an upgrade, or after a controller's rollback, the counts it knows keep flowing.
        data = _mapping(raw, "an arm's counts")
        means = {attr: MeanStats.from_dict(data.get(key, {})) for key, attr in _MEAN_KEYS.items()}
        return cls(requests=ProportionStats.from_dict(data.get("requests", {})), **means)

    def _means(self) -> tuple[tuple[str, MeanStats], ...]:
        return (
            ("latency", self.latency),
            ("timeToFirstToken", self.time_to_first_token),
            ("cost", self.cost),
            ("quality", self.quality),
        )


_MEAN_KEYS = {"latency": "latency", "timeToFirstToken": "time_to_first_token", "cost": "cost", "quality": "quality"}


def merge_all(reports: Iterable[Mapping[str, ArmStats]]) -> dict[str, ArmStats]:
    """Sum per-arm counts from many reporters (sidecars, replicas) into one count per arm."""
    merged: dict[str, ArmStats] = {}
    for report in reports:
        for arm, stats in report.items():
            merged[arm] = merged[arm].merge(stats) if arm in merged else stats
    return merged
