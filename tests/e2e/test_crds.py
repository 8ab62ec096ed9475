"""The Modelway CRDs on a real kube-apiserver: they install, the examples apply,
the apiserver fills in the defaults, refuses bad objects with a message that
names the field, and kubectl shows the printer columns and descriptions."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller import api
from tests.harness.cli import Kubectl

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
EXAMPLES = REPO / "examples" / "k8s"
NAMESPACE = "crds-e2e"


@pytest.fixture(scope="module")
def crds(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(CRDS))
    kubectl("wait", "--for=condition=Established", "--timeout=60s",
            "crd/modelroutes.modelway.io", "crd/modelproviders.modelway.io", "crd/modelpolicies.modelway.io",
            "crd/clustermodelpolicies.modelway.io")  # fmt: skip


@pytest.fixture(scope="module")
def ns(kubectl: Kubectl, crds: None) -> str:
    # Never deleted: without a controller-manager a namespace's deletion never finishes.
    kubectl("create", "namespace", NAMESPACE)
    return NAMESPACE


@pytest.fixture(scope="module")
def examples(kubectl: Kubectl, ns: str) -> str:
    kubectl("apply", "-n", ns, "-f", str(EXAMPLES))
    return ns


def _example_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] in api.KINDS]
    return docs


def _without_empties(value: Any) -> Any:
    if isinstance(value, dict):
        kept = {k: _without_empties(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_without_empties(v) for v in value]
    return value


# --- install and apply -----------------------------------------------------------------


def test_crds_are_established_with_names(kubectl: Kubectl, crds: None) -> None:
    for plural, short in (("modelroutes", "mwr"), ("modelproviders", "mwp"), ("modelpolicies", "mwpol"),
                          ("clustermodelpolicies", "mwcpol")):
        crd = kubectl.json("get", "crd", f"{plural}.modelway.io")
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True"
        assert conditions["NamesAccepted"] == "True"
        assert crd["status"]["acceptedNames"]["shortNames"] == [short]
        assert crd["status"]["acceptedNames"]["categories"] == ["modelway"]


def test_every_example_applies(kubectl: Kubectl, examples: str) -> None:
    expected = {f"{d['kind'].lower()}/{d['metadata']['name']}" for d in _example_docs()}
    names = kubectl("get", "-n", examples, "secrets,modelway", "-o", "name").stdout.split()
    got = {re.sub(r"\.modelway\.io/", "/", n) for n in names}
    assert expected <= got, f"missing after apply: {sorted(expected - got)}"
    # Applying again changes nothing (kubectl may still say "configured": a
    # client-side apply re-sends lists the apiserver has filled defaults into).
    def generations() -> dict[str, int]:
        items = kubectl.json("get", "-n", examples, "modelway")["items"]
        return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["generation"] for i in items}

    before = generations()
    kubectl("apply", "-n", examples, "-f", str(EXAMPLES))
    assert generations() == before


def test_examples_apply_server_side(kubectl: Kubectl, crds: None) -> None:
    """Server-side apply merges `rules` by name (a list map whose key has a default) and keeps their order."""
    ns = f"{NAMESPACE}-ssa"
    kubectl("create", "namespace", ns)
    kubectl("apply", "--server-side", "-n", ns, "-f", str(EXAMPLES))
    rules = kubectl.json("get", "-n", ns, "mwr", "chat")["spec"]["rules"]
    assert [r["name"] for r in rules] == ["beta-testers", "eu-data", "default"]
    assert kubectl.json("get", "-n", ns, "mwr", "embeddings")["spec"]["rules"][0]["name"] == "default"


def test_examples_read_back_parse_with_api_py(kubectl: Kubectl, examples: str) -> None:
    for kind in ("modelproviders", "modelroutes", "modelpolicies", "clustermodelpolicies"):
        for item in kubectl.json("get", "-n", examples, kind)["items"]:
            api.parse_resource(item)


# --- defaults --------------------------------------------------------------------------


def test_the_apiserver_applies_the_defaults(kubectl: Kubectl, examples: str) -> None:
    route = kubectl.json("get", "-n", examples, "modelroute", "chat")
    beta = next(r for r in route["spec"]["rules"] if r["name"] == "beta-testers")
    assert beta["retry"] == {
        "attempts": 2,
        "retryOn": ["connect-error", "timeout", "429", "5xx"],
        "backoffBase": "100ms",
        "backoffMax": "2s",
        "maxRetryAfter": "5s",
    }
    assert beta["timeouts"] == {"total": "120s", "connect": "5s"}
    assert beta["backends"][0]["weight"] == 1
    # A partly given block keeps what was given and gets the rest.
    eu = next(r for r in route["spec"]["rules"] if r["name"] == "eu-data")
    assert eu["timeouts"] == {"total": "90s", "connect": "5s"}

    embeddings = kubectl.json("get", "-n", examples, "mwr", "embeddings")
    assert embeddings["spec"]["rules"][0]["name"] == "default"

    gemini = kubectl.json("get", "-n", examples, "mwp", "gemini")
    assert gemini["spec"]["hosting"] == "saas"
    assert gemini["spec"]["credentialsRef"] == {"name": "gemini-credentials", "key": "apiKey"}


def test_apiserver_defaults_equal_api_py_defaults(kubectl: Kubectl, ns: str) -> None:
    """A minimal object stored by the apiserver reads back as api.py would fill it in."""
    minimal_route = {
        "apiVersion": api.API_VERSION, "kind": "ModelRoute",
        "metadata": {"name": "minimal", "namespace": ns},
        "spec": {"model": "m", "rules": [{"backends": [{"provider": "p", "model": "model-a"}],
                                           "fallbacks": [{"provider": "q", "model": "model-b"}]}]},
    }  # fmt: skip
    minimal_provider = {
        "apiVersion": api.API_VERSION, "kind": "ModelProvider",
        "metadata": {"name": "minimal", "namespace": ns},
        "spec": {"type": "openai", "credentialsRef": {"name": "s"}, "models": [{"name": "model-a"}]},
    }  # fmt: skip
    for obj, model in ((minimal_route, api.ModelRoute), (minimal_provider, api.ModelProvider)):
        kubectl.apply(obj)
        stored = kubectl.json("get", "-n", ns, obj["kind"].lower(), "minimal")["spec"]
        by_api_py = model.model_validate(obj).spec.model_dump(mode="json", by_alias=True)  # type: ignore[attr-defined]
        assert _without_empties(stored) == _without_empties(by_api_py)


# --- refusals --------------------------------------------------------------------------

ROUTE: dict[str, Any] = {
    "apiVersion": api.API_VERSION,
    "kind": "ModelRoute",
    "metadata": {"name": "bad-route"},
    "spec": {"model": "chat", "rules": [{"name": "default", "backends": [{"provider": "openai", "model": "gpt-4o"}]}]},
}
PROVIDER: dict[str, Any] = {
    "apiVersion": api.API_VERSION,
    "kind": "ModelProvider",
    "metadata": {"name": "bad-provider"},
    "spec": {"type": "openai"},
}
HEADER_RULE = {"name": "beta", "matches": {"headers": [{"name": "x-tier", "value": "beta"}]},
               "backends": [{"provider": "anthropic", "model": "claude-sonnet-4-5"}]}  # fmt: skip
AZURE = {"type": "azure-openai", "baseURL": "https://r.openai.azure.com", "azure": {"apiVersion": "2024-10-21"}}


def _route(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    obj = copy.deepcopy(ROUTE)
    change(obj["spec"])
    return obj


def _rule0(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    return _route(lambda spec: change(spec["rules"][0]))


def _provider(**spec: Any) -> dict[str, Any]:
    obj = copy.deepcopy(PROVIDER)
    obj["spec"] = spec
    return obj


BAD: dict[str, tuple[dict[str, Any], list[str]]] = {
    "all-weights-zero": (
        _rule0(lambda r: r.update(backends=[{"provider": "openai", "model": "gpt-4o", "weight": 0},
                                            {"provider": "azure-eu", "model": "gpt-4o", "weight": 0}])),
        ["spec.rules[0].backends", "at least one backend needs a weight above 0"],
    ),
    "negative-weight": (
        _rule0(lambda r: r["backends"][0].update(weight=-1)),
        ["spec.rules[0].backends[0].weight", "should be greater than or equal to 0"],
    ),
    "fallback-equals-a-backend": (
        _rule0(lambda r: r.update(fallbacks=[{"provider": "anthropic", "model": "claude-haiku-4-5"},
                                             {"provider": "openai", "model": "gpt-4o"}])),
        ["spec.rules[0].fallbacks", "a fallback must differ from the rule's backends (provider and model)"],
    ),
    "duplicate-rule-names": (
        _route(lambda s: s["rules"].insert(0, {**HEADER_RULE, "name": "default"})),
        ["spec.rules[1]", "Duplicate value", '"name":"default"'],
    ),
    "two-unnamed-rules": (  # both get the default name
        _route(lambda s: s.update(rules=[{k: v for k, v in HEADER_RULE.items() if k != "name"},
                                         {"backends": [{"provider": "openai", "model": "gpt-4o"}]}])),
        ["spec.rules[1]", "Duplicate value", '"name":"default"'],
    ),
    "catch-all-rule-not-last": (
        _route(lambda s: s["rules"].append(HEADER_RULE)),
        ["spec.rules", "only the last rule may be without matches"],
    ),
    "rule-name-not-a-dns-label": (
        _rule0(lambda r: r.update(name="Beta Testers")),
        ["spec.rules[0].name", "should match"],
    ),
    "duration-in-words": (
        _rule0(lambda r: r.update(timeouts={"total": "10 seconds"})),
        ["spec.rules[0].timeouts.total", '"10 seconds"', "should match '^([0-9]{1,5}(h|m|s|ms)){1,4}$'"],
    ),
    "zero-timeout": (
        _rule0(lambda r: r.update(timeouts={"connect": "0s"})),
        ["spec.rules[0].timeouts.connect", "must be longer than 0"],
    ),
    "first-token-beyond-total": (
        _rule0(lambda r: r.update(timeouts={"total": "30s", "firstToken": "1m"})),
        ["spec.rules[0].timeouts.firstToken", "firstToken must not be longer than total"],
    ),
    "backoff-max-below-base": (
        _rule0(lambda r: r.update(retry={"backoffBase": "3s", "backoffMax": "500ms"})),
        ["spec.rules[0].retry.backoffMax", "backoffMax must not be shorter than backoffBase"],
    ),
    "unknown-retry-on": (
        _rule0(lambda r: r.update(retry={"retryOn": ["4xx"]})),
        ["spec.rules[0].retry.retryOn[0]", 'Unsupported value: "4xx"'],
    ),
    "too-many-attempts": (
        _rule0(lambda r: r.update(retry={"attempts": 11})),
        ["spec.rules[0].retry.attempts", "should be less than or equal to 10"],
    ),
    "header-value-and-regex": (
        _rule0(lambda r: r.update(matches={"headers": [{"name": "x-tier", "value": "beta", "regex": "b.*"}]})),
        ["spec.rules[0].matches.headers[0].regex", "set at most one of value and regex"],
    ),
    "misspelt-field": (
        _rule0(lambda r: r.update(retries={"attempts": 3})),
        ['unknown field "spec.rules[0].retries"'],
    ),
    "no-rules": (
        _route(lambda s: s.update(rules=[])),
        ["spec.rules", "should have at least 1 items"],
    ),
    "unknown-provider-type": (
        _provider(type="bedrock"),
        ["spec.type", 'Unsupported value: "bedrock"', '"openai-compatible"'],
    ),
    "azure-without-api-version": (
        _provider(**{**AZURE, "azure": {}}),
        ["spec.azure.apiVersion", "Required value"],
    ),
    "azure-without-azure": (
        _provider(type="azure-openai", baseURL="https://r.openai.azure.com"),
        ["spec.azure", "Required value", "type azure-openai needs spec.azure (with apiVersion)"],
    ),
    "azure-without-base-url": (
        _provider(**{k: v for k, v in AZURE.items() if k != "baseURL"}),
        ["spec.baseURL", "type azure-openai needs spec.baseURL: it has no default endpoint"],
    ),
    "openai-compatible-without-base-url": (
        _provider(type="openai-compatible", hosting="in-cluster"),
        ["spec.baseURL", "type openai-compatible needs spec.baseURL: it has no default endpoint"],
    ),
    "azure-settings-on-openai": (
        _provider(type="openai", azure={"apiVersion": "2024-10-21"}),
        ["spec.azure", "spec.azure is only allowed when type is azure-openai"],
    ),
    "base-url-without-scheme": (
        _provider(type="openai", baseURL="api.openai.com/v1"),
        ["spec.baseURL", "should match '^https?://'"],
    ),
    "unknown-hosting": (
        _provider(type="openai", hosting="on-prem"),
        ["spec.hosting", 'Unsupported value: "on-prem"'],
    ),
    "negative-price": (
        _provider(type="openai", models=[{"name": "gpt-4o", "inputPricePerMillion": -1}]),
        ["spec.models[0].inputPricePerMillion", "should be greater than or equal to 0"],
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_object_is_refused_naming_the_field(kubectl: Kubectl, ns: str, case: str) -> None:
    obj, expected = BAD[case]
    res = kubectl.apply(obj, "-n", ns, check=False)
    assert res.returncode != 0, f"accepted: {res.stdout}"
    missing = [text for text in expected if text not in res.stderr]
    assert not missing, f"refusal lacks {missing}:\n{res.stderr}"
    kind = obj["kind"].lower()
    assert kubectl("get", "-n", ns, kind, obj["metadata"]["name"], check=False).returncode != 0


def test_the_base_objects_of_the_refusals_are_fine(kubectl: Kubectl, ns: str) -> None:
    """So each refusal above is due to its one change."""
    for obj in (ROUTE, PROVIDER, _provider(**AZURE)):
        kubectl.apply(obj, "-n", ns, "--dry-run=server")


# --- kubectl shows it ------------------------------------------------------------------


def _headers(table: str) -> list[str]:
    return table.splitlines()[0].split()


def _rows(table: str) -> list[dict[str, str]]:
    """kubectl's table as dicts, cut at the header offsets (empty cells are blank, not skipped)."""
    header, *lines = table.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [{n: line[a:b].strip() for n, (a, b) in zip(names, bounds, strict=True)} for line in lines]


