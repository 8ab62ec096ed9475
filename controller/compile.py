"""Compilation, pure: resources in, verdicts and one snapshot per workload out.

Two steps, both without I/O:

1. `judge` looks at every ModelProvider and ModelRoute once and says whether it
   is usable (the checks a CRD schema cannot make: references that resolve,
   Secrets and keys that exist, one route per model name). It also decides,
   per route, which version to serve: the current one when it is good, else
   the last good one (so a broken edit never takes a working route away).
   An object whose current version is invalid (`Resources.invalid`) is judged
   Accepted=False at its current generation, while its last valid version,
   when the store has one, keeps serving.
2. `select_routes`, `compile_route`, `workload_policy` and `assemble` build the
   snapshot one workload may see: the routes of its namespace that select it,
   what its policies leave it, only the providers those routes use, and only
   their credentials. The controller (`controller.core`) caches each step;
   `compile_workload` is the same in one call.

One provider is judged and compiled in `controller.compile_provider`, one route in
`controller.compile_route`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeVar

import msgspec

import proxy.snapshot as snap
from controller import policy as pol
from controller import selectors
from controller.api import InvalidObject, ModelProvider, ModelRoute, Namespace, ObjectMeta, Secret
from controller.compile_provider import ACCEPTED, RESOLVED, ProviderVerdict, judge_provider
from controller.compile_route import compile_route
from controller.store import Key, Resources, key_of
from controller.workload import Verdict, Workload
from shared.provider_types import serves


@dataclass(frozen=True, slots=True)
class RouteVerdict:
    accepted: Verdict
    resolved_refs: Verdict
    generation: int
    # What sidecars run for this route: the current spec when good, else the last good one.
    served: ModelRoute | None


class NamespaceObjects(NamedTuple):
    """One namespace's objects that its providers and routes are judged from."""

    providers: tuple[ModelProvider, ...]
    routes: tuple[ModelRoute, ...]
    secrets: tuple[Secret, ...]
    invalid: tuple[InvalidObject, ...]  # invalid providers and routes


@dataclass(frozen=True, slots=True)
class NamespaceJudgement:
    """One namespace's providers and routes, judged. Providers, routes, Secrets and invalid objects
    only ever refer within their namespace, so a judgement of a namespace whose objects are the
    very same ones as last time (the store replaces an object on every change) is still true."""

    inputs: NamespaceObjects  # what it was judged from, compared by identity
    providers: dict[Key, ProviderVerdict]
    routes: dict[Key, RouteVerdict]
    served: tuple[ModelRoute, ...]
    compiled_providers: dict[str, snap.Provider]


# What the snapshots of one namespace's workloads are made from: its judged providers and routes,
# its Namespace object (labels for cluster policies, annotations for the data class) and the
# policies in scope. Two judgements whose inputs for a namespace are the same objects give its
# workloads the same snapshots: nothing else reaches them.
NamespaceInputs = tuple[NamespaceJudgement | None, Namespace | None, tuple[pol.AnyPolicy, ...]]


def namespace_inputs(
    policies: Sequence[pol.AnyPolicy],
    namespaces: Mapping[str, Namespace],
    namespace: str,
    part: NamespaceJudgement | None,
) -> NamespaceInputs:
    labels = _labels(namespaces, namespace)
    scoped = tuple(p for p in policies if pol.in_scope(p, namespace=namespace, namespace_labels=labels))
    return part, namespaces.get(namespace), scoped


def same_inputs(a: NamespaceInputs, b: NamespaceInputs) -> bool:
    return (
        a[0] is b[0]
        and a[1] is b[1]
        and len(a[2]) == len(b[2])
        and all(p is q for p, q in zip(a[2], b[2], strict=True))
    )


