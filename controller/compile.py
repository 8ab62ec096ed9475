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
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeVar

import msgspec

import proxy.snapshot as snap
from controller import policy as pol
from controller import selectors
from controller.api import (
    BackendRef,
    InvalidObject,
    ModelProvider,
    ModelRoute,
    Namespace,
    ObjectMeta,
    RouteRule,
    Secret,
    duration_seconds,
)
from controller.store import Key, Resources, key_of
from controller.workload import Verdict, Workload
from shared.provider_types import default_base_url, serves

ACCEPTED = Verdict(True, "Accepted")
RESOLVED = Verdict(True, "ResolvedRefs")


@dataclass(frozen=True, slots=True)
class ProviderVerdict:
    accepted: Verdict
    resolved_refs: Verdict
    provider: snap.Provider | None  # compiled, credentials included; None when unusable
    generation: int = 0  # the generation the verdict speaks of


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


def _secret_value(secret: Secret, key: str) -> str | None:
    if key in secret.string_data:
        return secret.string_data[key]
    if key in secret.data:
        try:
            return base64.b64decode(secret.data[key], validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


# The Secret keys of an AWS access key (a Bedrock provider's credentialsRef Secret).
AWS_KEY_ID, AWS_SECRET_KEY, AWS_SESSION_TOKEN = "accessKeyId", "secretAccessKey", "sessionToken"
# The Secret key of a Google service-account key (JSON), for a vertex provider.
GOOGLE_SERVICE_ACCOUNT_KEY = "serviceAccountKey"
# The Secret key of an Entra ID client secret (an azure-openai provider with spec.azure.entra).
ENTRA_CLIENT_SECRET = "clientSecret"


def _judge_provider(provider: ModelProvider, secrets: Mapping[tuple[str, str], Secret]) -> ProviderVerdict:
    spec, namespace = provider.spec, provider.metadata.namespace
    base_url = spec.base_url or default_base_url(spec.type, region=spec.signing_region)
    if base_url is None:
        invalid = Verdict(False, "Invalid", f"type {spec.type} has no default endpoint: set spec.baseURL")
        return ProviderVerdict(invalid, Verdict(True, "ResolvedRefs"), None)
    if spec.type == "azure-openai" and spec.azure is None:
        invalid = Verdict(False, "Invalid", "type azure-openai needs spec.azure.apiVersion")
        return ProviderVerdict(invalid, Verdict(True, "ResolvedRefs"), None)
    api_key: str | None = None
    aws_keys: snap.AwsKeys | None = None
    vertex_key: str | None = None
    if spec.credentials_ref is not None:
        ref = spec.credentials_ref
        secret = secrets.get((namespace, ref.name))
        if secret is None:
            missing = Verdict(
                False,
                "SecretNotFound",
                f"Secret {namespace}/{ref.name} (spec.credentialsRef) does not exist or is not "
                "labelled modelway.io/credentials=true",
            )
            return ProviderVerdict(ACCEPTED, missing, None)
        if spec.type == "bedrock":
            aws_keys = _aws_keys(secret)
        entra = spec.azure.entra is not None if spec.azure is not None else False
        if entra:
            api_key = _secret_value(secret, ENTRA_CLIENT_SECRET) or _secret_value(secret, ref.key)
        elif spec.type == "vertex" and (service_account := _secret_value(secret, GOOGLE_SERVICE_ACCOUNT_KEY)):
            try:
                snap.check_service_account_key(service_account)
            except snap.ConfigProblem as exc:  # says what is wrong, quotes none of it
                bad = Verdict(
                    False, "InvalidSecret", f"Secret {namespace}/{ref.name} {GOOGLE_SERVICE_ACCOUNT_KEY}: {exc}"
                )
                return ProviderVerdict(ACCEPTED, bad, None)
            vertex_key = service_account
        else:
            api_key = None if aws_keys is not None else _secret_value(secret, ref.key)
        if api_key is None and aws_keys is None and vertex_key is None:
            wanted = f"{ref.key!r}" + (f" (or {AWS_KEY_ID} and {AWS_SECRET_KEY})" if spec.type == "bedrock" else "")
            wanted = f"{ENTRA_CLIENT_SECRET!r} (or {ref.key!r})" if entra else wanted
            missing = Verdict(
                False,
                "SecretKeyNotFound",
                f"Secret {namespace}/{ref.name} has no key {wanted} (spec.credentialsRef.key)",
            )
            return ProviderVerdict(ACCEPTED, missing, None)
    try:
        compiled = _compile_provider(
            provider, base_url=base_url, api_key=api_key, aws_keys=aws_keys, vertex_key=vertex_key
        )
    except ValueError as exc:  # what the sidecar would refuse: never let it reach one
        return ProviderVerdict(Verdict(False, "Invalid", snap.problem_text(exc)), RESOLVED, None)
    return ProviderVerdict(ACCEPTED, RESOLVED, compiled)


def _aws_keys(secret: Secret) -> snap.AwsKeys | None:
    key_id, secret_key = _secret_value(secret, AWS_KEY_ID), _secret_value(secret, AWS_SECRET_KEY)
    if not key_id or not secret_key:
        return None
    token = _secret_value(secret, AWS_SESSION_TOKEN)
    return snap.AwsKeys(
        access_key_id=snap.Secret(key_id),
        secret_access_key=snap.Secret(secret_key),
        session_token=snap.Secret(token) if token else None,
    )


def _compile_provider(
    provider: ModelProvider,
    *,
    base_url: str,
    api_key: str | None,
    aws_keys: snap.AwsKeys | None = None,
    vertex_key: str | None = None,
) -> snap.Provider:
    spec, namespace, name = provider.spec, provider.metadata.namespace, provider.metadata.name
    region = spec.signing_region
    bedrock = (
        snap.BedrockSettings(region=region, credentials=aws_keys, api=spec.bedrock.api if spec.bedrock else "converse")
        if spec.type == "bedrock" and region is not None
        else None
    )
    entra_spec = spec.azure.entra if spec.azure is not None else None
    entra = None
    if entra_spec is not None:  # the Secret's value is the client secret, not an API key
        entra = snap.EntraSettings(
            tenant_id=entra_spec.tenant_id,
            client_id=entra_spec.client_id,
            client_secret=snap.Secret(api_key) if api_key is not None else None,
            **({"scope": entra_spec.scope} if entra_spec.scope is not None else {}),
        )
        api_key = None
    vertex = (
        snap.VertexSettings(
            project=spec.vertex.project,
            region=region,
            publisher=spec.vertex.publisher,
            service_account_key=snap.Secret(vertex_key) if vertex_key is not None else None,
        )
        if spec.vertex is not None and region is not None
        else None
    )
    return snap.Provider(
        name=f"{namespace}.{name}",
        type=spec.type,
        base_url=base_url,
        api_key=snap.Secret(api_key) if api_key is not None else None,
        entra=entra,
        vertex=vertex,
        api_version=spec.azure.api_version if spec.azure else None,
        bedrock=bedrock,
        region=spec.region or region,
        jurisdiction=spec.jurisdiction,
        hosting=spec.hosting,
        pricing={
            m.name: snap.ModelPricing(
                input_per_million=m.input_price_per_million,
                output_per_million=m.output_price_per_million,
                cached_input_per_million=m.cached_input_price_per_million,
                cache_write_per_million=m.cache_write_price_per_million,
            )
            for m in spec.models
            if m.input_price_per_million is not None and m.output_price_per_million is not None
        },
        capacity=tuple(
            snap.Capacity(
                key=f"ModelProvider/{namespace}/{name}/capacity/{c.model}",
                model=c.model,
                requests_per_minute=c.requests_per_minute,
                tokens_per_minute=c.tokens_per_minute,
            )
            for c in spec.capacity
        ),
    )


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
        key_of(p): dataclasses.replace(_judge_provider(p, secrets), generation=p.metadata.generation)
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
    retry, timeouts = rule.retry, rule.timeouts
    return snap.Rule(
        name=rule.name,
        match_headers=tuple(snap.HeaderMatch(name=h.name, value=h.value, regex=h.regex) for h in rule.matches.headers),
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


def compile_route(route: ModelRoute, *, arm_weights: Mapping[str, Mapping[str, int]] | None = None) -> snap.Route:
    """`arm_weights`: per rule name, an adaptive experiment's current weights per arm (else the spec's)."""
    namespace = route.metadata.namespace
    return snap.Route(
        name=f"{namespace}/{route.metadata.name}",
        model=route.spec.model,
        rules=tuple(_rule(r, namespace, route.metadata.name, arm_weights) for r in route.spec.rules),
    )


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