def test_printer_columns(kubectl: Kubectl, examples: str) -> None:
    assert _headers(kubectl("get", "-n", examples, "mwr").stdout) == [
        "NAME", "MODEL", "ACCEPTED", "PROGRAMMED", "SYNCED", "AGE"]  # fmt: skip
    assert _headers(kubectl("get", "-n", examples, "mwp").stdout) == [
        "NAME", "TYPE", "JURISDICTION", "HOSTING", "ACCEPTED", "RESOLVEDREFS", "AGE"]  # fmt: skip
    wide = kubectl("get", "-n", examples, "mwp", "azure-eu", "-o", "wide").stdout
    assert _headers(wide)[-3:] == ["REGION", "BASEURL", "AGE"]
    assert "https://my-resource.openai.azure.com" in wide
    (row,) = _rows(kubectl("get", "-n", examples, "mwr", "embeddings").stdout)
    assert row["MODEL"] == "text-embedding-3-small"
    assert row["ACCEPTED"] == row["PROGRAMMED"] == row["SYNCED"] == ""  # no controller here
    (row,) = _rows(kubectl("get", "-n", examples, "mwp", "vllm-llama").stdout)
    assert (row["TYPE"], row["JURISDICTION"], row["HOSTING"]) == ("openai-compatible", "eu", "in-cluster")