@dataclass(frozen=True, slots=True)
class Judgement:
    providers: dict[Key, ProviderVerdict]
    routes: dict[Key, RouteVerdict]
    # Indexes built once per judgement, so per-workload work stays small.
    served_by_namespace: dict[str, tuple[ModelRoute, ...]] = field(default_factory=dict)
    compiled_providers: dict[str, snap.Provider] = field(default_factory=dict)
    # Policies, cluster-wide ones first (see policy.ordered), their verdicts, and what they take from routes.
    policies: tuple[pol.AnyPolicy, ...] = ()
    policy_verdicts: dict[Key, pol.PolicyVerdict] = field(default_factory=dict)
    restrictions: dict[Key, tuple[str, ...]] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    # Per namespace, what the next judgement may keep when its inputs are the same objects.
    parts: dict[str, NamespaceJudgement] = field(default_factory=dict)
    part_restrictions: dict[str, tuple[NamespaceInputs, dict[Key, tuple[str, ...]]]] = field(default_factory=dict)

    def inputs_of(self, namespace: str) -> NamespaceInputs:
        """Everything a snapshot for a workload of `namespace` is made from (see `namespace_inputs`)."""
        return namespace_inputs(self.policies, self.namespaces, namespace, self.parts.get(namespace))

    @property
    def last_good(self) -> dict[Key, ModelRoute]:
        return {k: v.served for k, v in self.routes.items() if v.served is not None}


def _route_refs(route: ModelRoute, providers: Mapping[Key, ProviderVerdict]) -> Verdict:
    namespace = route.metadata.namespace
    operation = route.spec.operation
    problems = []
    unsupported = []
    for rule in route.spec.rules:
        for where, refs in (("backends", rule.all_backends), ("fallbacks", rule.fallbacks)):
            for ref in refs:
                verdict = providers.get(("ModelProvider", namespace, ref.provider))
                if verdict is None:
                    problems.append(f"rule {rule.name} {where}: ModelProvider {namespace}/{ref.provider} not found")
                elif verdict.provider is None:
                    bad = verdict.resolved_refs if not verdict.resolved_refs.ok else verdict.accepted
                    problems.append(
                        f"rule {rule.name} {where}: ModelProvider {ref.provider} is not usable "
                        f"({bad.reason}: {bad.message})"
                    )
                elif not serves(verdict.provider.type, operation):
                    unsupported.append(
                        f"rule {rule.name} {where}: ModelProvider {ref.provider} is of type "
                        f"{verdict.provider.type}, which cannot serve {operation}"
                    )
    if unsupported and not problems:
        return Verdict(False, "UnsupportedOperation", "; ".join(sorted(set(unsupported))))
    problems += unsupported
    if problems:
        reason = "BackendNotFound" if any("not found" in p for p in problems) else "InvalidBackend"
        return Verdict(False, reason, "; ".join(sorted(set(problems))))
    return RESOLVED


def _selector_key(route: ModelRoute) -> tuple[tuple[str, str], ...]:
    """Routes whose selectors say the same thing (matchLabels and matchExpressions alike) claim alike."""
    return selectors.selector_key(route.spec.workload_selector)


