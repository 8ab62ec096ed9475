"""controller/api/ and the CRDs in crds/ (the API's source of truth) stay in step.

No cluster: each CRD's ``openAPIV3Schema.properties.spec`` is walked side by
side with the pydantic model's JSON schema (by alias, ``$defs`` resolved),
comparing at every level the property names, which are required, types, enum
values, defaults, bounds and array item shapes. A difference fails with its
path, e.g. ``ModelRoute spec.rules[].retry: CRD has ['retryOn'], controller.api has
['retry_on']``.

The CEL rules (x-kubernetes-validations) are not compared: they are checked
against the real apiserver in tests/e2e/test_crds.py.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from controller import api
from shared.provider_types import ProviderType

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
EXAMPLES = REPO / "examples" / "k8s"

KINDS: dict[str, tuple[type[BaseModel], str]] = {
    "ModelProvider": (api.ModelProvider, "modelway.io_modelproviders.yaml"),
    "ModelRoute": (api.ModelRoute, "modelway.io_modelroutes.yaml"),
    "ModelPolicy": (api.ModelPolicy, "modelway.io_modelpolicies.yaml"),
    "ClusterModelPolicy": (api.ClusterModelPolicy, "modelway.io_clustermodelpolicies.yaml"),
}

# Bounds the CRD sets and controller.api does not (yet). Upper bounds on lists and
# strings keep the CEL rules within the apiserver's cost budget; the header
# name pattern refuses names that can never match. Each is a stricter CRD
# than controller.api, so `modelway dev` accepts what kubectl refuses: controller.api should
# adopt them (then delete the line here; a stale line does not fail).
CRD_ONLY_BOUNDS: dict[str, set[str]] = {
    "ModelRoute spec.rules[].matches.headers": {"maxItems"},
    "ModelRoute spec.rules[].matches.headers[].name": {"maxLength"},
    "ModelRoute spec.rules[].matches.headers[].value": {"maxLength"},
    "ModelRoute spec.rules[].matches.headers[].regex": {"maxLength"},
    "ModelRoute spec.rules[].backends[].provider": {"maxLength"},
    "ModelRoute spec.rules[].backends[].model": {"maxLength"},
    "ModelRoute spec.rules[].fallbacks[].provider": {"maxLength"},
    "ModelRoute spec.rules[].fallbacks[].model": {"maxLength"},
    "ModelRoute spec.rules[].retry.retryOn": {"maxItems"},
    "ModelRoute spec.rules[].experiment.arms[].backends[].provider": {"maxLength"},
    "ModelRoute spec.rules[].experiment.arms[].backends[].model": {"maxLength"},
}
BOUNDS = ("minLength", "maxLength", "minItems", "maxItems", "minimum", "maximum",
          "exclusiveMinimum", "exclusiveMaximum", "pattern")  # fmt: skip


# --- loading ---------------------------------------------------------------------------


def load_crd(kind: str) -> dict[str, Any]:
    return yaml.safe_load((CRDS / KINDS[kind][1]).read_text())


def crd_version(kind: str) -> dict[str, Any]:
    (version,) = load_crd(kind)["spec"]["versions"]
    return version


def crd_schema(kind: str) -> dict[str, Any]:
    return crd_version(kind)["schema"]["openAPIV3Schema"]


class PydanticSchema:
    """A model's JSON schema with ``$ref``s and ``Optional``'s ``anyOf [X, null]`` unwrapped."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.root = model.model_json_schema(by_alias=True)
        self.defs = self.root.get("$defs", {})

    def node(self, schema: dict[str, Any]) -> dict[str, Any]:
        extra = {k: v for k, v in schema.items() if k not in ("$ref", "anyOf")}
        if "$ref" in schema:
            target = self.defs[schema["$ref"].rsplit("/", 1)[-1]]
            return {**self.node(target), **extra}
        if "anyOf" in schema:
            options = [o for o in schema["anyOf"] if o.get("type") != "null"]
            assert len(options) == 1, f"unexpected union {schema['anyOf']}"  # only Optional[X] is mirrored
            return {**self.node(options[0]), **extra}
        return schema

    def spec(self) -> dict[str, Any]:
        return self.node(self.root["properties"]["spec"])


