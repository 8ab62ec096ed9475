"""ModelPolicy and ClusterModelPolicy, pure: which policies bind a workload, and what they leave it.

Policies only ever take away. Every policy that binds a workload applies (the
ClusterModelPolicies whose namespaceSelector matches its namespace, and the
ModelPolicies of its namespace whose subjects match it), and a backend is
usable only if none of them denies it, so a namespace policy can narrow a
cluster policy but never widen it. What a workload is left with is compiled
into its snapshot (`proxy.snapshot.Policy`): the sidecar only classifies each
request and drops what the policy denies for that class.

Residency rules bind upward: a rule for `personal` binds `restricted` too, so
raising a request's class never widens where its data may go.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

import msgspec

import proxy.snapshot as snap
from controller.api import ClusterModelPolicy, ModelPolicy, ModelRoute, PolicyLimit, ResidencyRule
from controller.selectors import matches
from controller.workload import Verdict, Workload

AnyPolicy = ModelPolicy | ClusterModelPolicy

DATA_CLASS_ANNOTATION = "modelway.io/data-class"  # on a Pod or a Namespace: the workload's default
NO_POLICY_DEFAULT: snap.DataClass = "internal"
_RANK = snap.DATA_CLASS_RANK
_GLOB = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class PolicyVerdict:
    accepted: Verdict
    resolved_refs: Verdict
    generation: int


def label(policy: AnyPolicy) -> str:
    """How messages, audit lines and spans name a policy."""
    if isinstance(policy, ClusterModelPolicy):
        return f"ClusterModelPolicy {policy.metadata.name}"
    return f"ModelPolicy {policy.metadata.namespace}/{policy.metadata.name}"


def in_scope(policy: AnyPolicy, *, namespace: str, namespace_labels: Mapping[str, str]) -> bool:
    """Whether the policy may bind workloads of `namespace` (its subjects aside)."""
    if isinstance(policy, ClusterModelPolicy):
        return matches(policy.spec.namespace_selector, namespace_labels)
    return policy.metadata.namespace == namespace


def binds(policy: AnyPolicy, workload: Workload, *, namespace_labels: Mapping[str, str]) -> bool:
    if not in_scope(policy, namespace=workload.namespace, namespace_labels=namespace_labels):
        return False
    subjects = policy.spec.subjects
    if subjects.service_accounts and workload.service_account not in subjects.service_accounts:
        return False
    return matches(subjects.pod_selector, workload.labels)


def ordered(policies: Iterable[AnyPolicy]) -> tuple[AnyPolicy, ...]:
    """Cluster policies first, then by namespace and name: refusals name the broadest policy first."""
    return tuple(sorted(policies, key=lambda p: (isinstance(p, ModelPolicy), p.metadata.namespace, p.metadata.name)))


# --- what one policy denies ------------------------------------------------------------


def _allowed(patterns: Sequence[str] | None, name: str) -> bool:
    return patterns is None or any(fnmatchcase(name, pattern) for pattern in patterns)


def _short_name(compiled_name: str) -> str:
    return compiled_name.partition(".")[2] or compiled_name  # "<namespace>.<name>": namespaces have no dots


def _residency_problem(rule: ResidencyRule, provider: snap.Provider) -> str | None:
    for fact, value, allowed in (
        ("jurisdiction", provider.jurisdiction, rule.jurisdictions),
        ("region", provider.region, rule.regions),
        ("hosting", provider.hosting, rule.hosting),
    ):
        if allowed is not None and (value or "").lower() not in {a.lower() for a in allowed}:
            return f"{fact} {value or '(not set)'} is not in {list(allowed)}"
    return None


def backend_denial(policy: AnyPolicy, provider: snap.Provider, model: str) -> snap.BackendDenial | None:
    """What `policy` denies of one backend: denied for which classes and why, or None (a residency
    rule with `redact` masks instead: `backend_redactions`)."""
    access = policy.spec.access
    name = _short_name(provider.name)
    problem = None
    if not _allowed(access.providers, name):
        problem = f"provider {name} is not in access.providers {list(access.providers or ())}"
    elif not _allowed(access.models, model):
        problem = f"model {model} is not in access.models {list(access.models or ())}"
    if problem is not None:
        return snap.BackendDenial(
            provider=provider.name,
            model=model,
            data_classes=snap.DATA_CLASSES,
            denial=snap.Denial(policy=label(policy), reason=problem),
        )
    for rule in sorted(policy.spec.residency, key=lambda r: _RANK[r.data_class]):
        if rule.redact is not None:
            continue
        problem = _residency_problem(rule, provider)
        if problem is not None:  # the lowest class it fails: denied from there up
            classes = snap.DATA_CLASSES[_RANK[rule.data_class] :]
            reason = f"{name}: {problem} for data class {rule.data_class}" + (" and above" if len(classes) > 1 else "")
            return snap.BackendDenial(
                provider=provider.name,
                model=model,
                data_classes=classes,
                denial=snap.Denial(policy=label(policy), reason=reason),
            )
    return None


def backend_redactions(policy: AnyPolicy, provider: snap.Provider, model: str) -> tuple[snap.BackendRedaction, ...]:
    """The classes `policy` lets reach one backend only masked: those its residency rules with
    `redact` bind and the backend fails (the rules of each class merged, the strictest wins), below
    any class the policy denies it outright."""
    denied = backend_denial(policy, provider, model)
    ceiling = _RANK[denied.data_classes[0]] if denied is not None else len(snap.DATA_CLASSES)
    failing = [
        (rule, _compiled_redaction(rule))
        for rule in policy.spec.residency
        if rule.redact is not None and _residency_problem(rule, provider) is not None
    ]
    if not failing:
        return ()
    by_redaction: dict[snap.Redaction, list[snap.DataClass]] = {}
    for rank in range(ceiling):
        binding = [redaction for rule, redaction in failing if _RANK[rule.data_class] <= rank]
        if binding:
            by_redaction.setdefault(snap.merge_redactions(binding), []).append(snap.DATA_CLASSES[rank])
    return tuple(
        snap.BackendRedaction(
            provider=provider.name, model=model, data_classes=tuple(classes), policy=label(policy), redaction=redaction
        )
        for redaction, classes in by_redaction.items()
    )


def _compiled_redaction(rule: ResidencyRule) -> snap.Redaction:
    spec = rule.redact
    assert spec is not None
    return snap.Redaction(
        kinds=spec.kinds,
        patterns=tuple(snap.RedactionPattern(name=p.name, regex=p.regex) for p in spec.patterns),
        restore=spec.restore,
    )


def _route_denial(policy: AnyPolicy, route_name: str) -> snap.Denial | None:
    patterns = policy.spec.access.routes
    if _allowed(patterns, route_name):
        return None
    return snap.Denial(
        policy=label(policy), reason=f"route {route_name} is not in access.routes {list(patterns or ())}"
    )


# --- what a workload is left with ------------------------------------------------------


def floor_class(
    policies: Sequence[AnyPolicy], workload: Workload, namespace_annotations: Mapping[str, str]
) -> snap.DataClass:
    """The workload's default class: its pod's annotation, else its namespace's, never below a policy's."""
    candidates: list[snap.DataClass] = [p.spec.default_data_class for p in policies if p.spec.default_data_class]
    annotated = workload.data_class or namespace_annotations.get(DATA_CLASS_ANNOTATION)
    if annotated in _RANK:
        candidates.append(annotated)  # type: ignore[arg-type]  # checked against the classes
    return max(candidates, key=_RANK.__getitem__) if candidates else NO_POLICY_DEFAULT


def compile_policy(
    *,
    policies: Sequence[AnyPolicy],
    workload: Workload,
    namespace_annotations: Mapping[str, str],
    routes: Sequence[snap.Route],
    providers: Mapping[str, snap.Provider],
) -> snap.Policy:
    """The snapshot's policy section for one workload; `policies` are those that bind it, `ordered`."""
    if not policies:
        return snap.Policy(
            workload=f"{workload.namespace}/{workload.service_account}",
            default_class=floor_class((), workload, namespace_annotations),
        )
    denied_routes = []
    for route in routes:
        name = route.name.partition("/")[2]
        denial = next((d for p in policies if (d := _route_denial(p, name)) is not None), None)
        if denial is not None:
            denied_routes.append(snap.RouteDenial(model=route.model, denial=denial))
    backends = sorted(
        {(b.provider, b.model) for route in routes for rule in route.rules for b in (*rule.backends, *rule.fallbacks)}
    )
    denied_backends = [
        denied
        for provider, model in backends
        if provider in providers
        for p in policies
        if (denied := backend_denial(p, providers[provider], model)) is not None
    ]
    redacted_backends = [
        redacted
        for provider, model in backends
        if provider in providers
        for p in policies
        for redacted in backend_redactions(p, providers[provider], model)
    ]
    return snap.Policy(
        workload=f"{workload.namespace}/{workload.service_account}",
        policies=tuple(label(p) for p in policies),
        default_class=floor_class(policies, workload, namespace_annotations),
        detect_personal_data=any(p.spec.detect_personal_data for p in policies),
        denied_routes=tuple(denied_routes),
        denied_backends=tuple(denied_backends),
        redacted_backends=tuple(redacted_backends),
        limits=compile_limits(policies, workload),
        guardrails=tuple(
            msgspec.convert({**g.model_dump(by_alias=True), "policy": label(p)}, snap.Guardrail)
            for p in policies
            for g in p.spec.guardrails
        ),
    )


