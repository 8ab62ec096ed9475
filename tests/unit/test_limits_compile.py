"""Policy limits and provider capacity: the API refuses what cannot be enforced, the compiler gives each
workload its limits with the counter key that says what is counted together.

No sockets: resources -> controller.compile -> the snapshot a sidecar would receive.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from controller.api import parse_resource
from controller.compile import Workload, compile_workload, judge
from proxy.snapshot import Snapshot, parse_snapshot, to_wire
from tests.unit.test_compile import provider, resources
from tests.unit.test_policy_compile import EU_SAAS, IN_CLUSTER, US_SAAS, chat_route, cluster_policy, policy

TOKENS = {"name": "tokens", "tokensPerMinute": 10_000}
BUDGET = {"name": "budget", "usdPerDay": 50}


def snapshot_for(*items: Any, workload: Workload | None = None) -> Snapshot:
    view = resources(EU_SAAS, US_SAAS, IN_CLUSTER, chat_route(), *items)
    return compile_workload(judge(view), workload or Workload("team-a", "bot"))


def keys(snapshot: Snapshot) -> dict[str, str]:
    return {limit.name: limit.key for limit in snapshot.policy.limits}


def test_the_counter_key_carries_the_scope_value() -> None:
    limits = [
        {"name": "mine", "requestsPerMinute": 60},
        {"name": "ours", "requestsPerMinute": 600, "per": "namespace"},
        {"name": "all", "requestsPerMinute": 6000, "per": "policy"},
    ]
    bot = keys(snapshot_for(policy("caps", limits=limits)))
    assert bot == {
        "mine": "ModelPolicy/team-a/caps/mine/workload/team-a/bot",
        "ours": "ModelPolicy/team-a/caps/ours/namespace/team-a",
        "all": "ModelPolicy/team-a/caps/all/policy",
    }
    other = keys(snapshot_for(policy("caps", limits=limits), workload=Workload("team-a", "batch")))
    assert other["mine"] != bot["mine"]  # each workload has its own counter
    assert other["ours"] == bot["ours"] and other["all"] == bot["all"]  # shared by the namespace, the policy


def test_a_cluster_policy_counts_per_namespace_across_namespaces() -> None:
    org = cluster_policy("org", limits=[{"name": "ns-tokens", "tokensPerMinute": 1000, "per": "namespace"}])
    team_a = snapshot_for(org, workload=Workload("team-a", "bot"))
    team_b = compile_workload(
        judge(resources(provider("openai-us", ns="team-b", secret=None), chat_route(ns="team-b"), org)),
        Workload("team-b", "bot"),
    )
    assert keys(team_a) == {"ns-tokens": "ClusterModelPolicy/org/ns-tokens/namespace/team-a"}
    assert keys(team_b) == {"ns-tokens": "ClusterModelPolicy/org/ns-tokens/namespace/team-b"}
    (limit,) = team_a.policy.limits
    assert limit.policy == "ClusterModelPolicy org"


def test_every_binding_policy_brings_its_limits_and_others_do_not() -> None:
    snapshot = snapshot_for(
        cluster_policy("org", limits=[TOKENS]),
        policy("caps", limits=[BUDGET]),
        policy("other-team", subjects={"serviceAccounts": ["batch"]}, limits=[{"name": "x", "requestsPerMinute": 1}]),
    )
    assert [(limit.policy, limit.name) for limit in snapshot.policy.limits] == [
        ("ClusterModelPolicy org", "tokens"),
        ("ModelPolicy team-a/caps", "budget"),
    ]


def test_globs_numbers_and_failure_modes_reach_the_snapshot() -> None:
    spec = {
        "name": "gpt",
        "tokensPerMinute": 1000,
        "inputTokensPerMinute": 800,
        "outputTokensPerMinute": 200,
        "concurrentRequests": 4,
        "usdPerMonth": 12.5,
        "routes": ["chat"],
        "providers": ["openai-*"],
        "models": ["gpt-4o*"],
    }
    (limit, rate) = snapshot_for(policy("caps", limits=[spec, {"name": "rate", "requestsPerMinute": 5}])).policy.limits
    assert (limit.routes, limit.providers, limit.models) == (("chat",), ("openai-*",), ("gpt-4o*",))
    assert (limit.tokens_per_minute, limit.input_tokens_per_minute, limit.output_tokens_per_minute) == (1000, 800, 200)
    assert (limit.concurrent_requests, limit.usd_per_month, limit.usd_per_day) == (4, 12.5, None)
    assert limit.failure_mode == "closed"  # a budget: money is not spent while it cannot be counted
    assert rate.failure_mode == "open"  # a rate: availability first
    assert rate.routes is None and rate.providers is None and rate.models is None
    explicit = {"name": "strict", "requestsPerMinute": 5, "failureMode": "closed"}
    (strict,) = snapshot_for(policy("caps", limits=[explicit])).policy.limits
    assert strict.failure_mode == "closed"


def test_reroute_backends_are_named_in_the_workload_namespace_and_their_providers_are_sent() -> None:
    cheap = provider("cheap", secret=None, type_="openai-compatible", baseURL="http://cheap.example/v1")
    spec = {**BUDGET, "onBudgetSpent": "reroute", "rerouteTo": [{"provider": "cheap", "model": "small"}]}
    snapshot = snapshot_for(cheap, policy("caps", limits=[spec]))
    (limit,) = snapshot.policy.limits
    assert limit.on_budget_spent == "reroute"
    assert [(b.provider, b.model) for b in limit.reroute_to] == [("team-a.cheap", "small")]
    assert "team-a.cheap" in {p.name for p in snapshot.providers}  # no route uses it, the budget does


def test_capacity_is_compiled_with_a_key_per_provider_and_model_glob() -> None:
    capped = provider(
        "openai-us",
        secret=None,
        capacity=[
            {"model": "gpt-4o*", "requestsPerMinute": 500, "tokensPerMinute": 30_000},
            {"model": "*", "tokensPerMinute": 1000},
        ],
    )
    snapshot = snapshot_for(capped)
    (compiled,) = [p for p in snapshot.providers if p.name == "team-a.openai-us"]
    assert [(c.key, c.model, c.requests_per_minute, c.tokens_per_minute) for c in compiled.capacity] == [
        ("ModelProvider/team-a/openai-us/capacity/gpt-4o*", "gpt-4o*", 500, 30_000),
        ("ModelProvider/team-a/openai-us/capacity/*", "*", None, 1000),
    ]


def test_limits_survive_the_wire_and_change_the_version() -> None:
    plain = snapshot_for()
    limited = snapshot_for(policy("caps", limits=[TOKENS, BUDGET]))
    assert limited.version != plain.version
    assert parse_snapshot(to_wire(limited)) == limited


def _policy_error(limits: list[dict[str, Any]]) -> str:
    with pytest.raises(ValidationError) as err:
        policy("caps", limits=limits)
    return str(err.value)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ([{"name": "empty"}], "limit empty sets no limit: set at least one of requestsPerMinute"),
        ([{**BUDGET, "onBudgetSpent": "reroute"}], "limit budget: rerouteTo is required when onBudgetSpent is reroute"),
        (
            [{**TOKENS, "onBudgetSpent": "reroute", "rerouteTo": [{"provider": "p", "model": "m"}]}],
            "limit tokens: onBudgetSpent reroute needs a budget (usdPerDay or usdPerMonth) to be spent",
        ),
        (
            [{**BUDGET, "rerouteTo": [{"provider": "p", "model": "m"}]}],
            "limit budget: rerouteTo is only used when onBudgetSpent is reroute",
        ),
        ([TOKENS, {**TOKENS, "requestsPerMinute": 1}], "limits: names must be unique, got ['tokens', 'tokens']"),
        ([{"name": "Team Tokens", "requestsPerMinute": 1}], "'Team Tokens' is not a DNS label"),
        ([{"name": "zero", "requestsPerMinute": 0}], "requestsPerMinute\n  Input should be greater than or equal to 1"),
        ([{"name": "neg", "usdPerDay": -1}], "usdPerDay\n  Input should be greater than or equal to 0"),
        ([{"name": "scope", "requestsPerMinute": 1, "per": "pod"}], "per\n  Input should be 'workload'"),
    ],
)
def test_the_api_refuses_a_limit_that_cannot_be_enforced_naming_the_field(
    limits: list[dict[str, Any]], message: str
) -> None:
    assert message in _policy_error(limits)


def test_more_than_sixteen_limits_are_refused() -> None:
    many = [{"name": f"l{i}", "requestsPerMinute": 1} for i in range(17)]
    assert "limits\n  Tuple should have at most 16 items" in _policy_error(many)


@pytest.mark.parametrize(
    ("capacity", "message"),
    [
        ([{"model": "gpt-4o"}], "capacity for model gpt-4o: set requestsPerMinute, tokensPerMinute or both"),
        (
            [{"model": "*", "requestsPerMinute": 1}, {"model": "*", "tokensPerMinute": 1}],
            "spec.capacity has more than one entry for a model: ['*', '*']",
        ),
        ([{"requestsPerMinute": 1}], "capacity.0.model\n  Field required"),
    ],
)
def test_the_api_refuses_a_capacity_that_says_nothing(capacity: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_resource(
            {
                "kind": "ModelProvider",
                "metadata": {"name": "p", "namespace": "team-a"},
                "spec": {"type": "openai", "capacity": capacity},
            }
        )
    assert message in str(err.value)
