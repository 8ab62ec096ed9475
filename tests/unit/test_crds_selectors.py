"""Label selectors: metav1.LabelSelector in the CRDs and controller.api; what one selects (controller/selectors.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from controller import api, policy
from controller.api import LabelSelector, parse_resource
from controller.compile import Workload, compile_workload, judge
from controller.selectors import matches, selector_key
from controller.store import ResourceStore

REPO = Path(__file__).resolve().parents[2]


def sel(labels: dict[str, str] | None = None, *expressions: tuple[str, str, list[str] | None]) -> LabelSelector:
    exprs = [{"key": k, "operator": op, **({"values": v} if v is not None else {})} for k, op, v in expressions]
    return LabelSelector.model_validate({"matchLabels": labels or {}, "matchExpressions": exprs})


WEB_GOLD = {"app": "web", "tier": "gold"}

# (selector, labels, selected) as Kubernetes' labels.Selector decides it.
CASES: list[tuple[str, LabelSelector | None, dict[str, str], bool]] = [
    ("no selector selects all", None, {}, True),
    ("{} selects all", sel(), {"app": "web"}, True),
    ("matchLabels equal", sel({"app": "web"}), WEB_GOLD, True),
    ("matchLabels other value", sel({"app": "api"}), WEB_GOLD, False),
    ("matchLabels missing key", sel({"team": "a"}), WEB_GOLD, False),
    ("In holds", sel(None, ("tier", "In", ["gold", "silver"])), WEB_GOLD, True),
    ("In other value", sel(None, ("tier", "In", ["silver"])), WEB_GOLD, False),
    ("In missing key", sel(None, ("zone", "In", ["a"])), WEB_GOLD, False),
    ("NotIn holds", sel(None, ("tier", "NotIn", ["bronze"])), WEB_GOLD, True),
    ("NotIn listed value", sel(None, ("tier", "NotIn", ["gold"])), WEB_GOLD, False),
    ("NotIn missing key holds", sel(None, ("zone", "NotIn", ["a"])), WEB_GOLD, True),
    ("Exists", sel(None, ("tier", "Exists", None)), WEB_GOLD, True),
    ("Exists missing", sel(None, ("zone", "Exists", None)), WEB_GOLD, False),
    ("Exists with an empty value", sel(None, ("flag", "Exists", None)), {"flag": ""}, True),
    ("DoesNotExist", sel(None, ("zone", "DoesNotExist", None)), WEB_GOLD, True),
    ("DoesNotExist present", sel(None, ("tier", "DoesNotExist", None)), WEB_GOLD, False),
    ("all must hold", sel({"app": "web"}, ("tier", "In", ["gold"]), ("zone", "DoesNotExist", None)), WEB_GOLD, True),
    (
        "one fails, none selected",
        sel({"app": "web"}, ("tier", "In", ["gold"]), ("app", "NotIn", ["web"])),
        WEB_GOLD,
        False,
    ),
]


@pytest.mark.parametrize(("selector", "labels", "selected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_matches_as_kubernetes_does(selector: LabelSelector | None, labels: dict[str, str], selected: bool) -> None:
    assert matches(selector, labels) is selected


def test_the_same_selector_said_differently_has_one_key() -> None:
    as_labels = sel({"app": "web", "tier": "gold"})
    as_in = sel(None, ("tier", "In", ["gold"]), ("app", "In", ["web"]))
    mixed = sel({"app": "web"}, ("tier", "In", ["gold", "gold"]))
    assert selector_key(as_labels) == selector_key(as_in) == selector_key(mixed)
    assert selector_key(sel(None, ("t", "In", ["a", "b"]))) == selector_key(sel(None, ("t", "In", ["b", "a"])))
    assert selector_key(None) == selector_key(sel()) == ()
    different = [
        sel({"app": "web"}),
        sel(None, ("app", "NotIn", ["web"])),
        sel(None, ("app", "Exists", None)),
        sel(None, ("app", "DoesNotExist", None)),
        sel(None, ("app", "In", ["web", "api"])),
        sel({"app": "web"}, ("tier", "Exists", None)),
    ]
    assert len({selector_key(s) for s in different}) == len(different)


@pytest.mark.parametrize(("expression", "message"), [
    ({"key": "tier", "operator": "In"}, "operator In needs values (key tier)"),
    ({"key": "tier", "operator": "NotIn", "values": []}, "operator NotIn needs values (key tier)"),
    ({"key": "tier", "operator": "Exists", "values": ["a"]}, "operator Exists takes no values (key tier)"),
    ({"key": "tier", "operator": "DoesNotExist", "values": ["a"]}, "operator DoesNotExist takes no values"),
    ({"key": "tier", "operator": "in", "values": ["a"]}, "'In', 'NotIn', 'Exists' or 'DoesNotExist'"),
    ({"key": "", "operator": "Exists"}, "at least 1 character"),
])  # fmt: skip
def test_a_bad_requirement_is_refused_as_the_apiserver_does(expression: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        LabelSelector.model_validate({"matchExpressions": [expression]})
    assert message in str(caught.value)


# --- used where selectors are used ----------------------------------------------------


def _store(*docs: dict[str, Any]) -> Any:
    store = ResourceStore()
    for doc in docs:
        store.apply(parse_resource(doc))
    return store.view()


def _route(name: str, model: str, upstream: str, selector: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": model, "rules": [{"backends": [{"provider": "p", "model": upstream}]}]}
    if selector is not None:
        spec["workloadSelector"] = selector
    return {"kind": "ModelRoute", "metadata": {"name": name, "namespace": "team"}, "spec": spec}


PROVIDER = {"kind": "ModelProvider", "metadata": {"name": "p", "namespace": "team"}, "spec": {"type": "openai"}}


def _upstream(view: Any, labels: dict[str, str]) -> list[str]:
    snapshot = compile_workload(judge(view), Workload("team", labels=labels))
    return [b.model for r in snapshot.routes for b in r.rules[0].backends]


def test_a_route_with_match_expressions_serves_the_workloads_it_selects() -> None:
    gold = {
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["gold", "platinum"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ]
    }
    view = _store(PROVIDER, _route("everyone", "chat", "small", None), _route("gold", "chat", "large", gold))
    assert _upstream(view, {"tier": "gold"}) == ["large"]
    assert _upstream(view, {"tier": "platinum", "app": "x"}) == ["large"]
    assert _upstream(view, {"tier": "gold", "canary": "true"}) == ["small"]
    assert _upstream(view, {"tier": "silver"}) == ["small"]
    assert _upstream(view, {}) == ["small"]


def test_two_routes_whose_selectors_say_the_same_conflict() -> None:
    view = _store(
        PROVIDER,
        _route("a-labels", "chat", "one", {"matchLabels": {"app": "web"}}),
        _route("b-expr", "chat", "two", {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}),
    )
    verdicts = judge(view).routes
    assert verdicts[("ModelRoute", "team", "a-labels")].accepted.ok
    loser = verdicts[("ModelRoute", "team", "b-expr")].accepted
    assert (loser.ok, loser.reason) == (False, "Conflicted")
    assert "a-labels" in loser.message


def test_routes_whose_selectors_differ_only_by_an_expression_both_stand() -> None:
    view = _store(
        PROVIDER,
        _route("web", "chat", "one", {"matchLabels": {"app": "web"}}),
        _route(
            "web-gold",
            "chat",
            "two",
            {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]},
        ),
    )
    assert all(v.accepted.ok for v in judge(view).routes.values())


def test_policy_pod_and_namespace_selectors_take_expressions() -> None:
    cluster = parse_resource(
        {
            "kind": "ClusterModelPolicy",
            "metadata": {"name": "eu"},
            "spec": {
                "namespaceSelector": {"matchExpressions": [{"key": "region", "operator": "NotIn", "values": ["us"]}]},
                "subjects": {"podSelector": {"matchExpressions": [{"key": "batch", "operator": "Exists"}]}},
            },
        }
    )
    assert isinstance(cluster, api.ClusterModelPolicy)
    batch = Workload("team", labels={"batch": "yes"})
    assert policy.binds(cluster, batch, namespace_labels={"region": "eu"})
    assert policy.binds(cluster, batch, namespace_labels={})  # NotIn: no region label is not "us"
    assert not policy.binds(cluster, batch, namespace_labels={"region": "us"})
    assert not policy.binds(cluster, Workload("team", labels={"app": "web"}), namespace_labels={"region": "eu"})


# --- the CRDs carry one LabelSelector schema ------------------------------------------


def _spec(file: str) -> dict[str, Any]:
    crd = yaml.safe_load((REPO / "crds" / file).read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_without_descriptions(v) for v in node]
    return node


SELECTORS = {
    "ModelRoute spec.workloadSelector": _spec("modelway.io_modelroutes.yaml")["properties"]["workloadSelector"],
    "ModelPolicy spec.subjects.podSelector": _spec("modelway.io_modelpolicies.yaml")["properties"]["subjects"][
        "properties"
    ]["podSelector"],
    "ClusterModelPolicy spec.subjects.podSelector": _spec("modelway.io_clustermodelpolicies.yaml")["properties"][
        "subjects"
    ]["properties"]["podSelector"],
    "ClusterModelPolicy spec.namespaceSelector": _spec("modelway.io_clustermodelpolicies.yaml")["properties"][
        "namespaceSelector"
    ],
}


def test_every_selector_in_the_crds_is_the_same_label_selector() -> None:
    shapes = {name: _without_descriptions(schema) for name, schema in SELECTORS.items()}
    first = next(iter(shapes.values()))
    assert all(shape == first for shape in shapes.values()), sorted(shapes)
    expressions = first["properties"]["matchExpressions"]["items"]
    assert expressions["properties"]["operator"]["enum"] == ["In", "NotIn", "Exists", "DoesNotExist"]
    assert expressions["required"] == ["key", "operator"]
    assert [r["reason"] for r in expressions["x-kubernetes-validations"]] == [
        "FieldValueRequired",
        "FieldValueForbidden",
    ]
