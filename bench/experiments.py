"""The experiments' stop rule as figures: false stops under A/A, power and sample size under A/B.

Not a speed benchmark: a table for the README from the same seeded pure simulator the unit
tests use (tests/unit/experiment_sim.py), with more runs. Every experiment is looked at after
every batch of 50 requests per arm until it stops or reaches 400 looks (20,000 per arm).

    python -m bench.experiments [--runs 2000]

Columns: how the runs ended (share with a winner, with NoDifference, stopped by a guardrail,
still undecided at the cap) and the requests per arm at the stop (median and mean). The
fixed-horizon column is what a test read once needs per arm for 80% power at the mde.
"""

from __future__ import annotations

import argparse
import statistics
import time

from controller.experiments.decide import Guardrail, Metric, SequentialSpec, State
from tests.unit.experiment_sim import ArmModel, Summary, simulate

BATCH, LOOKS = 50, 400


def _fixed_horizon(sd: float, mde: float, alpha: float = 0.05, power: float = 0.8) -> float:
    z = statistics.NormalDist().inv_cdf
    return 2 * sd * sd * (z(1 - alpha / 2) + z(power)) ** 2 / (mde * mde)


def _scenarios() -> list[tuple[str, SequentialSpec, dict[str, ArmModel], str, float | None]]:
    quality = SequentialSpec(metric=Metric.QUALITY, mde=0.02)
    errors = SequentialSpec(metric=Metric.ERROR_RATE, mde=0.02)
    guarded = SequentialSpec(
        metric=Metric.QUALITY, mde=0.02, guardrails=(Guardrail(Metric.ERROR_RATE, 0.03),), guardrail_min_samples=100
    )
    same, err5 = ArmModel(), ArmModel(error_rate=0.05)
    q_fixed = _fixed_horizon(0.2, 0.02)
    e_fixed = _fixed_horizon((0.05 * 0.95) ** 0.5, 0.02)
    return [
        ("A/A quality (sd 0.2, mde 0.02)", quality, {"a": same, "b": same}, "-", q_fixed),
        ("A/A quality, 3 arms (alpha/2 each)", quality, {"a": same, "b": same, "c": same}, "-", q_fixed),
        ("A/A error rate 5% (mde 2 pts)", errors, {"a": err5, "b": err5}, "-", e_fixed),
        (
            "A/A latency lognormal (mde 0.1 s)",
            SequentialSpec(metric=Metric.LATENCY, mde=0.1),
            {"a": same, "b": same},
            "-",
            None,
        ),
        ("A/B quality +0.02 (= mde)", quality, {"a": same, "b": ArmModel(quality_mean=0.72)}, "b", q_fixed),
        ("A/B quality +0.03 (1.5 x mde)", quality, {"a": same, "b": ArmModel(quality_mean=0.73)}, "b", q_fixed),
        ("A/B errors 5% -> 7% (= mde)", errors, {"a": err5, "b": ArmModel(error_rate=0.07)}, "a", e_fixed),
        ("A/B errors 5% -> 8%", errors, {"a": err5, "b": ArmModel(error_rate=0.08)}, "a", e_fixed),
        (
            "guardrail errors 2% -> 10% (margin 3 pts)",
            guarded,
            {"a": ArmModel(), "b": ArmModel(error_rate=0.10)},
            "-",
            None,
        ),
    ]


def _row(name: str, summary: Summary, right: str, fixed: float | None, seconds: float) -> str:
    winners = summary.rate(State.WINNER)
    right_share = f"{summary.rate(State.WINNER, right):.1%}" if right != "-" else "-"
    return (
        f"| {name} | {summary.runs} | {winners:.1%} | {right_share} | {summary.rate(State.NO_DIFFERENCE):.1%} "
        f"| {summary.rate(State.STOPPED_BY_GUARDRAIL):.1%} | {summary.rate(State.RUNNING):.1%} "
        f"| {summary.median_samples:,.0f} | {summary.mean_samples:,.0f} | {'-' if fixed is None else f'{fixed:,.0f}'} "
        f"| {seconds:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    print(f"alpha 0.05, a look after every {BATCH} requests per arm, at most {LOOKS} looks")
    print(
        "| scenario | runs | any winner | right winner | NoDifference | guardrail | undecided "
        "| median n/arm | mean n/arm | fixed-horizon n/arm | CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for seed, (name, spec, models, right, fixed) in enumerate(_scenarios(), start=1):
        started = time.process_time()
        summary = simulate(spec, models, control="a", seed=seed, runs=args.runs, batch=BATCH, max_looks=LOOKS)
        print(_row(name, summary, right, fixed, time.process_time() - started), flush=True)


if __name__ == "__main__":
    main()
