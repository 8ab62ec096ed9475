"""Per-arm counts: what many sidecars count sums to what one process seeing every request would
count, and the dict that travels over the stream and rests in status reads back the same."""

from __future__ import annotations

import ast
import math
import random
import statistics
import sys
from pathlib import Path

import pytest

from controller.experiments.counts import ArmStats, BadCounts, MeanStats, ProportionStats, merge_all

PACKAGE = Path(__file__).resolve().parents[2] / "controller" / "experiments"


def test_counts_from_many_sidecars_sum_to_the_count_over_all_requests():
    rng = random.Random(11)
    latencies = [rng.lognormvariate(0, 0.7) for _ in range(3000)]
    errors = [rng.random() < 0.03 for _ in range(3000)]
    sidecars = [
        {"b": ArmStats(requests=ProportionStats.of(not e for e in errors[i::3]), latency=MeanStats.of(latencies[i::3]))}
        for i in range(3)
    ]
    merged = merge_all(sidecars)["b"]
    assert merged.requests == ProportionStats.of(not e for e in errors)
    assert merged.requests.failure_rate == sum(errors) / len(errors)
    assert merged.latency.count == len(latencies)
    assert merged.latency.mean == pytest.approx(statistics.fmean(latencies), rel=1e-12)
    assert merged.latency.variance == pytest.approx(statistics.variance(latencies), rel=1e-9)


def test_adding_one_value_at_a_time_is_the_same_as_counting_them_together():
    values = [0.5, 1.25, 3.0, 0.75]
    one_by_one = MeanStats()
    for value in values:
        one_by_one = one_by_one.add(value)
    assert one_by_one == MeanStats.of(values)
    assert ProportionStats().add(True).add(False).add(True) == ProportionStats(2, 1)


def test_an_arm_reads_back_from_its_dict_and_the_dict_holds_only_what_was_counted():
    arm = ArmStats(requests=ProportionStats(970, 30), latency=MeanStats.of([0.8, 1.1, 0.9]), cost=MeanStats.of([0.002]))
    as_dict = arm.to_dict()
    assert set(as_dict) == {"requests", "latency", "cost"}  # no feedback, no quality key
    assert as_dict["requests"] == {"successes": 970, "failures": 30}
    assert ArmStats.from_dict(as_dict) == arm
    assert ArmStats.from_dict({}) == ArmStats()


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {"requests": {"successes": -1}},
        {"requests": {"successes": True}},
        {"requests": {"failures": 1.5}},
        {"latency": {"count": 2, "sum": math.nan, "sumSquares": 1.0}},
        {"latency": {"count": 0, "sum": 3.0, "sumSquares": 9.0}},
        {"latency": {"count": 1, "sum": 3.0, "sumSquares": -9.0}},
        {"latency": "fast"},
    ],
)
def test_a_dict_that_is_not_a_count_is_refused(raw):
    with pytest.raises(BadCounts):
        ArmStats.from_dict(raw)


def test_the_variance_is_never_negative_and_is_zero_below_two_values():
    assert MeanStats.of([0.1] * 1000).variance >= 0.0
    assert MeanStats.of([5.0]).variance == 0.0
    assert MeanStats().mean == 0.0 and ProportionStats().failure_rate == 0.0


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_the_experiments_package_is_pure_standard_library(path):
    # It runs inside the controller image: no numpy/scipy, no I/O, nothing from the sidecar.
    allowed = {"math", "random", "dataclasses", "enum", "collections", "typing", "__future__"}
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module)
    outside = {
        name for name in imported if not name.startswith("controller.experiments") and name.split(".")[0] not in allowed
    }
    assert not outside, f"{path.name} imports {sorted(outside)}"
    assert all(name.split(".")[0] in sys.stdlib_module_names or name.startswith("controller.") for name in imported)
