"""The apiserver refuses bad ModelRoutes (rules, matches, retries and timeouts, selectors,
experiments and rollouts) with a message that names the field."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.crd_support import ROUTE, assert_refused, route_with, rule0_with
from tests.harness.cli import Kubectl

pytestmark = pytest.mark.e2e


HEADER_RULE = {"name": "beta", "matches": {"headers": [{"name": "x-tier", "value": "beta"}]},
               "backends": [{"provider": "anthropic", "model": "claude-sonnet-4-5"}]}  # fmt: skip


def _experiment(names: tuple[str, str] = ("control", "mini"), weights: tuple[int, int] = (1, 1)) -> dict[str, Any]:
    return {
        "arms": [
            {"name": names[0], "weight": weights[0], "backends": [{"provider": "openai", "model": "gpt-4o"}]},
            {"name": names[1], "weight": weights[1], "backends": [{"provider": "openai", "model": "gpt-4o-mini"}]},
        ],
        "minimumDetectableEffect": 0.02,
    }


def _rollout(*, steps: list[int] | None = None, pause: str = "10m", **experiment: Any) -> dict[str, Any]:
    spec = {**_experiment(), "guardrails": [{"metric": "errorRate", "margin": 0.02}]}
    return spec | {"rollout": {"steps": steps or [5, 25, 50, 100], "pause": pause}} | experiment


BAD: dict[str, tuple[dict[str, Any], list[str]]] = {
    "all-weights-zero": (
        rule0_with(
            lambda r: r.update(
                backends=[
                    {"provider": "openai", "model": "gpt-4o", "weight": 0},
                    {"provider": "azure-eu", "model": "gpt-4o", "weight": 0},
                ]
            )
        ),
        ["spec.rules[0].backends", "at least one backend needs a weight above 0"],
    ),
    "negative-weight": (
        rule0_with(lambda r: r["backends"][0].update(weight=-1)),
        ["spec.rules[0].backends[0].weight", "Invalid value: -1", "should be greater than or equal to 0"],
    ),
    "fallback-equals-a-backend": (
        rule0_with(
            lambda r: r.update(
                fallbacks=[
                    {"provider": "anthropic", "model": "claude-haiku-4-5"},
                    {"provider": "openai", "model": "gpt-4o"},
                ]
            )
        ),
        [
            "spec.rules[0].fallbacks",
            "fallback openai/gpt-4o is also a backend of this rule",
            "a fallback must differ from the rule's backends (provider and model)",
        ],
    ),
    "duplicate-rule-names": (
        route_with(lambda s: s["rules"].insert(0, {**HEADER_RULE, "name": "default"})),
        ["spec.rules[1]", "Duplicate value", '"name":"default"'],
    ),
    "two-unnamed-rules": (  # both get the default name
        route_with(
            lambda s: s.update(
                rules=[
                    {k: v for k, v in HEADER_RULE.items() if k != "name"},
                    {"backends": [{"provider": "openai", "model": "gpt-4o"}]},
                ]
            )
        ),
        ["spec.rules[1]", "Duplicate value", '"name":"default"'],
    ),
    "catch-all-rule-not-last": (
        route_with(lambda s: s["rules"].append(HEADER_RULE)),
        [
            "spec.rules",
            "rule default has no matches, so it matches every request and hides the rules after it",
            "only the last rule may be without matches",
        ],
    ),
    "input-tokens-min-above-max": (
        rule0_with(lambda r: r.update(matches={"inputTokens": {"min": 5000, "max": 100}})),
        ["spec.rules[0].matches.inputTokens", "inputTokens: min is above max"],
    ),
    "input-tokens-saying-nothing": (
        rule0_with(lambda r: r.update(matches={"inputTokens": {}})),
        ["spec.rules[0].matches.inputTokens", "inputTokens needs min or max"],
    ),
    "rule-name-not-a-dns-label": (
        rule0_with(lambda r: r.update(name="Beta Testers")),
        [
            "spec.rules[0].name",
            '"Beta Testers" is not a DNS label: use lower-case letters, digits and',
            "e.g. beta-testers",
        ],
    ),
    "duration-in-words": (
        rule0_with(lambda r: r.update(timeouts={"total": "10 seconds"})),
        [
            "spec.rules[0].timeouts.total",
            '"10 seconds" is not a duration: write numbers with units, '
            "e.g. 300ms, 1.5s, 1m30s or 2h (units h, m, s, ms, us, ns)",
        ],
    ),
    "zero-timeout": (
        rule0_with(lambda r: r.update(timeouts={"connect": "0s"})),
        ["spec.rules[0].timeouts.connect", "must be longer than 0, not 0s"],
    ),
    "first-token-beyond-total": (
        rule0_with(lambda r: r.update(timeouts={"total": "30s", "firstToken": "1m"})),
        ["spec.rules[0].timeouts.firstToken", "firstToken (1m) must not be longer than total (30s)"],
    ),
    "backoff-max-below-base": (
        rule0_with(lambda r: r.update(retry={"backoffBase": "3s", "backoffMax": "500ms"})),
        ["spec.rules[0].retry.backoffMax", "backoffMax (500ms) must not be shorter than backoffBase (3s)"],
    ),
    "unknown-retry-on": (
        rule0_with(lambda r: r.update(retry={"retryOn": ["4xx"]})),
        ["spec.rules[0].retry.retryOn[0]", 'Unsupported value: "4xx"'],
    ),
    "too-many-attempts": (
        rule0_with(lambda r: r.update(retry={"attempts": 11})),
        ["spec.rules[0].retry.attempts", "Invalid value: 11", "should be less than or equal to 10"],
    ),
    "header-value-and-regex": (
        rule0_with(lambda r: r.update(matches={"headers": [{"name": "x-tier", "value": "beta", "regex": "b.*"}]})),
        ["spec.rules[0].matches.headers[0].regex", "header x-tier: set at most one of value and regex"],
    ),
    "header-name-with-a-space": (
        rule0_with(lambda r: r.update(matches={"headers": [{"name": "x tier", "value": "beta"}]})),
        [
            "spec.rules[0].matches.headers[0].name",
            '"x tier" is not a header name: use letters, digits and',
            "(no spaces or colons), e.g. x-user-tier",
        ],
    ),
    "misspelt-field": (
        rule0_with(lambda r: r.update(retries={"attempts": 3})),
        ['unknown field "spec.rules[0].retries"'],
    ),
    "no-rules": (route_with(lambda s: s.update(rules=[])), ["spec.rules", "should have at least 1 items"]),
    # Durations as Kubernetes users write them; anything else is named, with what is allowed.
    "negative-duration": (
        rule0_with(lambda r: r.update(retry={"backoffBase": "-1s"})),
        ["spec.rules[0].retry.backoffBase", '"-1s" is not a duration', "e.g. 300ms, 1.5s, 1m30s or 2h"],
    ),
    "duration-in-days": (
        rule0_with(lambda r: r.update(timeouts={"firstToken": "1d"})),
        ["spec.rules[0].timeouts.firstToken", '"1d" is not a duration', "units h, m, s, ms, us, ns"],
    ),
    # Label selectors: Kubernetes' own, with its operators.
    "selector-in-without-values": (
        route_with(lambda s: s.update(workloadSelector={"matchExpressions": [{"key": "tier", "operator": "In"}]})),
        ["spec.workloadSelector.matchExpressions[0].values", "Required value", "operator In needs values (key tier)"],
    ),
    "selector-exists-with-values": (
        route_with(
            lambda s: s.update(
                workloadSelector={"matchExpressions": [{"key": "tier", "operator": "Exists", "values": ["gold"]}]}
            )
        ),
        [
            "spec.workloadSelector.matchExpressions[0].values",
            "Forbidden",
            "operator Exists takes no values (key tier): leave values out, or use In or NotIn",
        ],
    ),
    "selector-unknown-operator": (
        route_with(
            lambda s: s.update(
                workloadSelector={"matchExpressions": [{"key": "tier", "operator": "in", "values": ["gold"]}]}
            )
        ),
        [
            "spec.workloadSelector.matchExpressions[0].operator",
            'Unsupported value: "in"',
            '"In", "NotIn", "Exists", "DoesNotExist"',
        ],
    ),
    "backends-and-experiment": (
        rule0_with(lambda r: r.update(experiment=_experiment())),
        ["spec.rules[0]", "set backends, or an experiment whose arms hold the backends, not both"],
    ),
    "experiment-arm-names-twice": (
        rule0_with(lambda r: (r.pop("backends"), r.update(experiment=_experiment(names=("a", "a"))))),
        ["spec.rules[0].experiment.arms", "arm names must be unique"],
    ),
    "experiment-one-arm": (
        rule0_with(
            lambda r: (r.pop("backends"), r.update(experiment={**_experiment(), "arms": _experiment()["arms"][:1]}))
        ),
        ["spec.rules[0].experiment.arms", "should have at least 2 items"],
    ),
    "experiment-all-arm-weights-zero": (
        rule0_with(lambda r: (r.pop("backends"), r.update(experiment=_experiment(weights=(0, 0))))),
        ["spec.rules[0].experiment.arms", "at least one arm needs a weight above 0"],
    ),
    "experiment-zero-effect": (
        rule0_with(lambda r: (r.pop("backends"), r.update(experiment={**_experiment(), "minimumDetectableEffect": 0}))),
        ["spec.rules[0].experiment.minimumDetectableEffect", "must be above 0"],
    ),
    "rollout-steps-not-increasing": (
        rule0_with(lambda r: (r.pop("backends"), r.update(experiment=_rollout(steps=[5, 50, 50])))),
        ["spec.rules[0].experiment.rollout.steps", "steps must increase"],
    ),
    "rollout-step-above-100": (
        rule0_with(lambda r: (r.pop("backends"), r.update(experiment=_rollout(steps=[5, 150])))),
        ["spec.rules[0].experiment.rollout.steps[1]", "should be less than or equal to 100"],
    ),
    "rollout-without-guardrail": (
        rule0_with(lambda r: (r.pop("backends"), r.update(experiment=_rollout(guardrails=[])))),
        ["spec.rules[0].experiment.rollout", "a rollout needs at least one guardrail to stop it"],
    ),
    "rollout-adaptive": (
        rule0_with(lambda r: (r.pop("backends"), r.update(experiment=_rollout(strategy="adaptive")))),
        ["spec.rules[0].experiment.rollout", "a rollout needs exactly two arms"],
    ),
    "reward-not-adaptive": (
        rule0_with(lambda r: (r.pop("backends"), r.update(experiment={**_experiment(), "reward": {"cost": 1}}))),
        ["spec.rules[0].experiment.reward", "a reward is what strategy adaptive maximises"],
    ),
    "reward-all-weights-zero": (
        rule0_with(
            lambda r: (
                r.pop("backends"),
                r.update(experiment={**_experiment(), "strategy": "adaptive", "reward": {"quality": 0}}),
            )
        ),
        ["spec.rules[0].experiment.reward", "a reward needs a weight above 0 on quality, cost or latency"],
    ),
    "reward-negative-weight": (
        rule0_with(
            lambda r: (
                r.pop("backends"),
                r.update(experiment={**_experiment(), "strategy": "adaptive", "reward": {"cost": -1}}),
            )
        ),
        ["spec.rules[0].experiment.reward.cost", "should be greater than or equal to 0"],
    ),
    "rollout-pause-not-a-duration": (
        rule0_with(lambda r: (r.pop("backends"), r.update(experiment=_rollout(pause="10 minutes")))),
        ["spec.rules[0].experiment.rollout.pause", '"10 minutes" is not a duration'],
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_route_is_refused_naming_the_field(kubectl: Kubectl, ns: str, case: str) -> None:
    assert_refused(kubectl, ns, *BAD[case])


def test_the_base_routes_of_the_refusals_are_fine(kubectl: Kubectl, ns: str) -> None:
    """So each refusal above is due to its one change."""
    kubectl.apply(ROUTE, "-n", ns, "--dry-run=server")
    long_prompts = {**HEADER_RULE, "name": "long", "matches": {"inputTokens": {"min": 30000, "max": 30000}}}
    kubectl.apply(route_with(lambda s: s["rules"].insert(0, long_prompts)), "-n", ns, "--dry-run=server")
    canary = rule0_with(lambda r: (r.pop("backends"), r.update(experiment=_rollout() | {"promote": True})))
    kubectl.apply(canary, "-n", ns, "--dry-run=server")
    reward = {"quality": 1, "cost": 0.5, "latency": 0.2}
    adaptive = rule0_with(
        lambda r: (r.pop("backends"), r.update(experiment={**_experiment(), "strategy": "adaptive", "reward": reward}))
    )
    kubectl.apply(adaptive, "-n", ns, "--dry-run=server")
