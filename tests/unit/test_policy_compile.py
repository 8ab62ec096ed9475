"""ModelPolicy / ClusterModelPolicy compiled into per-workload snapshots, then routed per data class.

No sockets: resources -> controller.compile -> proxy.routing, as a sidecar would run them.
"""

import random

import pytest

from controller.api import parse_resource
from controller.compile import Workload, compile_workload, judge
from controller.status import desired_statuses
from proxy.routing.table import PolicyRefusal, RoutingTable
from tests.unit.test_compile import provider, resources

EU_SAAS = provider(
    "openai-eu",
    secret=None,
    type_="openai-compatible",
    baseURL="http://eu.example/v1",
    jurisdiction="eu",
    region="westeurope",
    hosting="saas",
)
US_SAAS = provider(
    "openai-us",
    secret=None,
    type_="openai-compatible",
    baseURL="http://us.example/v1",
    jurisdiction="us",
    region="us-east-1",
    hosting="saas",
)
IN_CLUSTER = provider(
    "vllm",
    secret=None,
    type_="openai-compatible",
    baseURL="http://vllm.example/v1",
    jurisdiction="eu",
    hosting="in-cluster",
)


def chat_route(ns="team-a", name="chat"):
    return parse_resource(
        {
            "kind": "ModelRoute",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "model": "chat",
                "rules": [
                    {
                        "name": "default",
                        "backends": [
                            {"provider": "openai-us", "model": "gpt-4o"},
                            {"provider": "openai-eu", "model": "gpt-4o"},
                        ],
                        "fallbacks": [{"provider": "vllm", "model": "llama-3"}],
                    }
                ],
            },
        }
    )


def policy(name, ns="team-a", **spec):
    return parse_resource({"kind": "ModelPolicy", "metadata": {"name": name, "namespace": ns}, "spec": spec})


def cluster_policy(name, **spec):
    return parse_resource({"kind": "ClusterModelPolicy", "metadata": {"name": name}, "spec": spec})


