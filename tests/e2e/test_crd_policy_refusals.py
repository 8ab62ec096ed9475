"""The apiserver refuses bad ModelPolicies and ClusterModelPolicies (selectors, residency and
redaction, guardrails, limits) with a message that names the field."""

from __future__ import annotations

from typing import Any

import pytest

from controller import api
from tests.e2e.crd_support import assert_refused
from tests.harness.cli import Kubectl

pytestmark = pytest.mark.e2e


def _policy(kind: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": kind, "metadata": {"name": "bad-policy"}, "spec": spec}


BAD: dict[str, tuple[dict[str, Any], list[str]]] = {
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
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_policy_is_refused_naming_the_field(kubectl: Kubectl, ns: str, case: str) -> None:
    assert_refused(kubectl, ns, *BAD[case])


def test_the_base_policies_of_the_refusals_are_fine(kubectl: Kubectl, ns: str) -> None:
    """So each refusal above is due to its one change."""
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
    guardrails = [
        {"name": "moderation", "kind": "openai-moderation", "url": "http://moderation.safety.svc:8000/v1/moderations"},
        {"name": "secrets", "url": "https://g.safety.svc/check", "phases": ["request"], "timeoutMs": 150},
    ]
    kubectl.apply(_policy("ModelPolicy", guardrails=guardrails), "-n", ns, "--dry-run=server")
