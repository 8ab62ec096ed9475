"""Adaptive rules as the spec writes them: the reward's weights decide which backend the bandit favours,
and a guardrail takes an arm that is worse than the control out of the split for good (status shows
it, a restarted controller keeps it out)."""

from __future__ import annotations

from typing import Any

import pytest

from controller.api import InvalidObject, parse_object, parse_resource
from controller.compile_route import experiment_name
from controller.experiment_reports import CountsReport, parse_counts
from controller.experiment_runner import ExperimentRunner
from controller.experiments.counts import ArmStats, MeanStats, ProportionStats
from controller.status import experiment_events

KEY = ("ModelRoute", "team-a", "chat")


def _route(arms: tuple[str, ...] = ("old", "new"), **experiment: Any) -> Any:
    return parse_resource(_object(arms, **experiment))


def _object(arms: tuple[str, ...] = ("old", "new"), **experiment: Any) -> dict[str, Any]:
    return {
        "kind": "ModelRoute",
        "metadata": {"name": "chat", "namespace": "team-a"},
        "spec": {
            "model": "chat",
            "rules": [
                {
                    "experiment": {
                        "arms": [{"name": a, "backends": [{"provider": "p", "model": a}]} for a in arms],
                        "minimumDetectableEffect": 0.05,
                        "minimumSample": 30,
                    }
                    | experiment
                }
            ],
        },
    }


def _stats(n: int, *, failed: int = 0, latency: float = 1.0, cost: float = 0.0, spread: float = 0.1) -> dict[str, Any]:
    """n requests answered (and `failed` more), with these mean latency and cost, each +-spread of it."""
    latencies = [latency * (1 - spread + 2 * spread * (i % 2)) for i in range(n)]
    costs = [cost * (1 - spread + 2 * spread * (i % 2)) for i in range(n)]
    return ArmStats(
        requests=ProportionStats(n, failed), latency=MeanStats.of(latencies), cost=MeanStats.of(costs)
    ).to_dict()


def _report(route: Any, arms: dict[str, dict[str, Any]]) -> CountsReport:
    name = experiment_name("team-a", "chat", route.spec.rules[0])
    return parse_counts({"sidecar": "pod-1", "started": 1.0, "experiments": {name: arms}}, namespace="team-a")


def _decided(route: Any, arms: dict[str, dict[str, Any]], **kwargs: Any) -> tuple[ExperimentRunner, dict[str, Any]]:
    runner = ExperimentRunner(routes=lambda: {KEY: route}, clock=lambda: 1_000_000.0, **kwargs)
    runner.record("team-a/app", _report(route, arms))
    runner.tick()
    _, (entry,) = runner.statuses()[KEY]
    return runner, entry


def _shares(entry: dict[str, Any]) -> dict[str, float]:
    return {arm["name"]: arm["share"] for arm in entry["arms"]}


# "cheap" costs a tenth of "fast" and takes four times as long: which is better is the reward's call.
CHEAP_OR_FAST = {"cheap": _stats(200, latency=2.0, cost=0.001), "fast": _stats(200, latency=0.5, cost=0.01)}


@pytest.mark.parametrize(
    ("reward", "favoured"),
    [
        ({"cost": 100, "latency": 1}, "fast"),  # 0.1 + 2.0 against 1.0 + 0.5 per request
        ({"cost": 1000, "latency": 1}, "cheap"),  # 1 + 2 against 10 + 0.5
        ({"cost": 1}, "cheap"),
        ({"latency": 1}, "fast"),
    ],
)
def test_the_spec_s_reward_weights_decide_which_backend_gets_the_traffic(
    reward: dict[str, float], favoured: str
) -> None:
    route = _route(("cheap", "fast"), strategy="adaptive", metric="quality", reward=reward)
    _, entry = _decided(route, CHEAP_OR_FAST)
    assert _shares(entry)[favoured] >= 0.9