def judge(
    resources: Resources, *, last_good: Mapping[Key, ModelRoute] | None = None, previous: Judgement | None = None
) -> Judgement:
    """Judge everything; with `previous` (the judgement of the store's preceding view), namespaces
    whose objects are unchanged keep their verdicts and only the others are judged again (their last
    good routes then come from `previous`). The result is the same either way."""
    provider_objects = _by_namespace(resources.providers)
    route_objects = _by_namespace(resources.routes)
    secret_objects = _by_namespace(resources.secrets)
    invalid_objects = _by_namespace(i for i in resources.invalid if i.kind in ("ModelProvider", "ModelRoute"))
    parts: dict[str, NamespaceJudgement] = {}
    for namespace in sorted(
        provider_objects.keys() | route_objects.keys() | secret_objects.keys() | invalid_objects.keys()
    ):
        inputs = NamespaceObjects(
            provider_objects.get(namespace, ()),
            route_objects.get(namespace, ()),
            secret_objects.get(namespace, ()),
            invalid_objects.get(namespace, ()),
        )
        before = previous.parts.get(namespace) if previous is not None else None
        if before is not None and _same_objects(before.inputs, inputs):
            parts[namespace] = before
            continue
        good: Mapping[Key, ModelRoute]
        if previous is not None:
            good = {k: v.served for k, v in before.routes.items() if v.served is not None} if before else {}
        else:
            good = last_good or {}
        parts[namespace] = _judge_namespace(inputs, good)
    providers: dict[Key, ProviderVerdict] = {}
    routes: dict[Key, RouteVerdict] = {}
    compiled_providers: dict[str, snap.Provider] = {}
    for part in parts.values():
        providers |= part.providers
        routes |= part.routes
        compiled_providers |= part.compiled_providers
    policies = pol.ordered(resources.policies)
    namespaces = {n.metadata.name: n for n in resources.namespaces}
    verdicts, restrictions, part_restrictions = _judge_policies(resources, policies, parts, namespaces, previous)
    for bad in resources.invalid:
        if bad.kind in ("ModelPolicy", "ClusterModelPolicy"):
            key = key_of(bad)
            verdicts[key] = _invalid_policy(bad, verdicts.get(key))
    return Judgement(
        providers=providers,
        routes=routes,
        served_by_namespace={ns: part.served for ns, part in parts.items() if part.served},
        compiled_providers=compiled_providers,
        policies=policies,
        policy_verdicts=verdicts,
        restrictions=restrictions,
        namespaces=namespaces,
        parts=parts,
        part_restrictions=part_restrictions,
    )


class _Namespaced(Protocol):
    @property
    def metadata(self) -> ObjectMeta: ...


_N = TypeVar("_N", bound=_Namespaced)


def _by_namespace(objects: Iterable[_N]) -> dict[str, tuple[_N, ...]]:
    grouped: dict[str, list[_N]] = {}
    for obj in objects:
        grouped.setdefault(obj.metadata.namespace, []).append(obj)
    return {namespace: tuple(items) for namespace, items in grouped.items()}


def _same_objects(a: NamespaceObjects, b: NamespaceObjects) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(p is q for p, q in zip(x, y, strict=True)) for x, y in zip(a, b, strict=True)
    )


def _judge_namespace(inputs: NamespaceObjects, last_good: Mapping[Key, ModelRoute]) -> NamespaceJudgement:
    secrets = {(s.metadata.namespace, s.metadata.name): s for s in inputs.secrets}
    invalid = {key_of(i): i for i in inputs.invalid}
    providers = {
        key_of(p): dataclasses.replace(judge_provider(p, secrets), generation=p.metadata.generation)
        for p in inputs.providers
    }
    for key, bad in invalid.items():
        if bad.kind == "ModelProvider":
            providers[key] = _invalid_provider(bad, providers.get(key))
    routes: dict[Key, RouteVerdict] = {}
    claimed: dict[tuple[str, str, tuple[tuple[str, str], ...]], str] = {}
    for route in sorted(inputs.routes, key=lambda r: (r.metadata.namespace, r.metadata.name)):
        key = key_of(route)
        claim = (route.metadata.namespace, route.spec.model, _selector_key(route))
        owner = claimed.setdefault(claim, route.metadata.name)
        accepted = ACCEPTED
        if owner != route.metadata.name:
            accepted = Verdict(
                False,
                "Conflicted",
                f"ModelRoute {owner} already serves model {route.spec.model!r} for the same "
                "workloads in this namespace",
            )
        refs = _route_refs(route, providers)
        served: ModelRoute | None = route if (accepted.ok and refs.ok) else None
        if served is None and accepted.ok:
            previous = last_good.get(key)
            if previous is not None and _route_refs(previous, providers).ok:
                served = previous  # keep the last good rules while this edit is broken
        routes[key] = RouteVerdict(accepted, refs, route.metadata.generation, served)
    for key, bad in invalid.items():
        if bad.kind == "ModelRoute":
            routes[key] = _invalid_route(bad, routes.get(key))
    return NamespaceJudgement(
        inputs=inputs,
        providers=providers,
        routes=routes,
        served=tuple(v.served for v in routes.values() if v.served is not None),
        compiled_providers={v.provider.name: v.provider for v in providers.values() if v.provider is not None},
    )


