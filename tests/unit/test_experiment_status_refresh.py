"""A running experiment's status: refreshed on each decision pass that finds new counts (samples,
estimate), not only when it decides; a pass with nothing new writes nothing."""

from __future__ import annotations

import asyncio

from controller.compile_route import experiment_name
from controller.experiment_reports import parse_counts
from controller.experiment_runner import ExperimentRunner
from tests.unit.test_experiment_adaptive import KEY, _report, _route, _stats


def test_a_running_test_s_status_moves_with_its_samples_on_each_pass() -> None:
    """Not only on a decision: each pass that finds new counts changes the entry (samples, estimate), and
    its listeners (the status writer) are told; a pass with nothing new tells no one."""
    route = _route(metric="latency")
    runner = ExperimentRunner(routes=lambda: {KEY: route}, clock=lambda: 1_000_000.0)
    told: list[int] = []
    runner.add_listener(lambda: told.append(1))
    name = experiment_name("team-a", "chat", route.spec.rules[0])
    seen = []
    for n in (40, 80, 120):  # the arms alike: it keeps running
        runner.record(
            "team-a/app",
            parse_counts(
                {
                    "sidecar": "p",
                    "started": 1.0,
                    "experiments": {name: {"old": _stats(n, spread=0.9), "new": _stats(n, spread=0.9)}},
                },
                namespace="team-a",
            ),
        )
        assert runner.tick()
        summary, (entry,) = runner.statuses()[KEY]
        assert summary == "Running"
        seen.append(([a["samples"] for a in entry["arms"]], entry["comparisons"][0]["high"]))
        assert not runner.tick()
    assert [samples for samples, _ in seen] == [[40, 40], [80, 80], [120, 120]]
    assert seen[0][1] > seen[1][1] > seen[2][1]  # the interval narrows as samples come
    assert len(told) == 3


async def test_the_runner_refreshes_status_on_its_interval() -> None:
    route = _route(metric="latency")
    runner = ExperimentRunner(routes=lambda: {KEY: route}, interval=0.01)
    told = asyncio.Event()
    runner.add_listener(told.set)
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(told.wait(), 1)  # first pass: the experiment appears, Running
        told.clear()
        await asyncio.sleep(0.05)
        assert not told.is_set()  # passes with nothing new tell no one
        runner.record("team-a/app", _report(route, {"old": _stats(40), "new": _stats(40)}))
        await asyncio.wait_for(told.wait(), 1)  # counts arrived: the next pass writes them
        assert [a["samples"] for a in runner.statuses()[KEY][1][0]["arms"]] == [40, 40]
    finally:
        task.cancel()