def test_a_new_reward_keeps_the_counts_an_edited_metric_does_not() -> None:
    name = experiment_name("team-a", "chat", _route(strategy="adaptive", reward={"cost": 1}).spec.rules[0])
    assert name == experiment_name("team-a", "chat", _route(strategy="adaptive", reward={"latency": 2}).spec.rules[0])
    assert name == experiment_name("team-a", "chat", _route(strategy="adaptive").spec.rules[0])
    assert name != experiment_name("team-a", "chat", _route(strategy="adaptive", metric="cost").spec.rules[0])


@pytest.mark.parametrize(
    ("experiment", "why"),
    [
        ({"reward": {"cost": 1}}, "a reward is what strategy adaptive maximises"),
        ({"strategy": "adaptive", "reward": {}}, "a reward needs a weight above 0"),
        ({"strategy": "adaptive", "reward": {"quality": 0, "cost": 0}}, "a reward needs a weight above 0"),
        ({"strategy": "adaptive", "reward": {"latency": -1}}, "greater than or equal to 0"),
        ({"strategy": "adaptive", "reward": {"speed": 1}}, "speed"),
    ],
)
def test_a_bad_reward_is_refused(experiment: dict[str, Any], why: str) -> None:
    """The controller's side (Accepted=False): the API server refuses these already (tests/e2e/test_crd_refusals)."""
    parsed = parse_object(_object(**experiment))
    assert isinstance(parsed, InvalidObject) and why in parsed.message


GUARDED = {"strategy": "adaptive", "metric": "latency", "guardrails": [{"metric": "errorRate", "margin": 0.05}]}
# "bad" is the fastest but fails a third of its requests; "good" is fast and fails as little as the control.
THREE = {
    "old": _stats(200, failed=2, latency=1.0),
    "bad": _stats(200, failed=100, latency=0.2),
    "good": _stats(200, failed=2, latency=0.5),
}


def test_an_arm_worse_than_the_control_on_a_guardrail_leaves_the_split() -> None:
    pushed: list[dict[str, dict[str, int]]] = []
    route = _route(("old", "bad", "good"), **GUARDED)
    runner, entry = _decided(route, THREE, set_weights=lambda key, weights: pushed.append({**weights}))
    shares = _shares(entry)
    assert shares["bad"] == 0.0 and shares["good"] > 0.85 and shares["old"] >= 0.05
    assert pushed[-1]["default"]["bad"] == 0  # the sidecars get weight 0: no request goes there
    (excluded,) = entry["excluded"]
    assert excluded["arm"] == "bad" and excluded["metric"] == "errorRate" and excluded["low"] > 0.05
    assert runner.statuses()[KEY][0].endswith("(excluded bad)")
    before = {"experiments": [{k: v for k, v in entry.items() if k != "excluded"}]}
    (event,) = experiment_events(before, [entry])
    assert (event.type, event.reason) == ("Warning", "ExperimentArmExcluded")
    assert "arm bad gets no more traffic" in event.note and "errorRate guardrail" in event.note
    assert experiment_events({"experiments": [entry]}, [entry]) == []  # written once: no Event again

    # Without the guardrail the fastest arm, for all its errors, would take the traffic.
    unguarded = _route(("old", "bad", "good"), strategy="adaptive", metric="latency")
    _, entry = _decided(unguarded, THREE)
    assert _shares(entry)["bad"] > 0.85 and "excluded" not in entry


def test_an_excluded_arm_stays_out_after_a_restart() -> None:
    route = _route(("old", "bad", "good"), **GUARDED)
    _, entry = _decided(route, THREE)
    written = {"experiments": [entry]}
    # A new controller, no counts yet: without the status the three would share the traffic again.
    second = ExperimentRunner(routes=lambda: {KEY: route}, previous=lambda key: written, clock=lambda: 2_000_000.0)
    second.tick()
    _, (after,) = second.statuses()[KEY]
    assert _shares(after)["bad"] == 0.0 and after["excluded"] == entry["excluded"]
    # What another version wrote that does not read as a breach (or names the control) is left out.
    odd = {"experiments": [entry | {"excluded": [{"arm": "old", **entry["excluded"][0]} | {"arm": "old"}, 7]}]}
    third = ExperimentRunner(routes=lambda: {KEY: route}, previous=lambda key: odd, clock=lambda: 2_000_000.0)
    third.tick()
    assert "excluded" not in third.statuses()[KEY][1][0]
