"""The apiserver refuses bad Modelway objects with a message that names the field, and reads
Go durations exactly as controller.api does."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from controller import api
from tests.e2e.crd_support import PROVIDER, ROUTE
from tests.harness.cli import Kubectl
from tests.unit.test_crds_durations import DURATIONS, NOT_DURATIONS

pytestmark = pytest.mark.e2e


# --- refusals --------------------------------------------------------------------------

HEADER_RULE = {"name": "beta", "matches": {"headers": [{"name": "x-tier", "value": "beta"}]},
               "backends": [{"provider": "anthropic", "model": "claude-sonnet-4-5"}]}  # fmt: skip
AZURE = {"type": "azure-openai", "baseURL": "https://r.openai.azure.com", "azure": {"apiVersion": "2024-10-21"}}


def _route(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    obj = copy.deepcopy(ROUTE)
    change(obj["spec"])
    return obj


def _rule0(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    return _route(lambda spec: change(spec["rules"][0]))


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


def _provider(**spec: Any) -> dict[str, Any]:
    obj = copy.deepcopy(PROVIDER)
    obj["spec"] = spec
    return obj


def _policy(kind: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": kind, "metadata": {"name": "bad-policy"}, "spec": spec}


BAD: dict[str, tuple[dict[str, Any], list[str]]] = {
    "all-weights-zero": (
        _rule0(
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
        _rule0(lambda r: r["backends"][0].update(weight=-1)),
        ["spec.rules[0].backends[0].weight", "Invalid value: -1", "should be greater than or equal to 0"],
    ),
    "fallback-equals-a-backend": (
        _rule0(
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
        _route(lambda s: s["rules"].insert(0, {**HEADER_RULE, "name": "default"})),
        ["spec.rules[1]", "Duplicate value", '"name":"default"'],
    ),
    "two-unnamed-rules": (  # both get the default name
        _route(
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
        _route(lambda s: s["rules"].append(HEADER_RULE)),
        [
            "spec.rules",
            "rule default has no matches, so it matches every request and hides the rules after it",
            "only the last rule may be without matches",
        ],
    ),
    "input-tokens-min-above-max": (
        _rule0(lambda r: r.update(matches={"inputTokens": {"min": 5000, "max": 100}})),
        ["spec.rules[0].matches.inputTokens", "inputTokens: min is above max"],
    ),
    "input-tokens-saying-nothing": (
        _rule0(lambda r: r.update(matches={"inputTokens": {}})),
        ["spec.rules[0].matches.inputTokens", "inputTokens needs min or max"],
    ),
    "rule-name-not-a-dns-label": (
        _rule0(lambda r: r.update(name="Beta Testers")),
        [
            "spec.rules[0].name",
            '"Beta Testers" is not a DNS label: use lower-case letters, digits and',
            "e.g. beta-testers",
        ],
    ),
    "duration-in-words": (
        _rule0(lambda r: r.update(timeouts={"total": "10 seconds"})),
        [
            "spec.rules[0].timeouts.total",
            '"10 seconds" is not a duration: write numbers with units, '
            "e.g. 300ms, 1.5s, 1m30s or 2h (units h, m, s, ms, us, ns)",
        ],
    ),
    "zero-timeout": (
        _rule0(lambda r: r.update(timeouts={"connect": "0s"})),
        ["spec.rules[0].timeouts.connect", "must be longer than 0, not 0s"],
    ),
    "first-token-beyond-total": (
        _rule0(lambda r: r.update(timeouts={"total": "30s", "firstToken": "1m"})),
        ["spec.rules[0].timeouts.firstToken", "firstToken (1m) must not be longer than total (30s)"],
    ),
    "backoff-max-below-base": (
        _rule0(lambda r: r.update(retry={"backoffBase": "3s", "backoffMax": "500ms"})),
        ["spec.rules[0].retry.backoffMax", "backoffMax (500ms) must not be shorter than backoffBase (3s)"],
    ),
    "unknown-retry-on": (
        _rule0(lambda r: r.update(retry={"retryOn": ["4xx"]})),
        ["spec.rules[0].retry.retryOn[0]", 'Unsupported value: "4xx"'],
    ),
    "too-many-attempts": (
        _rule0(lambda r: r.update(retry={"attempts": 11})),
        ["spec.rules[0].retry.attempts", "Invalid value: 11", "should be less than or equal to 10"],
    ),
    "header-value-and-regex": (
        _rule0(lambda r: r.update(matches={"headers": [{"name": "x-tier", "value": "beta", "regex": "b.*"}]})),
        ["spec.rules[0].matches.headers[0].regex", "header x-tier: set at most one of value and regex"],
    ),
    "header-name-with-a-space": (
        _rule0(lambda r: r.update(matches={"headers": [{"name": "x tier", "value": "beta"}]})),
        [
            "spec.rules[0].matches.headers[0].name",
            '"x tier" is not a header name: use letters, digits and',
            "(no spaces or colons), e.g. x-user-tier",
        ],
    ),
    "misspelt-field": (_rule0(lambda r: r.update(retries={"attempts": 3})), ['unknown field "spec.rules[0].retries"']),
    "no-rules": (_route(lambda s: s.update(rules=[])), ["spec.rules", "should have at least 1 items"]),
    "unknown-provider-type": (
        _provider(type="watsonx"),
        ["spec.type", 'Unsupported value: "watsonx"', '"openai-compatible"', '"bedrock"'],
    ),
    "bedrock-without-region": (
        _provider(type="bedrock"),
        ["spec.region", "type bedrock needs a region: spec.bedrock.region or spec.region"],
    ),
    "bedrock-settings-on-openai": (
        _provider(type="openai", bedrock={"region": "us-east-1"}),
        ["spec.bedrock", "spec.bedrock is only allowed when type is bedrock, not openai"],
    ),
    "bedrock-region-that-is-no-aws-region": (
        _provider(type="bedrock", bedrock={"region": "Frankfurt"}),
        ["spec.bedrock.region", '"Frankfurt"', "should match"],
    ),
    "vertex-without-vertex": (
        _provider(type="vertex", region="us-east5"),
        ["spec.vertex", "type vertex needs spec.vertex (with project)"],
    ),
    "vertex-without-region": (
        _provider(type="vertex", vertex={"project": "my-project"}),
        ["spec.region", "type vertex needs a region: spec.vertex.region or spec.region"],
    ),
    "vertex-settings-on-openai": (
        _provider(type="openai", vertex={"project": "my-project", "region": "us-east5"}),
        ["spec.vertex", "spec.vertex is only allowed when type is vertex, not openai"],
    ),
    "vertex-unknown-publisher": (
        _provider(type="vertex", vertex={"project": "my-project", "region": "us-east5", "publisher": "meta"}),
        ["spec.vertex.publisher", 'Unsupported value: "meta"'],
    ),
    "entra-client-secret-without-client": (
        _provider(
            **{**AZURE, "azure": {"apiVersion": "2024-10-21", "entra": {"tenantId": "t"}}},
            credentialsRef={"name": "azure"},
        ),
        ["spec.azure.entra", "spec.azure.entra with a credentialsRef (a client secret) needs tenantId and clientId"],
    ),
    "azure-without-api-version": (_provider(**{**AZURE, "azure": {}}), ["spec.azure.apiVersion", "Required value"]),
    "azure-without-azure": (
        _provider(type="azure-openai", baseURL="https://r.openai.azure.com"),
        ["spec.azure", "Required value", "type azure-openai needs spec.azure (with apiVersion)"],
    ),
    "azure-without-base-url": (
        _provider(**{k: v for k, v in AZURE.items() if k != "baseURL"}),
        ["spec.baseURL", "type azure-openai needs spec.baseURL: it has no default endpoint"],
    ),
    "openai-compatible-without-base-url": (
        _provider(type="openai-compatible", hosting="in-cluster"),
        ["spec.baseURL", "type openai-compatible needs spec.baseURL: it has no default endpoint"],
    ),
    "azure-settings-on-openai": (
        _provider(type="openai", azure={"apiVersion": "2024-10-21"}),
        ["spec.azure", "spec.azure is only allowed when type is azure-openai, not openai"],
    ),
    "base-url-without-scheme": (
        _provider(type="openai", baseURL="api.openai.com/v1"),
        ["spec.baseURL", '"api.openai.com/v1"', "should match '^https?://'"],
    ),
    "unknown-hosting": (_provider(type="openai", hosting="on-prem"), ["spec.hosting", 'Unsupported value: "on-prem"']),
    "negative-price": (
        _provider(type="openai", models=[{"name": "gpt-4o", "inputPricePerMillion": -1}]),
        ["spec.models[0].inputPricePerMillion", "Invalid value: -1", "should be greater than or equal to 0"],
    ),
    # Durations as Kubernetes users write them; anything else is named, with what is allowed.
    "negative-duration": (
        _rule0(lambda r: r.update(retry={"backoffBase": "-1s"})),
        ["spec.rules[0].retry.backoffBase", '"-1s" is not a duration', "e.g. 300ms, 1.5s, 1m30s or 2h"],
    ),
    "duration-in-days": (
        _rule0(lambda r: r.update(timeouts={"firstToken": "1d"})),
        ["spec.rules[0].timeouts.firstToken", '"1d" is not a duration', "units h, m, s, ms, us, ns"],
    ),
    # Label selectors: Kubernetes' own, with its operators.
    "selector-in-without-values": (
        _route(lambda s: s.update(workloadSelector={"matchExpressions": [{"key": "tier", "operator": "In"}]})),
        ["spec.workloadSelector.matchExpressions[0].values", "Required value", "operator In needs values (key tier)"],
    ),
    "selector-exists-with-values": (
        _route(
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
        _route(
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
    "policy-pod-selector-not-in-without-values": (
        _policy(
            "ModelPolicy",
            subjects={"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": []}]}},
        ),
        ["spec.subjects.podSelector.matchExpressions[0].values", "operator NotIn needs values (key app)"],
    ),
    "cluster-policy-namespace-selector-does-not-exist-with-values": (
        _policy(
            "ClusterModelPolicy",
            namespaceSelector={"matchExpressions": [{"key": "env", "operator": "DoesNotExist", "values": ["prod"]}]},
        ),
        ["spec.namespaceSelector.matchExpressions[0].values", "operator DoesNotExist takes no values (key env)"],
    ),
    "cluster-policy-pod-selector-label-value-too-long": (
        _policy("ClusterModelPolicy", subjects={"podSelector": {"matchLabels": {"app": "x" * 64}}}),
        ["spec.subjects.podSelector.matchLabels.app", "Too long: may not be more than 63 bytes"],
    ),
    "residency-rule-saying-nothing": (
        _policy("ModelPolicy", residency=[{"dataClass": "personal"}]),
        [
            "spec.residency[0]",
            "a residency rule needs at least one of jurisdictions, regions, hosting; "
            "the rule for dataClass personal has none",
        ],
    ),
    "redact-pattern-named-like-a-built-in-kind": (
        _policy(
            "ModelPolicy",
            residency=[
                {
                    "dataClass": "personal",
                    "jurisdictions": ["eu"],
                    "redact": {"patterns": [{"name": "email", "regex": "x"}]},
                }
            ],
        ),
        ["spec.residency[0].redact.patterns[0].name", "redact pattern name email is a built-in kind"],
    ),
    "redact-masking-nothing": (
        _policy("ClusterModelPolicy", residency=[{"dataClass": "personal", "regions": ["x"], "redact": {"kinds": []}}]),
        ["spec.residency[0].redact", "redact masks nothing"],
    ),
    "redact-pattern-names-twice": (
        _policy(
            "ModelPolicy",
            residency=[
                {
                    "dataClass": "personal",
                    "hosting": ["vpc"],
                    "redact": {"patterns": [{"name": "a", "regex": "x"}, {"name": "a", "regex": "y"}]},
                }
            ],
        ),
        ["spec.residency[0].redact.patterns[1]", "Duplicate value", '"name":"a"'],
    ),
    "redact-unknown-kind": (
        _policy("ModelPolicy", residency=[{"dataClass": "personal", "hosting": ["vpc"], "redact": {"kinds": ["dna"]}}]),
        ["spec.residency[0].redact.kinds[0]", 'Unsupported value: "dna"'],
    ),
    "guardrail-url-not-http": (
        _policy("ModelPolicy", guardrails=[{"name": "g", "url": "ftp://guard.safety.svc/check"}]),
        ["spec.guardrails[0].url", "a guardrail url must start with http:// or https://"],
    ),
    "guardrail-phase-twice": (
        _policy(
            "ClusterModelPolicy", guardrails=[{"name": "g", "url": "http://g/c", "phases": ["request", "request"]}]
        ),
        ["spec.guardrails[0].phases", "phases: each phase once"],
    ),
    "guardrail-timeout-too-long": (
        _policy("ModelPolicy", guardrails=[{"name": "g", "url": "http://g/c", "timeoutMs": 60000}]),
        ["spec.guardrails[0].timeoutMs", "should be less than or equal to 10000"],
    ),
    "guardrail-unknown-kind": (
        _policy("ModelPolicy", guardrails=[{"name": "g", "url": "http://g/c", "kind": "lakera"}]),
        ["spec.guardrails[0].kind", 'Unsupported value: "lakera"'],
    ),
    "unknown-data-class": (
        _policy("ModelPolicy", defaultDataClass="secret"),
        ["spec.defaultDataClass", 'Unsupported value: "secret"', '"public", "internal", "personal", "restricted"'],
    ),
    "limit-setting-no-limit": (
        _policy("ModelPolicy", limits=[{"name": "empty", "per": "namespace"}]),
        ["spec.limits[0]", "limit empty sets no limit: set at least one of requestsPerMinute"],
    ),
    "limit-reroute-without-backends": (
        _policy("ModelPolicy", limits=[{"name": "budget", "usdPerDay": 5, "onBudgetSpent": "reroute"}]),
        ["spec.limits[0].rerouteTo", "limit budget: rerouteTo is required when onBudgetSpent is reroute"],
    ),
    "limit-reroute-without-budget": (
        _policy(
            "ClusterModelPolicy",
            limits=[
                {
                    "name": "rate",
                    "requestsPerMinute": 5,
                    "onBudgetSpent": "reroute",
                    "rerouteTo": [{"provider": "cheap", "model": "small"}],
                }
            ],
        ),
        ["spec.limits[0].onBudgetSpent", "limit rate: onBudgetSpent reroute needs a budget (usdPerDay or usdPerMonth)"],
    ),
    "limit-backends-without-reroute": (
        _policy(
            "ModelPolicy",
            limits=[{"name": "budget", "usdPerDay": 5, "rerouteTo": [{"provider": "cheap", "model": "small"}]}],
        ),
        ["spec.limits[0].rerouteTo", "limit budget: rerouteTo is only used when onBudgetSpent is reroute"],
    ),
    "limit-names-twice": (
        _policy("ModelPolicy", limits=[{"name": "a", "requestsPerMinute": 1}, {"name": "a", "usdPerDay": 1}]),
        ["spec.limits[1]", "Duplicate value", '"name":"a"'],
    ),
    "limit-zero-rate": (
        _policy("ModelPolicy", limits=[{"name": "a", "requestsPerMinute": 0}]),
        ["spec.limits[0].requestsPerMinute", "should be greater than or equal to 1"],
    ),
    "limit-name-not-a-dns-label": (
        _policy("ModelPolicy", limits=[{"name": "Team Tokens", "tokensPerMinute": 1}]),
        ["spec.limits[0].name", '"Team Tokens" is not a DNS label'],
    ),
    "backends-and-experiment": (
        _rule0(lambda r: r.update(experiment=_experiment())),
        ["spec.rules[0]", "set backends, or an experiment whose arms hold the backends, not both"],
    ),
    "experiment-arm-names-twice": (
        _rule0(lambda r: (r.pop("backends"), r.update(experiment=_experiment(names=("a", "a"))))),
        ["spec.rules[0].experiment.arms", "arm names must be unique"],
    ),
    "experiment-one-arm": (
        _rule0(
            lambda r: (r.pop("backends"), r.update(experiment={**_experiment(), "arms": _experiment()["arms"][:1]}))
        ),
        ["spec.rules[0].experiment.arms", "should have at least 2 items"],
    ),
    "experiment-all-arm-weights-zero": (
        _rule0(lambda r: (r.pop("backends"), r.update(experiment=_experiment(weights=(0, 0))))),
        ["spec.rules[0].experiment.arms", "at least one arm needs a weight above 0"],
    ),
    "experiment-zero-effect": (
        _rule0(lambda r: (r.pop("backends"), r.update(experiment={**_experiment(), "minimumDetectableEffect": 0}))),
        ["spec.rules[0].experiment.minimumDetectableEffect", "must be above 0"],
    ),
    "rollout-steps-not-increasing": (
        _rule0(lambda r: (r.pop("backends"), r.update(experiment=_rollout(steps=[5, 50, 50])))),
        ["spec.rules[0].experiment.rollout.steps", "steps must increase"],
    ),
    "rollout-step-above-100": (
        _rule0(lambda r: (r.pop("backends"), r.update(experiment=_rollout(steps=[5, 150])))),
        ["spec.rules[0].experiment.rollout.steps[1]", "should be less than or equal to 100"],
    ),
    "rollout-without-guardrail": (
        _rule0(lambda r: (r.pop("backends"), r.update(experiment=_rollout(guardrails=[])))),
        ["spec.rules[0].experiment.rollout", "a rollout needs at least one guardrail to stop it"],
    ),
    "rollout-adaptive": (
        _rule0(lambda r: (r.pop("backends"), r.update(experiment=_rollout(strategy="adaptive")))),
        ["spec.rules[0].experiment.rollout", "a rollout needs exactly two arms"],
    ),
    "reward-not-adaptive": (
        _rule0(lambda r: (r.pop("backends"), r.update(experiment={**_experiment(), "reward": {"cost": 1}}))),
        ["spec.rules[0].experiment.reward", "a reward is what strategy adaptive maximises"],
    ),
    "reward-all-weights-zero": (
        _rule0(
            lambda r: (
                r.pop("backends"),
                r.update(experiment={**_experiment(), "strategy": "adaptive", "reward": {"quality": 0}}),
            )
        ),
        ["spec.rules[0].experiment.reward", "a reward needs a weight above 0 on quality, cost or latency"],
    ),
    "reward-negative-weight": (
        _rule0(
            lambda r: (
                r.pop("backends"),
                r.update(experiment={**_experiment(), "strategy": "adaptive", "reward": {"cost": -1}}),
            )
        ),
        ["spec.rules[0].experiment.reward.cost", "should be greater than or equal to 0"],
    ),
    "rollout-pause-not-a-duration": (
        _rule0(lambda r: (r.pop("backends"), r.update(experiment=_rollout(pause="10 minutes")))),
        ["spec.rules[0].experiment.rollout.pause", '"10 minutes" is not a duration'],
    ),
    "capacity-saying-nothing": (
        _provider(type="openai", capacity=[{"model": "gpt-4o*"}]),
        ["spec.capacity[0]", "capacity for model gpt-4o*: set requestsPerMinute, tokensPerMinute or both"],
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_object_is_refused_naming_the_field(kubectl: Kubectl, ns: str, case: str) -> None:
    obj, expected = BAD[case]
    namespace = () if obj["kind"] in api.CLUSTER_KINDS else ("-n", ns)
    res = kubectl.apply(obj, *namespace, check=False)
    assert res.returncode != 0, f"accepted: {res.stdout}"
    missing = [text for text in expected if text not in res.stderr]
    assert not missing, f"refusal lacks {missing}:\n{res.stderr}"
    kind = obj["kind"].lower()
    assert kubectl("get", *namespace, kind, obj["metadata"]["name"], check=False).returncode != 0


def test_the_base_objects_of_the_refusals_are_fine(kubectl: Kubectl, ns: str) -> None:
    """So each refusal above is due to its one change."""
    for obj in (ROUTE, PROVIDER, _provider(**AZURE)):
        kubectl.apply(obj, "-n", ns, "--dry-run=server")
    kubectl.apply(_policy("ModelPolicy"), "-n", ns, "--dry-run=server")
    kubectl.apply(_policy("ClusterModelPolicy"), "--dry-run=server")
    limits = [
        {"name": "rate", "requestsPerMinute": 60, "tokensPerMinute": 10_000, "per": "namespace", "models": ["gpt-*"]},
        {"name": "budget", "usdPerDay": 5, "onBudgetSpent": "reroute", "rerouteTo": [{"provider": "c", "model": "m"}]},
    ]
    kubectl.apply(_policy("ModelPolicy", limits=limits), "-n", ns, "--dry-run=server")
    redact = {"kinds": ["email", "iban"], "patterns": [{"name": "employee_id", "regex": "EMP-[0-9]{6}"}]}
    residency = [{"dataClass": "personal", "jurisdictions": ["eu"], "redact": redact}]
    kubectl.apply(_policy("ClusterModelPolicy", residency=residency), "--dry-run=server")
    capacity = [{"model": "gpt-4o*", "requestsPerMinute": 500}, {"model": "*", "tokensPerMinute": 1000}]
    kubectl.apply(_provider(type="openai", capacity=capacity), "-n", ns, "--dry-run=server")
    windows = [{"name": "gpt-4o", "contextWindow": 128000, "maxOutputTokens": 16384}]
    kubectl.apply(_provider(type="openai", models=windows), "-n", ns, "--dry-run=server")
    long_prompts = {**HEADER_RULE, "name": "long", "matches": {"inputTokens": {"min": 30000, "max": 30000}}}
    kubectl.apply(_route(lambda s: s["rules"].insert(0, long_prompts)), "-n", ns, "--dry-run=server")
    guardrails = [
        {"name": "moderation", "kind": "openai-moderation", "url": "http://moderation.safety.svc:8000/v1/moderations"},
        {"name": "secrets", "url": "https://g.safety.svc/check", "phases": ["request"], "timeoutMs": 150},
    ]
    kubectl.apply(_policy("ModelPolicy", guardrails=guardrails), "-n", ns, "--dry-run=server")
    canary = _rule0(lambda r: (r.pop("backends"), r.update(experiment=_rollout() | {"promote": True})))
    kubectl.apply(canary, "-n", ns, "--dry-run=server")
    reward = {"quality": 1, "cost": 0.5, "latency": 0.2}
    adaptive = _rule0(
        lambda r: (r.pop("backends"), r.update(experiment={**_experiment(), "strategy": "adaptive", "reward": reward}))
    )
    kubectl.apply(adaptive, "-n", ns, "--dry-run=server")


# --- durations: the apiserver and controller.api read them alike -------------------------------


def _ns_form(nanos: int) -> str:
    """The same length written another way, to the nanosecond: 1h2m3.500000000s."""
    seconds, ns = divmod(nanos, 10**9)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{seconds}.{ns:09d}s"


def _with_durations(name: str, retry: dict[str, str], timeouts: dict[str, str] | None = None) -> dict[str, Any]:
    obj = _rule0(lambda r: r.update(retry=retry, **({"timeouts": timeouts} if timeouts else {})))
    obj["metadata"]["name"] = name
    return obj


def test_the_apiserver_takes_every_go_duration_api_py_takes(kubectl: Kubectl, ns: str) -> None:
    """And its CEL duration() gives each the length controller.api gives it, to the nanosecond."""
    refused = []
    for text, seconds in DURATIONS.items():
        assert api.duration_seconds(text) == pytest.approx(seconds, abs=1e-12)
        nanos = round(seconds * 1e9)
        retry = {"backoffBase": text, "backoffMax": text, "maxRetryAfter": text}
        ok = _with_durations("go-durations", retry)
        checks = [(ok, True)]
        if nanos > 0:  # firstToken <= total: equal lengths pass, one nanosecond less fails
            checks += [
                (
                    _with_durations(
                        "go-durations", retry, {"total": _ns_form(nanos), "firstToken": text, "connect": text}
                    ),
                    True,
                ),
                (_with_durations("go-durations", retry, {"total": _ns_form(nanos - 1), "firstToken": text}), False),
            ]
        for obj, accept in checks:
            res = kubectl.apply(obj, "-n", ns, "--dry-run=server", check=False)
            if (res.returncode == 0) != accept:
                refused.append(f"{text!r} ({obj['spec']['rules'][0].get('timeouts')}): {res.stderr.strip()}")
    assert not refused, "\n".join(refused)


def test_the_apiserver_refuses_what_api_py_refuses_naming_the_value(kubectl: Kubectl, ns: str) -> None:
    wrong = []
    for text in NOT_DURATIONS:
        with pytest.raises(ValueError):
            api.duration_seconds(text)
        res = kubectl.apply(_with_durations("not-durations", {"maxRetryAfter": text}), "-n", ns, check=False)
        if len(text) > api.DURATION_MAX_LENGTH:
            expected = ["Too long: may not be more than 32 bytes"]
        elif text.isprintable():
            expected = [f'"{text}" is not a duration: write numbers with units']
        else:  # a message may not hold a line break: the rule's plain message stands in
            expected = ["is not a duration: write numbers with units"]
        expected.append("spec.rules[0].retry.maxRetryAfter")
        if res.returncode == 0 or not all(e in res.stderr for e in expected):
            wrong.append(f"{text!r}: rc={res.returncode} {res.stderr.strip()}")
    assert not wrong, "\n".join(wrong)