def namespace(name, labels=None, annotations=None):
    return parse_resource(
        {"kind": "Namespace", "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}}}
    )


RESIDENCY = [
    {"dataClass": "internal", "jurisdictions": ["EU"]},
    {"dataClass": "personal", "hosting": ["vpc", "in-cluster"]},
]


def table_for(*items, workload=None):
    workload = workload or Workload("team-a")
    snapshot = compile_workload(judge(resources(EU_SAAS, US_SAAS, IN_CLUSTER, chat_route(), *items)), workload)
    return snapshot, RoutingTable.build(snapshot)


def reachable(table, data_class, draws=40):
    """Every backend a request of this class can end at: any weighted pick, any fallback."""
    seen = set()
    rng = random.Random(7)
    for _ in range(draws):
        plan = table.plan("chat", {}, draw=rng.random, data_class=data_class)
        seen |= {c.backend.provider for c in plan.candidates}
    return seen


def test_without_policies_every_class_reaches_every_backend():
    snapshot, table = table_for()
    assert snapshot.policy.denied_backends == ()
    assert snapshot.policy.default_class == "internal"
    assert reachable(table, "restricted") == {"team-a.openai-us", "team-a.openai-eu", "team-a.vllm"}


def test_residency_rules_bind_their_class_and_every_class_above():
    _, table = table_for(policy("eu-only", residency=RESIDENCY))
    assert reachable(table, "public") == {"team-a.openai-us", "team-a.openai-eu", "team-a.vllm"}
    assert reachable(table, "internal") == {"team-a.openai-eu", "team-a.vllm"}  # jurisdiction eu, case aside
    assert reachable(table, "personal") == {"team-a.vllm"}  # eu and in-cluster
    assert reachable(table, "restricted") == {"team-a.vllm"}  # the personal rule binds restricted too


def test_the_plan_says_what_the_policy_removed_and_why():
    _, table = table_for(policy("eu-only", residency=RESIDENCY))
    plan = table.plan("chat", {}, draw=lambda: 0.0, data_class="personal")
    removed = {backend.provider: denial for backend, denial in plan.removed}
    assert set(removed) == {"team-a.openai-us", "team-a.openai-eu"}
    assert removed["team-a.openai-us"].policy == "ModelPolicy team-a/eu-only"
    assert "jurisdiction us is not in ['EU']" in removed["team-a.openai-us"].reason
    assert "hosting saas is not in ['vpc', 'in-cluster']" in removed["team-a.openai-eu"].reason
    # only the fallback is left, so it became the primary
    assert [(c.backend.provider, c.fallback) for c in plan.candidates] == [("team-a.vllm", False)]


def test_when_nothing_is_left_the_refusal_names_class_and_policies():
    _, table = table_for(
        policy("eu-only", residency=RESIDENCY), cluster_policy("no-self-hosted", access={"providers": ["openai-*"]})
    )
    with pytest.raises(PolicyRefusal) as refused:
        table.plan("chat", {}, draw=lambda: 0.0, data_class="personal")
    message = str(refused.value)
    assert "data class 'personal'" in message and "team-a/chat" in message
    assert "ClusterModelPolicy no-self-hosted" in message and "provider vllm is not in access.providers" in message
    assert set(refused.value.policies) == {"ClusterModelPolicy no-self-hosted", "ModelPolicy team-a/eu-only"}


def test_a_namespace_policy_cannot_widen_a_cluster_policy():
    wide = policy("anything-goes", residency=[{"dataClass": "public", "jurisdictions": ["us", "eu"]}])
    narrow = cluster_policy("org", residency=[{"dataClass": "internal", "jurisdictions": ["eu"]}])
    snapshot, table = table_for(wide, narrow)
    assert reachable(table, "internal") == {"team-a.openai-eu", "team-a.vllm"}
    assert snapshot.policy.policies == ("ClusterModelPolicy org", "ModelPolicy team-a/anything-goes")


def test_access_lists_remove_providers_and_models_for_every_class():
    _, table = table_for(policy("approved", access={"providers": ["openai-*"], "models": ["gpt-4o"]}))
    assert reachable(table, "public") == {"team-a.openai-us", "team-a.openai-eu"}


def test_a_route_outside_access_routes_is_refused_naming_the_policy():
    _, table = table_for(policy("no-chat", access={"routes": ["embed-*"]}))
    with pytest.raises(PolicyRefusal, match=r"route 'team-a/chat' .* ModelPolicy team-a/no-chat .*access.routes"):
        table.plan("chat", {}, draw=lambda: 0.0, data_class="public")


def test_subjects_pick_the_workloads_a_policy_binds():
    strict = policy(
        "batch-only",
        subjects={"serviceAccounts": ["batch"], "podSelector": {"matchLabels": {"tier": "x"}}},
        access={"providers": []},
    )
    _, other = table_for(strict, workload=Workload("team-a", service_account="web", labels={"tier": "x"}))
    assert reachable(other, "public") == {"team-a.openai-us", "team-a.openai-eu", "team-a.vllm"}
    _, bound = table_for(strict, workload=Workload("team-a", service_account="batch", labels={"tier": "x"}))
    with pytest.raises(PolicyRefusal):
        bound.plan("chat", {}, draw=lambda: 0.0, data_class="public")


def test_cluster_policies_select_namespaces_by_label():
    org = cluster_policy(
        "regulated",
        namespaceSelector={"matchLabels": {"compliance": "gdpr"}},
        residency=[{"dataClass": "public", "hosting": ["in-cluster"]}],
    )
    _, unlabelled = table_for(org, namespace("team-a"))
    assert "team-a.openai-us" in reachable(unlabelled, "public")
    _, labelled = table_for(org, namespace("team-a", labels={"compliance": "gdpr"}))
    assert reachable(labelled, "public") == {"team-a.vllm"}


@pytest.mark.parametrize(
    ("pod", "ns", "policy_default", "floor"),
    [
        (None, None, None, "internal"),  # nothing says anything
        ("public", None, None, "public"),  # an annotation alone sets it
        (None, "personal", None, "personal"),  # the namespace's, when the pod has none
        ("restricted", "public", None, "restricted"),  # the pod's before the namespace's
        ("public", None, "personal", "personal"),  # an annotation may raise the policy's default, never lower it
        ("bogus", None, "internal", "internal"),  # not a class: ignored
    ],
)
def test_the_workload_default_class(pod, ns, policy_default, floor):
    items = [namespace("team-a", annotations={"modelway.io/data-class": ns} if ns else {})]
    if policy_default:
        items.append(policy("defaults", defaultDataClass=policy_default))
    snapshot, _ = table_for(*items, workload=Workload("team-a", data_class=pod))
    assert snapshot.policy.default_class == floor


def test_detection_is_on_when_any_binding_policy_asks_and_the_workload_is_named():
    snapshot, _ = table_for(policy("scan", detectPersonalData=True), workload=Workload("team-a", service_account="web"))
    assert snapshot.policy.detect_personal_data
    assert snapshot.policy.workload == "team-a/web"


def test_route_status_says_which_policy_removes_which_backend():
    view = resources(
        EU_SAAS,
        US_SAAS,
        IN_CLUSTER,
        chat_route(),
        policy("eu-only", residency=RESIDENCY),
        policy("typo", access={"providers": ["openai-eu", "open-ai-us"]}),
    )
    judgement = judge(view)
    statuses = desired_statuses(judgement, {}, view)
    restricted = {c.type: c for c in statuses[("ModelRoute", "team-a", "chat")].conditions}["PolicyRestricted"]
    assert restricted.status == "True" and restricted.reason == "BackendsRestricted"
    assert (
        "ModelPolicy team-a/eu-only removes openai-us/gpt-4o for data classes internal, personal, restricted"
        in restricted.message
    )
    typo = {c.type: c for c in statuses[("ModelPolicy", "team-a", "typo")].conditions}
    assert typo["Accepted"].status == "True"
    assert (typo["ResolvedRefs"].status, typo["ResolvedRefs"].reason) == ("False", "RefNotFound")
    assert "ModelProvider open-ai-us not found in namespace team-a" in typo["ResolvedRefs"].message


def test_an_unrestricted_route_has_no_policyrestricted_condition():
    view = resources(
        EU_SAAS, US_SAAS, IN_CLUSTER, chat_route(), policy("elsewhere", ns="team-b", access={"providers": []})
    )
    statuses = desired_statuses(judge(view), {}, view)
    assert [c.type for c in statuses[("ModelRoute", "team-a", "chat")].conditions] == [
        "Accepted",
        "ResolvedRefs",
        "Programmed",
    ]
