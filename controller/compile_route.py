"""Compiling one ModelRoute, pure: its rules, arms and backends as the snapshot's route, and the
name that sidecars and status give a rule's experiment."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import proxy.snapshot as snap
from controller.api import BackendRef, ModelRoute, RouteRule, duration_seconds


def _backend(ref: BackendRef, namespace: str) -> snap.Backend:
    return snap.Backend(provider=f"{namespace}.{ref.provider}", model=ref.model, weight=ref.weight)


def experiment_name(namespace: str, route: str, rule: RouteRule) -> str:
    """How sidecars and status name a rule's experiment: "<namespace>/<route>/<rule>@<spec hash>".

    The hash covers the spec except the arms' weights, so an edited experiment (other arms, metric
    or stop rule) starts afresh with its own counts, while a new split (an adaptive rule's shares, a
    canary's next step) carries on."""
    spec = rule.experiment
    assert spec is not None
    data = spec.model_dump(mode="json", by_alias=True)
    for arm in data["arms"]:
        arm.pop("weight", None)
    data.pop("promote", None)  # what is done with a winner, not what is tested
    data.pop("reward", None)  # what an adaptive rule maximises, not what is counted: a new reward keeps the counts
    if data.get("rollout") is None:
        data.pop("rollout", None)  # names from before rollouts existed stay as they were
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]
    return f"{namespace}/{route}/{rule.name}@{digest}"


def _experiment(
    rule: RouteRule, namespace: str, route: str, weights: Mapping[str, int] | None
) -> snap.Experiment | None:
    spec = rule.experiment
    if spec is None:
        return None
    return snap.Experiment(
        name=experiment_name(namespace, route, rule),
        arms=tuple(
            snap.Arm(
                name=a.name,
                weight=weights.get(a.name, a.weight) if weights is not None else a.weight,
                backends=tuple(_backend(b, namespace) for b in a.backends),
            )
            for a in spec.arms
        ),
        sticky_header=spec.sticky_header,
    )


def _rule(
    rule: RouteRule, namespace: str, route: str = "", weights: Mapping[str, Mapping[str, int]] | None = None
) -> snap.Rule:
    retry, timeouts, tokens = rule.retry, rule.timeouts, rule.matches.input_tokens
    return snap.Rule(
        name=rule.name,
        match_headers=tuple(snap.HeaderMatch(name=h.name, value=h.value, regex=h.regex) for h in rule.matches.headers),
        match_input_tokens=snap.TokenRange(min=tokens.min, max=tokens.max) if tokens is not None else None,
        backends=tuple(_backend(b, namespace) for b in rule.all_backends),
        experiment=_experiment(rule, namespace, route, (weights or {}).get(rule.name)),
        fallbacks=tuple(_backend(b, namespace) for b in rule.fallbacks),
        retry=snap.Retry(
            attempts=retry.attempts,
            retry_on=retry.retry_on,
            backoff_base_seconds=duration_seconds(retry.backoff_base),
            backoff_max_seconds=duration_seconds(retry.backoff_max),
            max_retry_after_seconds=duration_seconds(retry.max_retry_after),
        ),
        timeouts=snap.Timeouts(
            total_seconds=duration_seconds(timeouts.total),
            first_token_seconds=duration_seconds(timeouts.first_token) if timeouts.first_token else None,
            connect_seconds=duration_seconds(timeouts.connect),
        ),
    )


def compile_route(route: ModelRoute, *, arm_weights: Mapping[str, Mapping[str, int]] | None = None) -> snap.Route:
    """`arm_weights`: per rule name, an adaptive experiment's current weights per arm (else the spec's)."""
    namespace = route.metadata.namespace
    return snap.Route(
        name=f"{namespace}/{route.metadata.name}",
        model=route.spec.model,
        rules=tuple(_rule(r, namespace, route.metadata.name, arm_weights) for r in route.spec.rules),
    )
