"""Promotion and gradual rollouts: the step logic on simulated arms (fixed seeds), the split the
runner sets in the snapshot, what status and Events show, and a restart carrying on from status."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import ValidationError

from controller.api import parse_resource
from controller.compile import RouteVerdict
from controller.compile_route import experiment_name
from controller.core import RouteSync
from controller.experiment_reports import CountsReport, parse_counts
from controller.experiment_runner import ExperimentRunner
from controller.experiments.counts import ArmStats, ProportionStats
from controller.experiments.decide import Guardrail, Metric
from controller.experiments.rollout import RolloutPlan, RolloutState, advance, candidate_share, start
from controller.status import experiment_events, render, route_status
from controller.workload import Verdict
from tests.unit.experiment_sim import ArmModel, draw

KEY = ("ModelRoute", "team-a", "chat")
PLAN = RolloutPlan(
    steps=(5, 25, 50, 100), pause_seconds=600, guardrails=(Guardrail(Metric.ERROR_RATE, 0.02),), min_samples=200
)


def _simulate(candidate: ArmModel, seed: int, *, per_look: int = 400, looks: int = 200) -> tuple[Any, list[int]]:
    """A look a minute, `per_look` requests a minute split by the current step; the shares seen."""
    rng = random.Random(seed)
    control = ArmModel(error_rate=0.02)
    counts = {"stable": ArmStats(), "canary": ArmStats()}
    progress, shares = start(0.0), []
    for look in range(1, looks + 1):
        share = candidate_share(PLAN, progress)
        shares.append(share)
        canary = round(per_look * share / 100)
        metrics = frozenset({Metric.ERROR_RATE})
        counts = {
            "stable": counts["stable"].merge(draw(rng, control, per_look - canary, metrics)),
            "canary": counts["canary"].merge(draw(rng, candidate, canary, metrics)),
        }
        progress = advance(PLAN, progress, counts, control="stable", now=look * 60.0)
        if progress.done:
            break
    return progress, shares


@pytest.mark.parametrize("seed", range(20))
def test_a_healthy_canary_goes_through_every_step_in_order(seed: int) -> None:
    progress, shares = _simulate(ArmModel(error_rate=0.02), seed)
    assert progress.state is RolloutState.ROLLED_OUT
    assert candidate_share(PLAN, progress) == 100
    seen = sorted(set(shares), key=shares.index)
    assert seen == [5, 25, 50, 100]
    assert all(shares.count(s) >= 10 for s in seen)  # each held for its 10-minute pause at least


@pytest.mark.parametrize("seed", range(20))
def test_a_failing_canary_is_rolled_back_before_it_takes_half_the_traffic(seed: int) -> None:
    progress, shares = _simulate(ArmModel(error_rate=0.25), seed)
    assert progress.state is RolloutState.ROLLED_BACK
    assert candidate_share(PLAN, progress) == 0
    assert progress.breach is not None and progress.breach.arm == "canary"
    assert max(shares) <= 25


def test_a_step_holds_for_its_pause_and_until_both_arms_have_the_minimum_sample() -> None:
    counted = {
        "stable": ArmStats(requests=ProportionStats(1000, 0)),
        "canary": ArmStats(requests=ProportionStats(199, 0)),
    }
    progress = start(0.0)
    assert advance(PLAN, progress, counted, control="stable", now=10_000.0) == progress  # 199 < 200
    enough = counted | {"canary": ArmStats(requests=ProportionStats(200, 0))}
    assert advance(PLAN, progress, enough, control="stable", now=599.0) == progress  # the pause is 600 s
    moved = advance(PLAN, progress, enough, control="stable", now=600.0)
    assert (moved.step, moved.step_started, candidate_share(PLAN, moved)) == (1, 600.0, 25)


def test_bad_rollouts_are_refused_by_the_api() -> None:
    def route(**experiment: Any) -> Any:
        arms = [{"name": n, "backends": [{"provider": "p", "model": n}]} for n in ("a", "b")]
        spec = {"arms": arms, "minimumDetectableEffect": 0.05, "guardrails": [{"margin": 0.02}]} | experiment
        return parse_resource(
            {
                "kind": "ModelRoute",
                "metadata": {"name": "chat", "namespace": "team-a"},
                "spec": {"model": "chat", "rules": [{"experiment": spec}]},
            }
        )

    route(rollout={"steps": [5, 50, 100], "pause": "10m"})
    with pytest.raises(ValidationError, match="must increase"):
        route(rollout={"steps": [5, 50, 50], "pause": "10m"})
    with pytest.raises(ValidationError, match="less than or equal to 100"):
        route(rollout={"steps": [5, 150], "pause": "10m"})
    with pytest.raises(ValidationError, match="guardrail"):
        route(rollout={"steps": [5, 50], "pause": "10m"}, guardrails=[])
    three = [{"name": n, "backends": [{"provider": "p", "model": n}]} for n in ("a", "b", "c")]
    with pytest.raises(ValidationError, match="exactly two arms"):
        route(rollout={"steps": [5, 50], "pause": "10m"}, arms=three)


# --- the runner ----------------------------------------------------------------------


def _route(**experiment: Any) -> Any:
    return parse_resource(
        {
            "kind": "ModelRoute",
            "metadata": {"name": "chat", "namespace": "team-a"},
            "spec": {
                "model": "chat",
                "rules": [
                    {
                        "experiment": {
                            "arms": [
                                {"name": "old", "backends": [{"provider": "p", "model": "old"}]},
                                {"name": "new", "backends": [{"provider": "p", "model": "new"}]},
                            ],
                            "minimumDetectableEffect": 0.05,
                            "minimumSample": 30,
                            "guardrails": [{"metric": "errorRate", "margin": 0.05}],
                        }
                        | experiment
                    }
                ],
            },
        }
    )


def _report(route: Any, sidecar: str, old: tuple[int, int], new: tuple[int, int]) -> CountsReport:
    name = experiment_name("team-a", "chat", route.spec.rules[0])
    counts = {
        "old": ArmStats(requests=ProportionStats(*old)).to_dict(),
        "new": ArmStats(requests=ProportionStats(*new)).to_dict(),
    }
    return parse_counts({"sidecar": sidecar, "started": 1.0, "experiments": {name: counts}}, namespace="team-a")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _status(runner: ExperimentRunner, route: Any, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    verdict = RouteVerdict(Verdict(True, "Accepted"), Verdict(True, "ResolvedRefs"), 1, route)
    desired = route_status(KEY, verdict, RouteSync(synced=0, total=0), experiments=runner.statuses()[KEY])
    return render(desired, previous, "2026-01-01T00:00:00Z")


def test_a_promoted_winner_takes_all_the_traffic_with_an_event_once() -> None:
    route = _route(promote=True, guardrails=[])
    pushed: list[dict[str, dict[str, int]]] = []
    runner = ExperimentRunner(routes=lambda: {KEY: route}, set_weights=lambda k, w: pushed.append({**w}))
    runner.tick()
    assert pushed == []  # running: the spec's weights hold
    before = _status(runner, route)
    runner.record("team-a/app", _report(route, "pod-1", (700, 300), (1000, 0)))
    runner.tick()
    assert pushed == [{"default": {"old": 0, "new": 1000}}]
    after = _status(runner, route, before)
    assert after["experiment"] == "Winner new (promoted)"
    (entry,) = after["experiments"]
    assert entry["promoted"] == "new" and [a["share"] for a in entry["arms"]] == [0.0, 1.0]
    (event,) = experiment_events(before, after["experiments"])
    assert (event.type, event.reason) == ("Normal", "ExperimentPromoted") and "arm new" in event.note
    assert experiment_events(after, after["experiments"]) == []  # written once: no Event again
    runner.tick()
    assert len(pushed) == 1  # no new snapshot while nothing moves


def test_without_promote_a_winner_leaves_the_split_alone() -> None:
    route = _route(guardrails=[])
    pushed: list[Any] = []
    runner = ExperimentRunner(routes=lambda: {KEY: route}, set_weights=lambda k, w: pushed.append(w))
    runner.record("team-a/app", _report(route, "pod-1", (700, 300), (1000, 0)))
    runner.tick()
    assert runner.statuses()[KEY][0] == "Winner new" and pushed == []
    assert "promoted" not in runner.statuses()[KEY][1][0]


def test_a_promoting_experiment_stopped_by_a_guardrail_sends_everything_back_to_the_control() -> None:
    route = _route(promote=True)
    pushed: list[dict[str, dict[str, int]]] = []
    runner = ExperimentRunner(routes=lambda: {KEY: route}, set_weights=lambda k, w: pushed.append({**w}))
    runner.tick()
    before = _status(runner, route)
    runner.record("team-a/app", _report(route, "pod-1", (1000, 0), (600, 400)))
    runner.tick()
    assert pushed == [{"default": {"old": 1000, "new": 0}}]
    after = _status(runner, route, before)
    assert after["experiment"] == "StoppedByGuardrail (rolled back)"
    assert after["experiments"][0]["rolledBack"] is True
    (event,) = experiment_events(before, after["experiments"])
    assert (event.type, event.reason) == ("Warning", "ExperimentRolledBack")
    assert "arm old" in event.note and "arm new breached the errorRate guardrail" in event.note


def test_a_rollout_steps_up_after_each_pause_and_a_restart_carries_on() -> None:
    route = _route(rollout={"steps": [10, 50], "pause": "10m"})
    clock, pushed = Clock(), []
    runner = ExperimentRunner(
        routes=lambda: {KEY: route}, set_weights=lambda k, w: pushed.append({**w}["default"]), clock=clock
    )
    runner.tick()
    assert pushed == [{"old": 900, "new": 100}]
    assert runner.statuses()[KEY][0] == "RollingOut new=10%"
    runner.record("team-a/app", _report(route, "pod-1", (900, 10), (100, 1)))
    clock.now += 599
    runner.tick()
    assert len(pushed) == 1  # the pause is not over
    clock.now += 1
    first = _status(runner, route)
    runner.tick()
    assert pushed[-1] == {"old": 500, "new": 500}
    written = _status(runner, route, first)
    entry = written["experiments"][0]
    assert entry["state"] == "RollingOut" and entry["rollout"]["step"] == 1 and entry["rollout"]["share"] == 50
    (event,) = experiment_events(first, written["experiments"])
    assert event.reason == "ExperimentStepAdvanced" and "50%" in event.note

    # A new controller: no counts yet, the step and its start from status.
    restarted, pushed_again = Clock(clock.now + 300), []
    second = ExperimentRunner(
        routes=lambda: {KEY: route},
        previous=lambda key: written,
        set_weights=lambda k, w: pushed_again.append({**w}["default"]),
        clock=restarted,
    )
    second.tick()
    assert pushed_again == [{"old": 500, "new": 500}]
    assert second.statuses()[KEY][1][0]["rollout"]["stepStartedAt"] == entry["rollout"]["stepStartedAt"]
    second.record("team-a/app", _report(route, "pod-1", (1400, 14), (600, 6)))
    restarted.now += 299
    second.tick()
    assert second.statuses()[KEY][1][0]["state"] == "RollingOut"  # 599 s into the step
    restarted.now += 1
    second.tick()
    summary, (done,) = second.statuses()[KEY]
    assert summary == "RolledOut new" and done["promoted"] == "new" and pushed_again[-1] == {"old": 0, "new": 1000}


def test_a_rollout_breach_rolls_back_at_once_whatever_the_pause() -> None:
    route = _route(rollout={"steps": [10, 50], "pause": "1h"})
    pushed: list[dict[str, int]] = []
    runner = ExperimentRunner(routes=lambda: {KEY: route}, set_weights=lambda k, w: pushed.append({**w}["default"]))
    runner.tick()
    before = _status(runner, route)
    runner.record("team-a/app", _report(route, "pod-1", (900, 10), (60, 40)))
    runner.tick()
    assert pushed[-1] == {"old": 1000, "new": 0}
    after = _status(runner, route, before)
    entry = after["experiments"][0]
    assert after["experiment"] == "RolledBack new"
    assert entry["state"] == "RolledBack" and entry["rolledBack"] is True and entry["guardrail"]["arm"] == "new"
    assert [e.reason for e in experiment_events(before, after["experiments"])] == ["ExperimentRolledBack"]


def test_switching_promote_on_keeps_the_experiment_and_its_counts() -> None:
    plain, promoting = _route(), _route(promote=True)
    assert experiment_name("team-a", "chat", plain.spec.rules[0]) == experiment_name(
        "team-a", "chat", promoting.spec.rules[0]
    )
    rolling = _route(rollout={"steps": [10, 50], "pause": "10m"})
    assert experiment_name("team-a", "chat", rolling.spec.rules[0]) != experiment_name(
        "team-a", "chat", plain.spec.rules[0]
    )


def test_promote_switched_on_after_the_win_promotes_and_switched_off_hands_the_split_back() -> None:
    plain, promoting = _route(guardrails=[]), _route(promote=True, guardrails=[])
    served = {KEY: plain}
    pushed: list[dict[str, dict[str, int]]] = []
    runner = ExperimentRunner(routes=lambda: dict(served), set_weights=lambda k, w: pushed.append({**w}))
    runner.record("team-a/app", _report(plain, "pod-1", (700, 300), (1000, 0)))
    runner.tick()
    assert pushed == []
    served[KEY] = promoting
    runner.tick()
    assert pushed == [{"default": {"old": 0, "new": 1000}}]
    served[KEY] = plain
    runner.tick()
    assert pushed[-1] == {}  # the spec's weights again
