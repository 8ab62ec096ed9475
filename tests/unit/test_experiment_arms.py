"""Arm assignment on the sidecar: weights honoured, sticky users stay on one arm on every sidecar."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from typing import Any

import pytest
from multidict import CIMultiDict

from controller.api import InvalidObject, parse_object, parse_resource
from controller.compile import compile_route
from proxy.routing.arms import ArmPicker, sticky_point
from proxy.routing.table import RoutingTable
from proxy.snapshot import parse_snapshot

EXPERIMENT = "team-a/chat/default"


def _snapshot(weights: tuple[int, int] = (1, 3), sticky: str | None = "x-user-id") -> Any:
    experiment: dict[str, Any] = {
        "name": EXPERIMENT,
        "arms": [
            {"name": "control", "weight": weights[0], "backends": [{"provider": "a", "model": "big"}]},
            {"name": "mini", "weight": weights[1], "backends": [{"provider": "b", "model": "mini"}]},
        ],
    }
    if sticky:
        experiment["stickyHeader"] = sticky
    return parse_snapshot(
        {
            "providers": [
                {"name": "a", "type": "openai", "baseUrl": "http://a/v1"},
                {"name": "b", "type": "openai", "baseUrl": "http://b/v1"},
                {"name": "c", "type": "openai", "baseUrl": "http://c/v1"},
            ],
            "routes": [
                {
                    "name": "team-a/chat",
                    "model": "chat",
                    "rules": [
                        {
                            "backends": [{"provider": "a", "model": "big"}, {"provider": "b", "model": "mini"}],
                            "fallbacks": [{"provider": "c", "model": "spare"}],
                            "experiment": experiment,
                        }
                    ],
                }
            ],
        }
    )


def _within_binomial(hits: int, n: int, p: float) -> bool:
    return abs(hits - n * p) <= 4.5 * math.sqrt(n * p * (1 - p))  # a chance of about 1e-5 to fail by luck


def test_the_arm_s_backends_are_the_candidates_then_the_rule_s_fallbacks() -> None:
    table = RoutingTable.build(_snapshot())
    low = table.plan("chat", CIMultiDict(), draw=lambda: 0.1)  # control owns [0, 0.25)
    high = table.plan("chat", CIMultiDict(), draw=lambda: 0.9)
    assert low is not None and high is not None
    assert (low.experiment, low.arm) == (EXPERIMENT, "control")
    assert [c.backend.key for c in low.candidates] == ["a/big", "c/spare"]
    assert (high.arm, [c.backend.key for c in high.candidates]) == ("mini", ["b/mini", "c/spare"])


def test_weights_are_honoured_by_draw_and_by_sticky_key() -> None:
    table = RoutingTable.build(_snapshot(weights=(1, 3)))
    rng = random.Random(7)
    n = 20_000
    by_draw = sum(table.plan("chat", CIMultiDict(), draw=rng.random).arm == "mini" for _ in range(n))  # type: ignore[union-attr]
    by_key = sum(
        table.plan("chat", CIMultiDict({"x-user-id": f"user-{i}"}), draw=lambda: 0.0).arm == "mini"  # type: ignore[union-attr]
        for i in range(n)
    )
    assert _within_binomial(by_draw, n, 0.75), by_draw
    assert _within_binomial(by_key, n, 0.75), by_key


def test_an_arm_with_weight_zero_gets_nothing() -> None:
    picker = ArmPicker.of([0, 5, 0])
    assert {picker.index(i / 1000) for i in range(1000)} == {1}


def test_one_user_sees_one_arm_whatever_the_draw() -> None:
    table = RoutingTable.build(_snapshot(weights=(1, 1)))
    for user in ("alice", "bob", "carol", "dave"):
        arms = {
            table.plan("chat", CIMultiDict({"X-User-Id": user}), draw=lambda d=d: d).arm  # type: ignore[union-attr,misc]
            for d in (0.0, 0.3, 0.6, 0.99)
        }
        assert len(arms) == 1, (user, arms)


_OTHER_PROCESS = """
import json, sys
from proxy.routing.arms import sticky_point
print(json.dumps([sticky_point(sys.argv[1], f"user-{i}") for i in range(200)]))
"""


def test_sticky_assignment_is_the_same_in_another_process() -> None:
    """Another sidecar is another process, with another hash seed: the point must not depend on it."""
    mine = [sticky_point(EXPERIMENT, f"user-{i}") for i in range(200)]
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", _OTHER_PROCESS, EXPERIMENT],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert json.loads(out) == mine
    assert len(set(mine)) == 200 and all(0 <= p < 1 for p in mine)


def test_another_experiment_splits_users_independently() -> None:
    same = sum(
        (sticky_point("ns/a/default", f"u{i}") < 0.5) == (sticky_point("ns/b/default", f"u{i}") < 0.5)
        for i in range(4000)
    )
    assert _within_binomial(same, 4000, 0.5)


def test_the_controller_compiles_arms_into_the_snapshot() -> None:
    route = parse_resource(
        {
            "kind": "ModelRoute",
            "metadata": {"name": "chat", "namespace": "team-a"},
            "spec": {
                "model": "chat",
                "rules": [
                    {
                        "experiment": {
                            "arms": [
                                {"name": "control", "backends": [{"provider": "openai", "model": "gpt-4o"}]},
                                {"name": "mini", "weight": 2, "backends": [{"provider": "openai", "model": "mini"}]},
                            ],
                            "minimumDetectableEffect": 0.05,
                            "stickyHeader": "x-user-id",
                        }
                    }
                ],
            },
        }
    )
    (rule,) = compile_route(route).rules  # type: ignore[arg-type]
    assert [b.key for b in rule.backends] == ["team-a.openai/gpt-4o", "team-a.openai/mini"]
    assert rule.experiment is not None
    assert rule.experiment.name.startswith("team-a/chat/default@")
    assert [(a.name, a.weight) for a in rule.experiment.arms] == [("control", 1), ("mini", 2)]
    adaptive = compile_route(route, arm_weights={"default": {"control": 300, "mini": 700}})  # type: ignore[arg-type]
    assert [a.weight for a in adaptive.rules[0].experiment.arms] == [300, 700]  # type: ignore[union-attr]


def _rule_with(experiment: dict[str, Any], **rule: Any) -> dict[str, Any]:
    return {
        "kind": "ModelRoute",
        "metadata": {"name": "chat", "namespace": "team-a"},
        "spec": {"model": "chat", "rules": [{"experiment": experiment, **rule}]},
    }


_ARMS = [
    {"name": "control", "backends": [{"provider": "p", "model": "a"}]},
    {"name": "mini", "backends": [{"provider": "p", "model": "b"}]},
]


@pytest.mark.parametrize(
    ("experiment", "rule", "why"),
    [
        ({"arms": _ARMS, "minimumDetectableEffect": 0.1}, {"backends": [{"provider": "p", "model": "a"}]}, "not both"),
        ({"arms": [_ARMS[0], {**_ARMS[1], "name": "control"}], "minimumDetectableEffect": 0.1}, {}, "unique"),
        ({"arms": _ARMS[:1], "minimumDetectableEffect": 0.1}, {}, "at least 2"),
        ({"arms": [{**a, "weight": 0} for a in _ARMS], "minimumDetectableEffect": 0.1}, {}, "weight above 0"),
        ({"arms": _ARMS, "minimumDetectableEffect": 0}, {}, "above 0"),
        ({"arms": _ARMS, "minimumDetectableEffect": 0.1, "minimumSample": 10}, {}, "greater than or equal to 30"),
        ({"arms": _ARMS, "minimumDetectableEffect": 0.1, "maxDuration": "0s"}, {}, "longer than 0"),
        (
            {"arms": _ARMS, "minimumDetectableEffect": 0.1},
            {"fallbacks": [{"provider": "p", "model": "b"}]},
            "also a backend",
        ),
    ],
)
def test_api_py_refuses_a_bad_experiment(experiment: dict[str, Any], rule: dict[str, Any], why: str) -> None:
    invalid = parse_object(_rule_with(experiment, **rule))
    assert isinstance(invalid, InvalidObject) and why in invalid.message, invalid