def _kept(kind: str, bad: InvalidObject, generation: int | None) -> str:
    if generation is None:
        return f"{bad.message}; nothing of this {kind} is in use until it is fixed"
    return f"{bad.message}; sidecars keep its last valid version (generation {generation})"


def _invalid_provider(bad: InvalidObject, last_valid: ProviderVerdict | None) -> ProviderVerdict:
    """A provider edited into something unusable keeps its last valid settings in sidecars."""
    kept = last_valid if last_valid is not None and last_valid.provider is not None else None
    generation = kept.generation if kept is not None else None
    accepted = Verdict(False, bad.reason, _kept("ModelProvider", bad, generation))
    if kept is None:
        return ProviderVerdict(
            accepted, Verdict(False, "Invalid", "not checked: the object is invalid"), None, bad.metadata.generation
        )
    return ProviderVerdict(accepted, kept.resolved_refs, kept.provider, bad.metadata.generation)


def _invalid_route(bad: InvalidObject, last_valid: RouteVerdict | None) -> RouteVerdict:
    served = last_valid.served if last_valid is not None else None
    generation = served.metadata.generation if served is not None else None
    accepted = Verdict(False, bad.reason, _kept("ModelRoute", bad, generation))
    refs = (
        last_valid.resolved_refs
        if last_valid is not None and served is not None
        else Verdict(False, "Invalid", "not checked: the object is invalid")
    )
    return RouteVerdict(accepted, refs, bad.metadata.generation, served)


def _invalid_policy(bad: InvalidObject, last_valid: pol.PolicyVerdict | None) -> pol.PolicyVerdict:
    """A policy edited into something invalid keeps binding as it was: dropping it would widen access."""
    generation = last_valid.generation if last_valid is not None else None
    accepted = Verdict(False, bad.reason, _kept(bad.kind, bad, generation))
    refs = (
        last_valid.resolved_refs
        if last_valid is not None
        else Verdict(False, "Invalid", "not checked: the object is invalid")
    )
    return pol.PolicyVerdict(accepted, refs, bad.metadata.generation)


def _judge_policies(
    resources: Resources,
    policies: Sequence[pol.AnyPolicy],
    parts: Mapping[str, NamespaceJudgement],
    namespaces: Mapping[str, Namespace],
    previous: Judgement | None,
) -> tuple[
    dict[Key, pol.PolicyVerdict],
    dict[Key, tuple[str, ...]],
    dict[str, tuple[NamespaceInputs, dict[Key, tuple[str, ...]]]],
]:
    """Each policy's verdict, and what the policies take from each served route (nothing without
    policies), with the latter per namespace and what it was worked out from (for the next judgement)."""
    if not policies:
        return {}, {}, {}
    provider_names: dict[str, set[str]] = {}
    for provider in resources.providers:
        provider_names.setdefault(provider.metadata.namespace, set()).add(provider.metadata.name)
    route_names: dict[str, set[str]] = {}
    for route in resources.routes:
        route_names.setdefault(route.metadata.namespace, set()).add(route.metadata.name)
    verdicts = {
        key_of(p): pol.judge_policy(p, provider_names=provider_names, route_names=route_names) for p in policies
    }
    restrictions: dict[Key, tuple[str, ...]] = {}
    remembered: dict[str, tuple[NamespaceInputs, dict[Key, tuple[str, ...]]]] = {}
    for namespace, part in parts.items():
        if not part.served:
            continue
        # A route's restrictions depend on its namespace alone: its judgement, its labels, the policies in scope.
        inputs = namespace_inputs(policies, namespaces, namespace, part)
        before = previous.part_restrictions.get(namespace) if previous is not None else None
        if before is not None and same_inputs(before[0], inputs):
            restrictions |= before[1]
            remembered[namespace] = before
            continue
        labels = _labels(namespaces, namespace)
        found = {
            key: pol.route_restrictions(
                verdict.served, policies=inputs[2], namespace_labels=labels, providers=part.compiled_providers
            )
            for key, verdict in part.routes.items()
            if verdict.served is not None
        }
        restrictions |= found
        remembered[namespace] = (inputs, found)
    return verdicts, restrictions, remembered


