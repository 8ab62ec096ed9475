"""The controller recomputes only what a change affects, and the result is what a full recompute gives
(judgement, every workload's snapshot, and the statuses the status writer derives, memo or not).

No sockets: a ResourceStore, a Controller and streams that record what they are sent. Compiles are
counted with `Controller.compiles` (one per workload snapshot compiled).
"""

from __future__ import annotations

import asyncio
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.api import parse_object
from controller.compile import compile_workload, judge
from controller.core import Compiled, Controller, Sidecar
from controller.status import desired_statuses
from controller.store import ResourceStore
from controller.workload import Workload
from tests.unit.test_compile import provider, route, secret
from tests.unit.test_policy_compile import cluster_policy, namespace, policy

NAMESPACES = ("team-a", "team-b", "team-c")
WORKLOADS = tuple(Workload(ns, "app", labels) for ns in NAMESPACES for labels in ({}, {"tier": "batch"}))


class Recorder:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send_snapshot(self, compiled: Compiled) -> None:
        self.sent.append(json.loads(compiled.message))


def base(ns: str) -> list:
    return [
        namespace(ns, labels={"env": "prod" if ns != "team-c" else "dev"}),
        secret(ns=ns, apiKey=f"sk-{ns}"),
        provider("openai", ns=ns),
        provider(
            "local",
            ns=ns,
            secret=None,
            type_="openai-compatible",
            baseURL="http://local.example/v1",
            jurisdiction="eu",
            hosting="in-cluster",
        ),
        route(
            "chat",
            "chat",
            [{"provider": "openai", "model": "gpt-4o"}],
            ns=ns,
            fallbacks=[{"provider": "local", "model": "llama"}],
        ),
    ]


async def connected(store: ResourceStore, workloads=WORKLOADS, replicas: int = 3) -> Controller:
    controller = Controller(store=store)
    await controller.recompute()
    for workload in workloads:
        for i in range(replicas):
            await controller.attach(Sidecar(name=f"{workload.namespace}-{i}", workload=workload, stream=Recorder()))
    return controller


def store_of(*items) -> ResourceStore:
    store = ResourceStore()
    for item in items:
        store.apply(item)
    return store


def run(coro):
    return asyncio.run(coro)


def test_a_route_change_in_one_namespace_recompiles_only_that_namespace_workloads():
    async def scenario():
        store = store_of(*(item for ns in NAMESPACES for item in base(ns)))
        controller = await connected(store)
        assert controller.compiles == len(WORKLOADS)  # one per distinct workload, not per sidecar
        before = controller.compiles
        store.apply(route("chat", "chat", [{"provider": "local", "model": "llama-2"}], ns="team-b", generation=2))
        await controller.recompute()
        assert controller.compiles - before == 2  # team-b's two workloads, none of team-a's or team-c's
        versions = {s.workload.namespace: s.compiled.snapshot.version for s in controller.sidecars}
        b_sidecars = [s for s in controller.sidecars if s.workload.namespace == "team-b"]
        assert all(s.stream.sent[-1]["version"] == versions["team-b"] for s in b_sidecars)
        assert all(len(s.stream.sent) == 1 for s in controller.sidecars if s.workload.namespace != "team-b")
        # Nothing changed: nothing compiled, nothing sent.
        before = controller.compiles
        await controller.recompute()
        assert controller.compiles == before

    run(scenario())


def test_a_namespace_policy_change_recompiles_only_its_namespace():
    async def scenario():
        store = store_of(*(item for ns in NAMESPACES for item in base(ns)))
        controller = await connected(store)
        before = controller.compiles
        store.apply(policy("no-saas", ns="team-a", access={"providers": ["local"]}))
        await controller.recompute()
        assert controller.compiles - before == 2
        a = next(s for s in controller.sidecars if s.workload.namespace == "team-a")
        assert [p.name for p in a.compiled.snapshot.providers] == ["team-a.local", "team-a.openai"]
        assert a.compiled.snapshot.policy.denied_backends  # team-a's openai backend is denied by the policy

    run(scenario())


def test_a_cluster_policy_change_recompiles_the_namespaces_it_selects_and_no_other():
    async def scenario():
        store = store_of(*(item for ns in NAMESPACES for item in base(ns)))
        controller = await connected(store)
        before = controller.compiles
        store.apply(
            cluster_policy(
                "prod-eu",
                namespaceSelector={"matchLabels": {"env": "prod"}},
                residency=[{"dataClass": "internal", "jurisdictions": ["EU"]}],
            )
        )
        await controller.recompute()
        assert controller.compiles - before == 4  # team-a and team-b (env=prod), not team-c
        # Relabelling team-c into the selector recompiles team-c alone.
        before = controller.compiles
        store.apply(namespace("team-c", labels={"env": "prod"}))
        await controller.recompute()
        assert controller.compiles - before == 2
        c = next(s for s in controller.sidecars if s.workload.namespace == "team-c")
        assert c.compiled.snapshot.policy.policies == ("ClusterModelPolicy prod-eu",)

    run(scenario())


