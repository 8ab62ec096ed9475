"""`modelway check`, the analysis: resources in, findings out (pure, no I/O).

It runs the controller's own judgement and compilation, so a finding here is
exactly what the controller would report or what a sidecar would get, and
adds what only a look across objects shows: a policy that leaves a route no
backend for some data class, a route no workload reaches, a Secret the
controller cannot see, sidecars behind the current generation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import proxy.snapshot as snap
from controller.api import InvalidObject, ModelProvider
from controller.compile import Judgement, compile_workload, judge, select_routes
from controller.store import Key, Resources
from controller.workload import Verdict, Workload

Severity = Literal["error", "warning"]
SECRET_LABEL = ("modelway.io/credentials", "true")


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    object: str  # "ModelRoute team-a/chat", or a file for what could not be read
    problem: str  # names the field where there is one
    fix: str

    def as_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "object": self.object, "problem": self.problem, "fix": self.fix}


@dataclass(frozen=True, slots=True)
class RouteStatus:
    """What the API server says of a route's rollout (cluster mode only)."""

    generation: int
    observed_generation: int
    synced: int
    total: int


# What to do about each reason the controller gives; the verdict's message says what is wrong.
_FIXES = {
    "InvalidRegex": "fix the regex and apply again (Python `re` syntax); sidecars keep the last valid version",
    "InvalidURL": "fix spec.baseURL and apply again; sidecars keep the last valid version",
    "Invalid": "fix the field named and apply again; sidecars keep the last valid version",
    "Conflicted": "give one of the routes a spec.workloadSelector, or delete one of them",
    "BackendNotFound": "create the ModelProvider named, or correct the backend's provider",
    "InvalidBackend": "fix the ModelProvider named (see its own finding)",
    "UnsupportedOperation": "use a provider type that serves this operation, or change spec.operation",
    "SecretNotFound": "create the Secret, or label it: kubectl label secret -n {namespace} <name> "
    "modelway.io/credentials=true",
    "SecretKeyNotFound": "add the key to the Secret, or point spec.credentialsRef.key at the key it has",
    "RefNotFound": "correct the name, or create what it names (a wildcard pattern is never reported)",
}


def _name(kind: str, namespace: str, name: str) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _verdict_finding(key: Key, verdict: Verdict, *, severity: Severity = "error") -> Finding:
    fix = _FIXES.get(verdict.reason, "see the message").replace("{namespace}", key[1] or "<namespace>")
    return Finding(severity, _name(*key), f"{verdict.reason}: {verdict.message}", fix)


def judgement_findings(judgement: Judgement, invalid: Iterable[InvalidObject]) -> list[Finding]:
    """What the controller would put in each object's status, where it is not fine."""
    findings = []
    invalid_keys = {(i.kind, i.metadata.namespace, i.metadata.name) for i in invalid}
    for key, provider in sorted(judgement.providers.items()):
        for verdict in (provider.accepted, provider.resolved_refs):
            if not verdict.ok and not (key in invalid_keys and verdict is provider.resolved_refs):
                findings.append(_verdict_finding(key, verdict))
    for key, route in sorted(judgement.routes.items()):
        for verdict in (route.accepted, route.resolved_refs):
            if not verdict.ok and not (key in invalid_keys and verdict is route.resolved_refs):
                findings.append(_verdict_finding(key, verdict))
    for key, policy in sorted(judgement.policy_verdicts.items()):
        if not policy.accepted.ok:
            findings.append(_verdict_finding(key, policy.accepted))
        elif not policy.resolved_refs.ok:  # still enforced (it allows nothing by that name): a likely typo
            findings.append(_verdict_finding(key, policy.resolved_refs, severity="warning"))
    return findings


def unlabelled_secrets(resources: Resources) -> list[Finding]:
    """Secrets a provider uses that the controller in a cluster would not see (folder mode: all are read)."""
    secrets = {(s.metadata.namespace, s.metadata.name): s for s in resources.secrets}
    users: dict[tuple[str, str], list[str]] = {}
    label, value = SECRET_LABEL
    for provider in resources.providers:
        ref = provider.spec.credentials_ref
        secret = secrets.get((provider.metadata.namespace, ref.name)) if ref else None
        if secret is not None and secret.metadata.labels.get(label) != value:
            users.setdefault((secret.metadata.namespace, secret.metadata.name), []).append(provider.metadata.name)
    return [
        Finding(
            "error",
            _name("Secret", namespace, name),
            f"has no label {label}={value}, so the controller in a cluster does not see it "
            f"(used by ModelProvider {', '.join(sorted(providers))})",
            f"kubectl label secret -n {namespace} {name} {label}={value}",
        )
        for (namespace, name), providers in sorted(users.items())
    ]


def unlabelled_secret(provider: ModelProvider, secret: Mapping[str, Any]) -> Finding:
    """A provider's Secret exists in the cluster, but without the label the controller selects by."""
    label, value = SECRET_LABEL
    name, namespace = (
        provider.spec.credentials_ref.name if provider.spec.credentials_ref else "",
        provider.metadata.namespace,
    )
    return Finding(
        "error",
        _name("Secret", namespace, name),
        f"exists but has no label {label}={value}, so the controller does not see it "
        f"(ModelProvider {provider.metadata.name} reports SecretNotFound)",
        f"kubectl label secret -n {namespace} {name} {label}={value}",
    )