# --- comparing -------------------------------------------------------------------------


def _meaningful(value: Any) -> Any:
    """A default with nulls and empty collections dropped (they mean "unset"); None if nothing is left."""
    if isinstance(value, dict):
        kept = {k: v for k, v in ((k, _meaningful(v)) for k, v in value.items()) if v is not None}
        return kept or None
    if isinstance(value, list | tuple):
        return list(value) or None
    return value


def _crd_effective_default(schema: dict[str, Any]) -> Any:
    """The CRD default as the apiserver stores it: an object default gets its properties' defaults too."""
    default = schema.get("default")
    if isinstance(default, dict):
        filled = dict(default)
        for name, prop in schema.get("properties", {}).items():
            if name not in filled and "default" in prop:
                filled[name] = _crd_effective_default(prop)
        default = filled
    return default


def _type(schema: dict[str, Any]) -> str | None:
    if "const" in schema or "enum" in schema:
        return schema.get("type", "string")
    return schema.get("type")


def _enum(schema: dict[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    return schema.get("enum")


def compare(path: str, crd: dict[str, Any], py_schema: dict[str, Any], pyd: PydanticSchema, out: list[str]) -> None:
    py = pyd.node(py_schema)
    if _type(crd) != _type(py):
        out.append(f"{path}: type: CRD has {_type(crd)!r}, controller.api has {_type(py)!r}")
        return
    if _enum(crd) != _enum(py):
        out.append(f"{path}: enum: CRD has {_enum(crd)}, controller.api has {_enum(py)}")

    crd_default, py_default = _meaningful(_crd_effective_default(crd)), _meaningful(py.get("default"))
    if crd_default != py_default:
        out.append(f"{path}: default: CRD has {crd_default!r}, controller.api has {py_default!r}")

    allowed_extra = CRD_ONLY_BOUNDS.get(path, set())
    for bound in BOUNDS:
        c, p = crd.get(bound), py.get(bound)
        if c == p or (p is None and bound in allowed_extra):
            continue
        out.append(f"{path}: {bound}: CRD has {c!r}, controller.api has {p!r}")

    if _type(crd) == "array":
        compare(f"{path}[]", crd.get("items", {}), py.get("items", {}), pyd, out)
    elif _type(crd) == "object":
        crd_props, py_props = crd.get("properties", {}), py.get("properties", {})
        only_crd, only_py = sorted(set(crd_props) - set(py_props)), sorted(set(py_props) - set(crd_props))
        if only_crd or only_py:
            out.append(f"{path}: CRD has {only_crd}, controller.api has {only_py}")
        crd_req, py_req = sorted(crd.get("required", [])), sorted(py.get("required", []))
        if crd_req != py_req:
            out.append(f"{path}: required: CRD has {crd_req}, controller.api has {py_req}")
        for name in sorted(set(crd_props) & set(py_props)):
            compare(f"{path}.{name}", crd_props[name], py_props[name], pyd, out)
        crd_map, py_map = crd.get("additionalProperties"), py.get("additionalProperties")
        if isinstance(crd_map, dict) or isinstance(py_map, dict):  # a map type (matchLabels)
            if not (isinstance(crd_map, dict) and isinstance(py_map, dict)):
                out.append(f"{path}: map values: CRD has {crd_map!r}, controller.api has {py_map!r}")
            else:
                compare(f"{path}{{}}", crd_map, py_map, pyd, out)


def differences(kind: str) -> list[str]:
    model, _ = KINDS[kind]
    pyd = PydanticSchema(model)
    out: list[str] = []
    compare(f"{kind} spec", crd_schema(kind)["properties"]["spec"], pyd.spec(), pyd, out)
    return out


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_api_py_mirrors_the_crd_spec(kind: str) -> None:
    diffs = differences(kind)
    assert not diffs, "controller/api/ and crds/ disagree:\n  " + "\n  ".join(diffs)


def test_the_comparison_catches_a_renamed_field() -> None:
    """The walker itself: a snake_case name, a lost default and a changed enum are reported with their path."""
    crd = crd_schema("ModelRoute")["properties"]["spec"]
    retry = crd["properties"]["rules"]["items"]["properties"]["retry"]
    retry["properties"]["retry_on"] = retry["properties"].pop("retryOn")
    retry["properties"]["attempts"].pop("default")
    retry["default"]["attempts"] = 3
    pyd = PydanticSchema(api.ModelRoute)
    out: list[str] = []
    compare("ModelRoute spec", crd, pyd.spec(), pyd, out)
    assert "ModelRoute spec.rules[].retry: CRD has ['retry_on'], controller.api has ['retryOn']" in out
    assert "ModelRoute spec.rules[].retry.attempts: default: CRD has None, controller.api has 2" in out
    assert any(d.startswith("ModelRoute spec.rules[].retry: default:") for d in out)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_status_conditions_have_the_condition_fields(kind: str) -> None:
    item = crd_schema(kind)["properties"]["status"]["properties"]["conditions"]["items"]
    pyd = PydanticSchema(api.Condition)
    fields = set(pyd.root["properties"])
    assert set(item["properties"]) == fields
    assert item["properties"]["status"]["enum"] == pyd.node(pyd.root["properties"]["status"])["enum"]


# --- the CRD files are well-formed -----------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_crd_identity(kind: str) -> None:
    crd = load_crd(kind)
    spec = crd["spec"]
    plural = api.PLURALS[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{plural}.{api.GROUP}"
    assert spec["group"] == api.GROUP
    assert spec["scope"] == ("Cluster" if kind in api.CLUSTER_KINDS else "Namespaced")
    assert spec["names"]["kind"] == kind
    assert spec["names"]["plural"] == plural
    assert spec["names"]["singular"] == kind.lower()
    assert spec["names"]["shortNames"] == [
        {"ModelProvider": "mwp", "ModelRoute": "mwr", "ModelPolicy": "mwpol", "ClusterModelPolicy": "mwcpol"}[kind]
    ]
    assert spec["names"]["categories"] == ["modelway"]
    version = crd_version(kind)
    assert (version["name"], version["served"], version["storage"]) == (api.VERSION, True, True)
    assert version["subresources"] == {"status": {}}


def _columns(kind: str) -> dict[str, str]:
    return {c["name"]: c["jsonPath"] for c in crd_version(kind)["additionalPrinterColumns"] if not c.get("priority")}


def test_printer_columns() -> None:
    assert _columns("ModelRoute") == {
        "Model": ".spec.model",
        "Accepted": '.status.conditions[?(@.type=="Accepted")].status',
        "Programmed": '.status.conditions[?(@.type=="Programmed")].status',
        "Synced": ".status.syncedSidecars",
        "Experiment": ".status.experiment",
        "Age": ".metadata.creationTimestamp",
    }
    assert _columns("ModelProvider") == {
        "Type": ".spec.type",
        "Jurisdiction": ".spec.jurisdiction",
        "Hosting": ".spec.hosting",
        "Accepted": '.status.conditions[?(@.type=="Accepted")].status',
        "ResolvedRefs": '.status.conditions[?(@.type=="ResolvedRefs")].status',
        "Age": ".metadata.creationTimestamp",
    }


def _walk(path: str, schema: dict[str, Any]):  # type: ignore[no-untyped-def]
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from _walk(f"{path}.{name}", prop)
    if "items" in schema:
        yield from _walk(f"{path}[]", schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(f"{path}{{}}", schema["additionalProperties"])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_schema_is_structural_and_documented(kind: str) -> None:
    problems = []
    for path, node in _walk(kind, crd_schema(kind)):
        if path == f"{kind}.metadata":
            continue  # the apiserver publishes ObjectMeta's own schema
        is_scalar_item = path.endswith(("{}", "[]")) and node.get("type") != "object"  # described by its list/map
        if not is_scalar_item and not node.get("description", "").strip():
            problems.append(f"{path}: no description (kubectl explain shows nothing)")
        if "type" not in node:
            problems.append(f"{path}: no type (not structural)")
        if node.get("additionalProperties") is False:
            problems.append(f"{path}: additionalProperties: false is not allowed; unknown fields are pruned")
        if node.get("type") == "object" and not ("properties" in node or "additionalProperties" in node):
            problems.append(f"{path}: an object with neither properties nor additionalProperties")
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                if key not in item.get("required", []) and "default" not in item["properties"][key]:
                    problems.append(f"{path}: list map key {key!r} is neither required nor defaulted")
        for rule in node.get("x-kubernetes-validations", []):
            if not (rule.get("message") or rule.get("messageExpression")):
                problems.append(f"{path}: CEL rule {rule['rule']!r} has no message")
    assert not problems, "\n".join(problems)


# --- the examples satisfy controller.api too (the file source reads the same YAML) ------------


def _examples() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs += [
            (f"{path.name}:{d['metadata']['name']}", d)
            for d in yaml.safe_load_all(path.read_text())
            if d and d["kind"] in api.KINDS
        ]  # not the demo app's Deployment
    return docs


@pytest.mark.parametrize(("where", "doc"), _examples(), ids=[w for w, _ in _examples()])
def test_examples_parse_with_api_py(where: str, doc: dict[str, Any]) -> None:
    resource = api.parse_resource(doc)
    if doc["kind"] != "Secret":
        assert doc["apiVersion"] == api.API_VERSION
    if doc["kind"] == "Secret":
        assert doc["metadata"]["labels"]["modelway.io/credentials"] == "true"
    assert "namespace" not in doc["metadata"], "examples are applied with -n; leave the namespace out"
    assert resource.metadata.name == doc["metadata"]["name"]


def test_examples_cover_every_provider_type() -> None:
    kinds = [d for _, d in _examples()]
    types = {d["spec"]["type"] for d in kinds if d["kind"] == "ModelProvider"}
    assert types == set(ProviderType.__args__)  # type: ignore[attr-defined]
    assert sum(d["kind"] == "ModelRoute" for d in kinds) >= 2


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_message_expression_has_a_plain_message_to_fall_back_on(kind: str) -> None:
    """The apiserver prints `message` when a messageExpression fails (e.g. a value with a line break in it)."""
    rules = [
        (path, rule)
        for path, node in _walk(kind, crd_schema(kind))
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert rules
    missing = [
        f"{path}: {rule['rule']!r}" for path, rule in rules if "messageExpression" in rule and not rule.get("message")
    ]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("folder", ["k8s", "dev"])
def test_examples_show_limits_budgets_and_capacity(folder: str) -> None:
    """A newcomer finds each kind of limit in the examples, and a reroute that can be served."""
    resources = [
        api.parse_resource(d)
        for path in sorted((REPO / "examples" / folder).glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if d and d["kind"] in api.KINDS
    ]
    limits = [limit for r in resources if isinstance(r, api.ModelPolicy) for limit in r.spec.limits]
    assert any(limit.requests_per_minute and limit.per == "workload" for limit in limits)
    assert any(limit.tokens_per_minute and limit.per == "namespace" for limit in limits)
    (budget,) = [limit for limit in limits if limit.usd_per_day is not None]
    assert budget.on_budget_spent == "reroute" and budget.reroute_to
    providers = {r.metadata.name: r.spec for r in resources if isinstance(r, api.ModelProvider)}
    for target in budget.reroute_to:
        priced = {m.name: m for m in providers[target.provider].models}
        cheaper = priced[target.model]  # priced, so the budget can tell it is cheaper
        assert all(
            cheaper.input_price_per_million is not None
            and model.input_price_per_million is not None
            and cheaper.input_price_per_million < model.input_price_per_million
            for name, model in priced.items()
            if any(fnmatchcase(name, glob) for glob in budget.models or ())
        )
    assert any(spec.capacity for spec in providers.values())