def test_sidecars_of_a_workload_share_one_compiled_snapshot():
    async def scenario():
        store = store_of(*base("team-a"))
        controller = await connected(store, workloads=(Workload("team-a", "app"),), replicas=5)
        assert len({id(s.compiled) for s in controller.sidecars}) == 1
        assert len({id(s.stream.sent[0]) for s in controller.sidecars}) == 5  # each got it

    run(scenario())


# --- incremental == from scratch ----------------------------------------------------------------


def _change(kind: str, ns: str, n: int):
    """One change an operator might make; some are invalid or break references on purpose."""
    if kind == "route":
        backend = ("openai", "local", "missing")[n % 3]
        return route("chat", "chat", [{"provider": backend, "model": f"m{n}"}], ns=ns, generation=n + 2)
    if kind == "route-selective":
        return route("batch", "chat", [{"provider": "local", "model": f"b{n}"}], ns=ns, selector={"tier": "batch"})
    if kind == "invalid-route":
        return parse_object(
            {
                "kind": "ModelRoute",
                "metadata": {"name": "chat", "namespace": ns, "generation": 50 + n},
                "spec": {"model": "chat", "rules": [{"name": "x", "backends": []}]},
            }
        )
    if kind == "provider":
        return provider("openai", ns=ns, jurisdiction=("eu", "us")[n % 2])
    if kind == "secret":
        return secret(ns=ns, apiKey=f"sk-{n}") if n % 3 else secret(ns=ns, other="x")
    if kind == "namespace":
        return namespace(
            ns,
            labels={"env": ("prod", "dev")[n % 2]},
            annotations={"modelway.io/data-class": ("internal", "personal")[n % 2]},
        )
    if kind == "policy":
        return policy("p", ns=ns, access={"providers": [("local", "openai", "*")[n % 3]]})
    if kind == "cluster-policy":
        return cluster_policy(
            "c",
            namespaceSelector={"matchLabels": {"env": ("prod", "dev")[n % 2]}},
            residency=[{"dataClass": "internal", "jurisdictions": [("EU", "US")[n % 2]]}],
        )
    raise AssertionError(kind)


KINDS = ("route", "route-selective", "invalid-route", "provider", "secret", "namespace", "policy", "cluster-policy")
CHANGES = st.lists(
    st.tuples(st.sampled_from((*KINDS, "delete")), st.sampled_from(NAMESPACES), st.integers(0, 5)),
    min_size=1,
    max_size=12,
)


def _apply(store: ResourceStore, kind: str, ns: str, n: int) -> None:
    if kind == "delete":
        target = (
            ("ModelRoute", "chat"),
            ("ModelRoute", "batch"),
            ("ModelPolicy", "p"),
            ("ModelProvider", "openai"),
            ("Secret", "llm-keys"),
            ("ClusterModelPolicy", "c"),
        )[n]
        store.delete(target[0], "" if target[0] == "ClusterModelPolicy" else ns, target[1])
        return
    item = _change(kind, ns, n)
    if hasattr(item, "reason"):  # an InvalidObject
        store.mark_invalid(item)
    else:
        store.apply(item)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(CHANGES)
def test_incremental_recompute_equals_a_full_recompute(changes):
    async def scenario():
        store = store_of(*(item for ns in NAMESPACES for item in base(ns)))
        controller = await connected(store, replicas=1)
        full = judge(store.view())
        memo: dict = {}
        for kind, ns, n in changes:
            _apply(store, kind, ns, n)
            await controller.recompute()
            full = judge(store.view(), last_good=full.last_good)  # from scratch, no namespace kept
            got = controller.judgement
            assert got.routes == full.routes
            assert got.providers == full.providers
            assert got.policy_verdicts == full.policy_verdicts
            assert got.restrictions == full.restrictions
            if n % 2:  # some changes are ACKed, so the counts in status move too
                for sidecar in controller.sidecars:
                    controller.acknowledge(sidecar, version=sidecar.sent_version, error=None)
            sync = controller.route_sync()
            assert desired_statuses(got, sync, store.view(), memo=memo) == desired_statuses(full, sync, store.view())
            for sidecar in controller.sidecars:
                expected = compile_workload(full, sidecar.workload)
                assert sidecar.compiled.snapshot == expected, (kind, ns, n, sidecar.workload)
                assert sidecar.stream.sent[-1]["version"] == expected.version

    run(scenario())