def workloads_of(resources: Resources, pods: Sequence[Workload] | None) -> list[Workload]:
    """The workloads to check routes and policies for: the real pods when known; else, per namespace
    with routes, its default ServiceAccount and each one a policy names."""
    if pods is not None:  # many pods, few distinct workloads
        distinct = {w.cache_key(): w for w in pods}
        return [distinct[k] for k in sorted(distinct, key=repr)]
    namespaces = {r.metadata.namespace for r in resources.routes}
    accounts: dict[str, set[str]] = {ns: {"default"} for ns in namespaces}
    for policy in resources.policies:  # a cluster policy's names apply in every namespace it selects
        for namespace in [policy.metadata.namespace] if policy.metadata.namespace else list(accounts):
            if namespace in accounts:
                accounts[namespace].update(policy.spec.subjects.service_accounts)
    return [Workload(namespace=ns, service_account=sa) for ns in sorted(accounts) for sa in sorted(accounts[ns])]


def policy_gaps(judgement: Judgement, workloads: Sequence[Workload]) -> list[Finding]:
    """Rules a policy leaves without any backend for some data class a workload's request may have."""
    gaps: dict[tuple[str, str, str], set[str]] = {}  # (route, rule, class) -> workloads
    reasons: dict[tuple[str, str, str], str] = {}
    for workload in workloads:
        snapshot = compile_workload(judgement, workload)
        policy = snapshot.policy
        classes = snap.DATA_CLASSES[snap.DATA_CLASS_RANK[policy.default_class] :]
        denied_routes = {d.model: d.denial for d in policy.denied_routes}
        for route in snapshot.routes:
            for rule in route.rules:
                for data_class in classes:
                    why = _rule_denied(rule, data_class, policy, denied_routes.get(route.model))
                    if why is not None:
                        key = (route.name, rule.name, data_class)
                        gaps.setdefault(key, set()).add(f"{workload.namespace}/{workload.service_account}")
                        reasons.setdefault(key, why)
    grouped: dict[tuple[str, str, tuple[str, ...], str], list[str]] = {}  # one finding for the classes alike
    for (route_name, rule_name, gap_class), who in gaps.items():
        group = (route_name, rule_name, tuple(sorted(who)), reasons[(route_name, rule_name, gap_class)])
        grouped.setdefault(group, []).append(gap_class)
    findings = []
    for (route_name, rule_name, workload_names, reason), alike in sorted(grouped.items()):
        namespace, _, name = route_name.partition("/")
        ordered = sorted(alike, key=snap.DATA_CLASS_RANK.__getitem__)
        findings.append(
            Finding(
                "warning",
                _name("ModelRoute", namespace, name),
                f"rule {rule_name}: no backend is left for {' and '.join(ordered)} requests of "
                f"{', '.join(workload_names)}: {reason}; such requests are refused (403)",
                "allow one of the rule's backends for that class in the policy, or add a fallback it allows",
            )
        )
    return findings


def _rule_denied(rule: snap.Rule, data_class: str, policy: snap.Policy, route_denial: snap.Denial | None) -> str | None:
    if route_denial is not None:
        return f"{route_denial.policy}: {route_denial.reason}"
    denied = {d.key: d.denial for d in policy.denied_backends if data_class in d.data_classes}
    backends = [b.key for b in rule.backends if b.weight > 0] + [b.key for b in rule.fallbacks]
    if backends and all(b in denied for b in backends):
        first = denied[backends[0]]
        return f"{first.policy}: {first.reason}"
    return None


def unreachable_routes(judgement: Judgement, workloads: Sequence[Workload]) -> list[Finding]:
    """Served routes that no pod of their namespace runs (cluster mode: the pods are known)."""
    reached = {id(route) for workload in workloads for route in select_routes(judgement, workload)}
    findings = []
    for namespace, routes in sorted(judgement.served_by_namespace.items()):
        for route in routes:
            if id(route) in reached:
                continue
            selector = route.spec.workload_selector
            why = (
                f"its workloadSelector {selector.model_dump(by_alias=True, exclude_defaults=True)} matches no pod"
                if selector is not None
                else "another route serves its model to every pod"
            )
            findings.append(
                Finding(
                    "warning",
                    _name("ModelRoute", namespace, route.metadata.name),
                    f"no pod in namespace {namespace} runs this route: {why}",
                    "check the selector against the pods' labels (kubectl get pods --show-labels), or delete the route",
                )
            )
    return findings


def stale_sidecars(statuses: Mapping[Key, RouteStatus]) -> list[Finding]:
    findings = []
    for key, status in sorted(statuses.items()):
        if status.observed_generation < status.generation:
            findings.append(
                Finding(
                    "warning",
                    _name(*key),
                    f"the controller has not reported on generation {status.generation} yet "
                    f"(status speaks of {status.observed_generation})",
                    "check that the controller runs: kubectl -n modelway-system get pods",
                )
            )
        elif status.synced < status.total:
            findings.append(
                Finding(
                    "warning",
                    _name(*key),
                    f"{status.total - status.synced}/{status.total} sidecars do not run generation "
                    f"{status.generation} yet",
                    "see `modelway status` and the route's Programmed condition",
                )
            )
    return findings


def analyze(
    resources: Resources, *, pods: Sequence[Workload] | None = None, statuses: Mapping[Key, RouteStatus] | None = None
) -> list[Finding]:
    """Every finding for these resources; `pods` and `statuses` come from a live cluster."""
    judgement = judge(resources)
    workloads = workloads_of(resources, pods)
    findings = judgement_findings(judgement, resources.invalid)
    findings += policy_gaps(judgement, workloads)
    if pods is not None:
        findings += unreachable_routes(judgement, workloads)
    findings += stale_sidecars(statuses or {})
    return findings


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)
