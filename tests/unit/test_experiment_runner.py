"""The controller's side of experiments: counts taken from sidecars as untrusted input, summed
without double counting, decided, written to status, and restored from status after a restart."""

from __future__ import annotations

from typing import Any

import pytest

from controller.api import parse_resource
from controller.compile import RouteVerdict
from controller.compile_route import experiment_name
from controller.core import RouteSync
from controller.experiment_reports import CountsReport, ReportLedger, parse_counts
from controller.experiment_runner import ExperimentRunner
from controller.experiments.counts import ArmStats, BadCounts, ProportionStats
from controller.status import render, route_status
from controller.workload import Verdict

KEY = ("ModelRoute", "team-a", "chat")


def _route(strategy: str = "fixed", metric: str = "errorRate") -> Any:
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
                            "strategy": strategy,
                            "metric": metric,
                            "minimumDetectableEffect": 0.05,
                            "minimumSample": 30,
                        }
                    }
                ],
            },
        }
    )


ROUTE = _route()
NAME = experiment_name("team-a", "chat", ROUTE.spec.rules[0])


def _counts(ok: int, failed: int) -> dict[str, Any]:
    return ArmStats(requests=ProportionStats(ok, failed)).to_dict()


def _report(sidecar: str, started: float, old: tuple[int, int], new: tuple[int, int], name: str = NAME) -> CountsReport:
    return parse_counts(
        {"sidecar": sidecar, "started": started, "experiments": {name: {"old": _counts(*old), "new": _counts(*new)}}},
        namespace="team-a",
    )


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ({"sidecar": "s", "started": 1, "experiments": {"team-b/chat/default@x": {}}}, "not one of namespace"),
        ({"sidecar": "", "started": 1, "experiments": {}}, "'sidecar'"),
        ({"sidecar": "s", "started": "now", "experiments": {}}, "'started'"),
        ({"sidecar": "s", "started": 1, "experiments": []}, "'experiments'"),
        ({"sidecar": "s", "started": 1, "experiments": {NAME: {"old": {"requests": {"failures": -1}}}}}, "failures"),
        ({"sidecar": "s", "started": 1, "experiments": {NAME: {f"a{i}": {} for i in range(17)}}}, "at most 16"),
        ({"sidecar": "s", "started": 1, "experiments": {f"team-a/{i}": {} for i in range(300)}}, "at most 256"),
    ],
)
def test_a_bad_counts_message_is_refused_whole(message: dict[str, Any], why: str) -> None:
    with pytest.raises(BadCounts, match=why):
        parse_counts(message, namespace="team-a")


def test_a_count_this_controller_does_not_know_is_left_out_and_the_rest_kept() -> None:
    counts = {"requests": {"successes": 3, "failures": 1}, "energy": {"count": 4, "sum": 1.0}}
    report = parse_counts({"sidecar": "s", "started": 1, "experiments": {NAME: {"old": counts}}}, namespace="team-a")
    assert report.experiments[NAME]["old"].requests == ProportionStats(3, 1)


def test_running_totals_are_replaced_not_added_and_a_restart_is_a_new_reporter() -> None:
    ledger = ReportLedger()
    ledger.record("team-a/app", _report("pod-1", 100.0, (10, 1), (10, 0)))
    ledger.record("team-a/app", _report("pod-1", 100.0, (20, 2), (20, 0)))  # later totals of the same sidecar
    ledger.record("team-a/app", _report("pod-1", 100.0, (20, 2), (20, 0)))  # a resend after a reconnect
    ledger.record("team-a/app", _report("pod-2", 100.0, (5, 0), (5, 5)))  # another sidecar
    ledger.record("team-a/app", _report("pod-1", 300.0, (1, 0), (1, 0)))  # pod-1 restarted: its past stays
    totals = ledger.totals(NAME)
    assert totals["old"].requests == ProportionStats(26, 2)
    assert totals["new"].requests == ProportionStats(26, 5)


def _runner(route: Any = ROUTE, **kwargs: Any) -> ExperimentRunner:
    return ExperimentRunner(routes=lambda: {KEY: route}, clock=lambda: 1_000_000.0, **kwargs)


def test_the_runner_names_the_better_arm_and_status_shows_it() -> None:
    runner = _runner()
    told: list[int] = []
    runner.add_listener(lambda: told.append(1))
    runner.tick()
    summary, entries = runner.statuses()[KEY]
    assert summary == "Running" and entries[0]["arms"] == [{"name": "old", "samples": 0}, {"name": "new", "samples": 0}]
    runner.record("team-a/app", _report("pod-1", 1.0, (700, 300), (1000, 0)))
    assert runner.tick() and len(told) == 2
    summary, (entry,) = runner.statuses()[KEY]
    assert summary == "Winner new"
    assert entry["state"] == "Winner" and entry["winner"] == "new" and entry["experiment"] == NAME
    (comparison,) = entry["comparisons"]
    assert comparison["arm"] == "new" and comparison["high"] < 0  # fewer errors than the control, shown
    assert not runner.tick()  # nothing new: no status write
    verdict = RouteVerdict(Verdict(True, "Accepted"), Verdict(True, "ResolvedRefs"), 1, ROUTE)
    desired = route_status(KEY, verdict, RouteSync(synced=0, total=0), experiments=runner.statuses()[KEY])
    body = render(desired, None, "2026-01-01T00:00:00Z")
    assert body["experiment"] == "Winner new" and body["experiments"][0]["winner"] == "new"


def test_a_restarted_controller_keeps_the_decision_and_the_start_from_status() -> None:
    first = _runner()
    first.record("team-a/app", _report("pod-1", 1.0, (700, 300), (1000, 0)))
    first.tick()
    _, entries = first.statuses()[KEY]
    written = {"experiments": list(entries)}
    # The new controller has no counts yet (sidecars have not reported again) and a later clock.
    second = ExperimentRunner(routes=lambda: {KEY: ROUTE}, previous=lambda key: written, clock=lambda: 2_000_000.0)
    second.tick()
    summary, (entry,) = second.statuses()[KEY]
    assert summary == "Winner new" and entry["startedAt"] == entries[0]["startedAt"]


def test_an_edited_experiment_does_not_take_the_old_one_s_decision() -> None:
    first = _runner()
    first.record("team-a/app", _report("pod-1", 1.0, (700, 300), (1000, 0)))
    first.tick()
    written = {"experiments": list(first.statuses()[KEY][1])}
    edited = _route(metric="latency")
    second = ExperimentRunner(routes=lambda: {KEY: edited}, previous=lambda key: written, clock=lambda: 1.0)
    second.tick()
    assert second.statuses()[KEY][0] == "Running"


def test_adaptive_shares_become_weights_once_per_real_move() -> None:
    pushed: list[dict[str, dict[str, int]]] = []
    route = _route(strategy="adaptive")
    runner = _runner(route, set_weights=lambda key, w: pushed.append({**w}))
    runner.tick()
    assert len(pushed) == 1 and abs(pushed[0]["default"]["old"] - 500) < 50  # no data: about even
    runner.tick()
    assert len(pushed) == 1  # the same shares: no new snapshot
    name = experiment_name("team-a", "chat", route.spec.rules[0])
    runner.record("team-a/app", _report("pod-1", 1.0, (70, 30), (100, 0), name=name))
    runner.tick()
    assert len(pushed) == 2 and pushed[1]["default"]["new"] > 900
    summary, (entry,) = runner.statuses()[KEY]
    assert entry["state"] == "Adaptive" and entry["arms"][1]["share"] > 0.9
    assert summary.startswith("old=") and "new=9" in summary