def _labels(namespaces: Mapping[str, Namespace], name: str) -> Mapping[str, str]:
    namespace = namespaces.get(name)
    return namespace.metadata.labels if namespace is not None else {}


def workload_policy(judgement: Judgement, workload: Workload, routes: Sequence[snap.Route]) -> snap.Policy:
    """The policy section of one workload's snapshot: what every policy that binds it leaves it."""
    labels = _labels(judgement.namespaces, workload.namespace)
    binding = [p for p in judgement.policies if pol.binds(p, workload, namespace_labels=labels)]
    namespace = judgement.namespaces.get(workload.namespace)
    return pol.compile_policy(
        policies=binding,
        workload=workload,
        namespace_annotations=namespace.metadata.annotations if namespace is not None else {},
        routes=routes,
        providers=judgement.compiled_providers,
    )


def _selects(route: ModelRoute, workload: Workload) -> bool:
    return selectors.matches(route.spec.workload_selector, workload.labels)


def select_routes(judgement: Judgement, workload: Workload) -> tuple[ModelRoute, ...]:
    """The routes one workload runs, one per model name, ordered by model (cheap: no compiling)."""
    chosen: dict[str, ModelRoute] = {}
    for route in judgement.served_by_namespace.get(workload.namespace, ()):
        if not _selects(route, workload):
            continue
        current = chosen.get(route.spec.model)
        # A route with a selector is more specific than one without; then by name, for stability.
        rank = (route.spec.workload_selector is None, route.metadata.name)
        if current is None or rank < (current.spec.workload_selector is None, current.metadata.name):
            chosen[route.spec.model] = route
    return tuple(chosen[model] for model in sorted(chosen))


def assemble(
    judgement: Judgement,
    routes: Sequence[snap.Route],
    *,
    policy: snap.Policy | None = None,
    limit_store: snap.LimitStore | None = None,
) -> snap.Snapshot:
    """A snapshot of compiled routes plus exactly the providers they use; versioned by content.
    `limit_store`, the shared counters every sidecar reaches, is part of the content: a new URL is a push."""
    used = {b.provider for route in routes for rule in route.rules for b in (*rule.backends, *rule.fallbacks)}
    if policy is not None:  # the cheaper backends a spent budget reroutes to
        used |= {b.provider for limit in policy.limits for b in limit.reroute_to}
    providers = tuple(
        sorted(
            (judgement.compiled_providers[name] for name in used if name in judgement.compiled_providers),
            key=lambda p: p.name,
        )
    )
    snapshot = snap.Snapshot(
        providers=providers, routes=tuple(routes), policy=policy or snap.Policy(), limit_store=limit_store
    )
    return msgspec.structs.replace(snapshot, version=snap.content_version(snapshot))


def compile_workload(judgement: Judgement, workload: Workload) -> snap.Snapshot:
    """The snapshot for one workload (the controller caches the steps; this is the plain form)."""
    routes = [compile_route(r) for r in select_routes(judgement, workload)]
    return assemble(judgement, routes, policy=workload_policy(judgement, workload, routes))