# --- limits ----------------------------------------------------------------------------


def limit_owner(policy: AnyPolicy) -> str:
    """How a policy's counter keys begin: `ModelPolicy/<ns>/<name>` or `ClusterModelPolicy/<name>`."""
    meta = policy.metadata
    if isinstance(policy, ClusterModelPolicy):
        return f"ClusterModelPolicy/{meta.name}"
    return f"ModelPolicy/{meta.namespace}/{meta.name}"


def counter_key(policy: AnyPolicy, limit: PolicyLimit, workload: Workload) -> str:
    """The counter a limit counts this workload's requests on; every sidecar of the same scope
    computes the same key, so they share it (`ModelPolicy/<ns>/<name>/<limit>/workload/<ns>/<sa>`,
    `.../namespace/<ns>`, `.../policy`; a ClusterModelPolicy has no namespace part)."""
    owner = limit_owner(policy)
    if limit.per == "workload":
        scope = f"workload/{workload.namespace}/{workload.service_account}"
    elif limit.per == "namespace":
        scope = f"namespace/{workload.namespace}"
    else:
        scope = "policy"
    return f"{owner}/{limit.name}/{scope}"


def compile_limit(policy: AnyPolicy, limit: PolicyLimit, workload: Workload) -> snap.Limit:
    """One limit for one workload; reroute providers are named as the workload's sidecar knows them."""
    return snap.Limit(
        policy=label(policy),
        name=limit.name,
        key=counter_key(policy, limit, workload),
        routes=limit.routes,
        providers=limit.providers,
        models=limit.models,
        requests_per_minute=limit.requests_per_minute,
        tokens_per_minute=limit.tokens_per_minute,
        input_tokens_per_minute=limit.input_tokens_per_minute,
        output_tokens_per_minute=limit.output_tokens_per_minute,
        concurrent_requests=limit.concurrent_requests,
        usd_per_day=limit.usd_per_day,
        usd_per_month=limit.usd_per_month,
        on_budget_spent=limit.on_budget_spent,
        reroute_to=tuple(
            snap.RerouteBackend(provider=f"{workload.namespace}.{b.provider}", model=b.model) for b in limit.reroute_to
        ),
        failure_mode=limit.effective_failure_mode,
    )