def test_category_lists_both_kinds(kubectl: Kubectl, examples: str) -> None:
    names = kubectl("get", "-n", examples, "modelway", "-o", "name").stdout.split()
    assert "modelroute.modelway.io/chat" in names
    assert "modelprovider.modelway.io/vllm-llama" in names


def _words(text: str) -> str:
    return " ".join(text.split())


def test_kubectl_explain_prints_the_descriptions(kubectl: Kubectl, crds: None) -> None:
    schema = yaml.safe_load((CRDS / "modelway.io_modelroutes.yaml").read_text())["spec"]["versions"][0]
    rules = schema["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["rules"]
    weight = rules["items"]["properties"]["backends"]["items"]["properties"]["weight"]
    out = kubectl("explain", "modelroute.spec.rules.backends.weight").stdout
    assert "FIELD: weight <integer>" in out
    assert _words(weight["description"]) in _words(out)
    assert "Relative share" in out

    out = kubectl("explain", "mwr.spec.rules.retry").stdout
    for field in ("attempts", "retryOn", "backoffBase", "backoffMax", "maxRetryAfter"):
        assert field in out
    out = kubectl("explain", "modelprovider.spec.type").stdout
    assert "openai-compatible" in out and "vLLM" in out


# --- the status subresource ------------------------------------------------------------


def _condition(type_: str, status: str, reason: str, generation: int) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": "",
        "observedGeneration": generation,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def _patch_status(kubectl: Kubectl, ns: str, kind: str, name: str, body: dict[str, Any], *, check: bool = True) -> Any:
    return kubectl("patch", "-n", ns, kind, name, "--subresource=status", "--type=merge",
                   "-p", json.dumps(body), check=check)  # fmt: skip


def test_status_is_a_subresource(kubectl: Kubectl, ns: str) -> None:
    route = {**copy.deepcopy(ROUTE), "metadata": {"name": "with-status"}}
    kubectl.apply(route, "-n", ns)
    before = kubectl.json("get", "-n", ns, "mwr", "with-status")
    generation = before["metadata"]["generation"]

    status = {
        "observedGeneration": generation,
        "syncedSidecars": 3,
        "totalSidecars": 4,
        "conditions": [
            _condition("Accepted", "True", "Accepted", generation),
            _condition("ResolvedRefs", "True", "ResolvedRefs", generation),
            _condition("Programmed", "False", "Pending", generation),
        ],
    }
    # The spec sent along to the status endpoint is ignored.
    _patch_status(kubectl, ns, "mwr", "with-status", {"status": status, "spec": {"model": "changed"}})
    after = kubectl.json("get", "-n", ns, "mwr", "with-status")
    assert after["status"] == status
    assert after["spec"]["model"] == "chat"
    assert after["metadata"]["generation"] == generation

    (row,) = _rows(kubectl("get", "-n", ns, "mwr", "with-status").stdout)
    assert (row["MODEL"], row["ACCEPTED"], row["PROGRAMMED"], row["SYNCED"]) == ("chat", "True", "False", "3")

    # And a status sent to the main endpoint is ignored: only the spec changes.
    route["spec"]["model"] = "chat-v2"
    kubectl.apply({**route, "status": {"syncedSidecars": 99}}, "-n", ns)
    again = kubectl.json("get", "-n", ns, "mwr", "with-status")
    assert again["spec"]["model"] == "chat-v2"
    assert again["metadata"]["generation"] == generation + 1
    assert again["status"]["syncedSidecars"] == 3


def test_status_schema_refuses_a_bad_condition(kubectl: Kubectl, ns: str) -> None:
    provider = {**copy.deepcopy(PROVIDER), "metadata": {"name": "with-status"}}
    kubectl.apply(provider, "-n", ns)
    ok = {"conditions": [_condition("Accepted", "True", "Accepted", 1),
                         _condition("ResolvedRefs", "False", "SecretNotFound", 1)]}  # fmt: skip
    _patch_status(kubectl, ns, "mwp", "with-status", {"status": ok})
    (row,) = _rows(kubectl("get", "-n", ns, "mwp", "with-status").stdout)
    assert (row["TYPE"], row["JURISDICTION"], row["HOSTING"]) == ("openai", "", "saas")
    assert (row["ACCEPTED"], row["RESOLVEDREFS"]) == ("True", "False")

    bad = {"conditions": [{**_condition("Accepted", "Maybe", "Accepted", 1)}]}
    res = _patch_status(kubectl, ns, "mwp", "with-status", {"status": bad}, check=False)
    assert res.returncode != 0
    assert 'status.conditions[0].status: Unsupported value: "Maybe"' in res.stderr
