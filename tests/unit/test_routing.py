from collections import Counter

import pytest
from multidict import CIMultiDict

from proxy.routing.table import NoMatchingRule, RoutingTable
from proxy.snapshot import parse_snapshot

SNAPSHOT = parse_snapshot(
    {
        "providers": [
            {"name": "a", "type": "openai", "baseUrl": "http://a/v1"},
            {"name": "b", "type": "openai", "baseUrl": "http://b/v1"},
            {"name": "c", "type": "anthropic", "baseUrl": "http://c"},
        ],
        "routes": [
            {
                "name": "chat-route",
                "model": "chat",
                "rules": [
                    {
                        "name": "beta",
                        "matchHeaders": [{"name": "X-Tier", "value": "beta"}],
                        "backends": [{"provider": "c", "model": "claude"}],
                    },
                    {
                        "name": "canary",
                        "matchHeaders": [{"name": "x-user", "regex": "test-.*"}],
                        "backends": [{"provider": "b", "model": "m2"}],
                    },
                    {
                        "name": "default",
                        "backends": [
                            {"provider": "a", "model": "m1", "weight": 3},
                            {"provider": "b", "model": "m2", "weight": 1},
                            {"provider": "c", "model": "off", "weight": 0},
                        ],
                        "fallbacks": [{"provider": "c", "model": "claude"}, {"provider": "a", "model": "m1"}],
                    },
                ],
            },
            {
                "name": "strict",
                "model": "strict",
                "rules": [
                    {
                        "name": "only",
                        "matchHeaders": [{"name": "x-team"}],
                        "backends": [{"provider": "a", "model": "m"}],
                    }
                ],
            },
        ],
    }
)
TABLE = RoutingTable.build(SNAPSHOT)


def test_unknown_model_gives_none_and_models_are_listed():
    assert TABLE.plan("nope", CIMultiDict(), draw=lambda: 0.5) is None
    assert TABLE.models == ["chat", "strict"]


def test_header_rules_match_case_insensitively_in_order():
    plan = TABLE.plan("chat", CIMultiDict({"x-tier": "beta"}), draw=lambda: 0.0)
    assert plan.rule.name == "beta"
    plan = TABLE.plan("chat", CIMultiDict({"X-User": "test-42"}), draw=lambda: 0.0)
    assert plan.rule.name == "canary"
    plan = TABLE.plan("chat", CIMultiDict({"X-User": "prod-42"}), draw=lambda: 0.0)
    assert plan.rule.name == "default"


def test_weights_split_traffic_and_zero_weight_never_picked():
    counts = Counter()
    for i in range(1000):
        plan = TABLE.plan("chat", CIMultiDict(), draw=lambda i=i: i / 1000)
        counts[plan.candidates[0].backend.key] += 1
    assert counts == {"a/m1": 750, "b/m2": 250}


def test_fallbacks_follow_the_pick_without_repeating_it():
    plan = TABLE.plan("chat", CIMultiDict(), draw=lambda: 0.0)
    assert [c.backend.key for c in plan.candidates] == ["a/m1", "c/claude"]
    assert [c.fallback for c in plan.candidates] == [False, True]
    plan = TABLE.plan("chat", CIMultiDict(), draw=lambda: 0.99)
    assert [c.backend.key for c in plan.candidates] == ["b/m2", "c/claude", "a/m1"]


def test_no_matching_rule_is_an_error_naming_the_route():
    with pytest.raises(NoMatchingRule, match="strict"):
        TABLE.plan("strict", CIMultiDict(), draw=lambda: 0.0)


def test_ejected_backends_leave_the_weighted_pick_until_all_are_ejected():
    from proxy.routing.health import OutlierDetector

    now = [0.0]
    health = OutlierDetector(consecutive_failures=3, ejection_seconds=10, clock=lambda: now[0])
    for _ in range(2):
        health.record("a/m1", ok=False)
    health.record("a/m1", ok=True)  # a success resets the streak
    health.record("a/m1", ok=False)
    assert health.healthy("a/m1")
    for _ in range(2):
        health.record("a/m1", ok=False)
    assert not health.healthy("a/m1") and health.any_ejected
    picks = {
        TABLE.plan("chat", CIMultiDict(), draw=lambda i=i: i / 10, healthy=health.healthy).candidates[0].backend.key
        for i in range(10)
    }
    assert picks == {"b/m2"}
    for _ in range(3):
        health.record("b/m2", ok=False)
    picks = {
        TABLE.plan("chat", CIMultiDict(), draw=lambda i=i: i / 10, healthy=health.healthy).candidates[0].backend.key
        for i in range(10)
    }
    assert picks == {"a/m1", "b/m2"}  # nobody healthy: plain weights rather than nothing
    now[0] = 11.0
    assert health.healthy("a/m1") and health.healthy("b/m2") and not health.any_ejected