def compile_limits(policies: Sequence[AnyPolicy], workload: Workload) -> tuple[snap.Limit, ...]:
    """Every limit of the policies that bind the workload: policies in their order (`ordered`), then as written."""
    return tuple(compile_limit(p, limit, workload) for p in policies for limit in p.spec.limits)


# --- status ----------------------------------------------------------------------------


def judge_policy(
    policy: AnyPolicy, *, provider_names: Mapping[str, set[str]], route_names: Mapping[str, set[str]]
) -> PolicyVerdict:
    """Accepted (the schema already refused what is malformed), and ResolvedRefs: every provider and
    route named without a wildcard exists in the policy's scope. A missing one is still enforced
    (it allows nothing), but is most likely a typo worth a warning."""
    namespace = policy.metadata.namespace
    scope = (
        set.union(set(), *provider_names.values())
        if isinstance(policy, ClusterModelPolicy)
        else provider_names.get(namespace, set())
    )
    routes = (
        set.union(set(), *route_names.values())
        if isinstance(policy, ClusterModelPolicy)
        else route_names.get(namespace, set())
    )
    access = policy.spec.access
    missing = [f"ModelProvider {n}" for n in access.providers or () if _GLOB.isdisjoint(n) and n not in scope]
    missing += [f"ModelRoute {n}" for n in access.routes or () if _GLOB.isdisjoint(n) and n not in routes]
    where = "any namespace" if isinstance(policy, ClusterModelPolicy) else f"namespace {namespace}"
    resolved = (
        Verdict(True, "ResolvedRefs")
        if not missing
        else Verdict(
            False, "RefNotFound", f"{', '.join(missing)} not found in {where}; the policy allows nothing by that name"
        )
    )
    return PolicyVerdict(Verdict(True, "Accepted"), resolved, policy.metadata.generation)


def route_restrictions(
    route: ModelRoute,
    *,
    policies: Sequence[AnyPolicy],
    namespace_labels: Mapping[str, str],
    providers: Mapping[str, snap.Provider],
) -> tuple[str, ...]:
    """What the policies in the route's namespace take from it, for some of its workloads at least."""
    namespace = route.metadata.namespace
    notes = []
    scoped = [p for p in policies if in_scope(p, namespace=namespace, namespace_labels=namespace_labels)]
    for policy in scoped:
        if (denial := _route_denial(policy, route.metadata.name)) is not None:
            notes.append(f"{denial.policy} refuses this route ({denial.reason})")
    backends = sorted(
        {(b.provider, b.model) for rule in route.spec.rules for b in (*rule.all_backends, *rule.fallbacks)}
    )
    for provider_name, model in backends:
        provider = providers.get(f"{namespace}.{provider_name}")
        if provider is None:
            continue
        for policy in scoped:
            if (denied := backend_denial(policy, provider, model)) is not None:
                classes = (
                    "every data class"
                    if denied.data_classes == snap.DATA_CLASSES
                    else "data classes " + ", ".join(denied.data_classes)
                )
                notes.append(f"{denied.denial.policy} removes {provider_name}/{model} for {classes}")
            for redacted in backend_redactions(policy, provider, model):
                classes = "data classes " + ", ".join(redacted.data_classes)
                notes.append(f"{redacted.policy} masks personal data sent to {provider_name}/{model} for {classes}")
    return tuple(notes)
