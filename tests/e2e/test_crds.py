"""The Modelway CRDs on a real kube-apiserver: they install, the examples apply,
the apiserver fills in the defaults, refuses bad objects with a message that
names the field, and kubectl shows the printer columns and descriptions."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from controller import api
from tests.e2e.controlplane import ControllerProcess, b64, controller_sidecar, pod_token, wait_until
from tests.fakes.server import DEFAULT_KEYS
from tests.harness.cli import Kubectl
from tests.harness.tools import find_tool
from tests.integration.sidecar import SidecarProcess
from tests.unit.test_crds_durations import DURATIONS, NOT_DURATIONS

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
    for plural, short in (
        ("modelroutes", "mwr"),
        ("modelproviders", "mwp"),
        ("modelpolicies", "mwpol"),
        ("clustermodelpolicies", "mwcpol"),
    ):
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


def _policy(kind: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": kind, "metadata": {"name": "bad-policy"}, "spec": spec}


BAD: dict[str, tuple[dict[str, Any], list[str]]] = {
    "all-weights-zero": (
        _rule0(
            lambda r: r.update(
                backends=[
                    {"provider": "openai", "model": "gpt-4o", "weight": 0},
                    {"provider": "azure-eu", "model": "gpt-4o", "weight": 0},
                ]
            )
        ),
        ["spec.rules[0].backends", "at least one backend needs a weight above 0"],
    ),
    "negative-weight": (
        _rule0(lambda r: r["backends"][0].update(weight=-1)),
        ["spec.rules[0].backends[0].weight", "Invalid value: -1", "should be greater than or equal to 0"],
    ),
    "fallback-equals-a-backend": (
        _rule0(
            lambda r: r.update(
                fallbacks=[
                    {"provider": "anthropic", "model": "claude-haiku-4-5"},
                    {"provider": "openai", "model": "gpt-4o"},
                ]
            )
        ),
        [
            "spec.rules[0].fallbacks",
            "fallback openai/gpt-4o is also a backend of this rule",
            "a fallback must differ from the rule's backends (provider and model)",
        ],
    ),
    "duplicate-rule-names": (
        _route(lambda s: s["rules"].insert(0, {**HEADER_RULE, "name": "default"})),
        ["spec.rules[1]", "Duplicate value", '"name":"default"'],
    ),
    "two-unnamed-rules": (  # both get the default name
        _route(
            lambda s: s.update(
                rules=[
                    {k: v for k, v in HEADER_RULE.items() if k != "name"},
                    {"backends": [{"provider": "openai", "model": "gpt-4o"}]},
                ]
            )
        ),
        ["spec.rules[1]", "Duplicate value", '"name":"default"'],
    ),
    "catch-all-rule-not-last": (
        _route(lambda s: s["rules"].append(HEADER_RULE)),
        [
            "spec.rules",
            "rule default has no matches, so it matches every request and hides the rules after it",
            "only the last rule may be without matches",
        ],
    ),
    "rule-name-not-a-dns-label": (
        _rule0(lambda r: r.update(name="Beta Testers")),
        [
            "spec.rules[0].name",
            '"Beta Testers" is not a DNS label: use lower-case letters, digits and',
            "e.g. beta-testers",
        ],
    ),
    "duration-in-words": (
        _rule0(lambda r: r.update(timeouts={"total": "10 seconds"})),
        [
            "spec.rules[0].timeouts.total",
            '"10 seconds" is not a duration: write numbers with units, '
            "e.g. 300ms, 1.5s, 1m30s or 2h (units h, m, s, ms, us, ns)",
        ],
    ),
    "zero-timeout": (
        _rule0(lambda r: r.update(timeouts={"connect": "0s"})),
        ["spec.rules[0].timeouts.connect", "must be longer than 0, not 0s"],
    ),
    "first-token-beyond-total": (
        _rule0(lambda r: r.update(timeouts={"total": "30s", "firstToken": "1m"})),
        ["spec.rules[0].timeouts.firstToken", "firstToken (1m) must not be longer than total (30s)"],
    ),
    "backoff-max-below-base": (
        _rule0(lambda r: r.update(retry={"backoffBase": "3s", "backoffMax": "500ms"})),
        ["spec.rules[0].retry.backoffMax", "backoffMax (500ms) must not be shorter than backoffBase (3s)"],
    ),
    "unknown-retry-on": (
        _rule0(lambda r: r.update(retry={"retryOn": ["4xx"]})),
        ["spec.rules[0].retry.retryOn[0]", 'Unsupported value: "4xx"'],
    ),
    "too-many-attempts": (
        _rule0(lambda r: r.update(retry={"attempts": 11})),
        ["spec.rules[0].retry.attempts", "Invalid value: 11", "should be less than or equal to 10"],
    ),
    "header-value-and-regex": (
        _rule0(lambda r: r.update(matches={"headers": [{"name": "x-tier", "value": "beta", "regex": "b.*"}]})),
        ["spec.rules[0].matches.headers[0].regex", "header x-tier: set at most one of value and regex"],
    ),
    "header-name-with-a-space": (
        _rule0(lambda r: r.update(matches={"headers": [{"name": "x tier", "value": "beta"}]})),
        [
            "spec.rules[0].matches.headers[0].name",
            '"x tier" is not a header name: use letters, digits and',
            "(no spaces or colons), e.g. x-user-tier",
        ],
    ),
    "misspelt-field": (_rule0(lambda r: r.update(retries={"attempts": 3})), ['unknown field "spec.rules[0].retries"']),
    "no-rules": (_route(lambda s: s.update(rules=[])), ["spec.rules", "should have at least 1 items"]),
    "unknown-provider-type": (
        _provider(type="bedrock"),
        ["spec.type", 'Unsupported value: "bedrock"', '"openai-compatible"'],
    ),
    "azure-without-api-version": (_provider(**{**AZURE, "azure": {}}), ["spec.azure.apiVersion", "Required value"]),
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
        ["spec.azure", "spec.azure is only allowed when type is azure-openai, not openai"],
    ),
    "base-url-without-scheme": (
        _provider(type="openai", baseURL="api.openai.com/v1"),
        ["spec.baseURL", '"api.openai.com/v1"', "should match '^https?://'"],
    ),
    "unknown-hosting": (_provider(type="openai", hosting="on-prem"), ["spec.hosting", 'Unsupported value: "on-prem"']),
    "negative-price": (
        _provider(type="openai", models=[{"name": "gpt-4o", "inputPricePerMillion": -1}]),
        ["spec.models[0].inputPricePerMillion", "Invalid value: -1", "should be greater than or equal to 0"],
    ),
    # Durations as Kubernetes users write them; anything else is named, with what is allowed.
    "negative-duration": (
        _rule0(lambda r: r.update(retry={"backoffBase": "-1s"})),
        ["spec.rules[0].retry.backoffBase", '"-1s" is not a duration', "e.g. 300ms, 1.5s, 1m30s or 2h"],
    ),
    "duration-in-days": (
        _rule0(lambda r: r.update(timeouts={"firstToken": "1d"})),
        ["spec.rules[0].timeouts.firstToken", '"1d" is not a duration', "units h, m, s, ms, us, ns"],
    ),
    # Label selectors: Kubernetes' own, with its operators.
    "selector-in-without-values": (
        _route(lambda s: s.update(workloadSelector={"matchExpressions": [{"key": "tier", "operator": "In"}]})),
        ["spec.workloadSelector.matchExpressions[0].values", "Required value", "operator In needs values (key tier)"],
    ),
    "selector-exists-with-values": (
        _route(
            lambda s: s.update(
                workloadSelector={"matchExpressions": [{"key": "tier", "operator": "Exists", "values": ["gold"]}]}
            )
        ),
        [
            "spec.workloadSelector.matchExpressions[0].values",
            "Forbidden",
            "operator Exists takes no values (key tier): leave values out, or use In or NotIn",
        ],
    ),
    "selector-unknown-operator": (
        _route(
            lambda s: s.update(
                workloadSelector={"matchExpressions": [{"key": "tier", "operator": "in", "values": ["gold"]}]}
            )
        ),
        [
            "spec.workloadSelector.matchExpressions[0].operator",
            'Unsupported value: "in"',
            '"In", "NotIn", "Exists", "DoesNotExist"',
        ],
    ),
    "policy-pod-selector-not-in-without-values": (
        _policy(
            "ModelPolicy",
            subjects={"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": []}]}},
        ),
        ["spec.subjects.podSelector.matchExpressions[0].values", "operator NotIn needs values (key app)"],
    ),
    "cluster-policy-namespace-selector-does-not-exist-with-values": (
        _policy(
            "ClusterModelPolicy",
            namespaceSelector={"matchExpressions": [{"key": "env", "operator": "DoesNotExist", "values": ["prod"]}]},
        ),
        ["spec.namespaceSelector.matchExpressions[0].values", "operator DoesNotExist takes no values (key env)"],
    ),
    "cluster-policy-pod-selector-label-value-too-long": (
        _policy("ClusterModelPolicy", subjects={"podSelector": {"matchLabels": {"app": "x" * 64}}}),
        ["spec.subjects.podSelector.matchLabels.app", "Too long: may not be more than 63 bytes"],
    ),
    "residency-rule-saying-nothing": (
        _policy("ModelPolicy", residency=[{"dataClass": "personal"}]),
        [
            "spec.residency[0]",
            "a residency rule needs at least one of jurisdictions, regions, hosting; "
            "the rule for dataClass personal has none",
        ],
    ),
    "unknown-data-class": (
        _policy("ModelPolicy", defaultDataClass="secret"),
        ["spec.defaultDataClass", 'Unsupported value: "secret"', '"public", "internal", "personal", "restricted"'],
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_object_is_refused_naming_the_field(kubectl: Kubectl, ns: str, case: str) -> None:
    obj, expected = BAD[case]
    namespace = () if obj["kind"] in api.CLUSTER_KINDS else ("-n", ns)
    res = kubectl.apply(obj, *namespace, check=False)
    assert res.returncode != 0, f"accepted: {res.stdout}"
    missing = [text for text in expected if text not in res.stderr]
    assert not missing, f"refusal lacks {missing}:\n{res.stderr}"
    kind = obj["kind"].lower()
    assert kubectl("get", *namespace, kind, obj["metadata"]["name"], check=False).returncode != 0


def test_the_base_objects_of_the_refusals_are_fine(kubectl: Kubectl, ns: str) -> None:
    """So each refusal above is due to its one change."""
    for obj in (ROUTE, PROVIDER, _provider(**AZURE)):
        kubectl.apply(obj, "-n", ns, "--dry-run=server")
    kubectl.apply(_policy("ModelPolicy"), "-n", ns, "--dry-run=server")
    kubectl.apply(_policy("ClusterModelPolicy"), "--dry-run=server")


# --- durations: the apiserver and api.py read them alike -------------------------------


def _ns_form(nanos: int) -> str:
    """The same length written another way, to the nanosecond: 1h2m3.500000000s."""
    seconds, ns = divmod(nanos, 10**9)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{seconds}.{ns:09d}s"


def _with_durations(name: str, retry: dict[str, str], timeouts: dict[str, str] | None = None) -> dict[str, Any]:
    obj = _rule0(lambda r: r.update(retry=retry, **({"timeouts": timeouts} if timeouts else {})))
    obj["metadata"]["name"] = name
    return obj


def test_the_apiserver_takes_every_go_duration_api_py_takes(kubectl: Kubectl, ns: str) -> None:
    """And its CEL duration() gives each the length api.py gives it, to the nanosecond."""
    refused = []
    for text, seconds in DURATIONS.items():
        assert api.duration_seconds(text) == pytest.approx(seconds, abs=1e-12)
        nanos = round(seconds * 1e9)
        retry = {"backoffBase": text, "backoffMax": text, "maxRetryAfter": text}
        ok = _with_durations("go-durations", retry)
        checks = [(ok, True)]
        if nanos > 0:  # firstToken <= total: equal lengths pass, one nanosecond less fails
            checks += [
                (
                    _with_durations(
                        "go-durations", retry, {"total": _ns_form(nanos), "firstToken": text, "connect": text}
                    ),
                    True,
                ),
                (_with_durations("go-durations", retry, {"total": _ns_form(nanos - 1), "firstToken": text}), False),
            ]
        for obj, accept in checks:
            res = kubectl.apply(obj, "-n", ns, "--dry-run=server", check=False)
            if (res.returncode == 0) != accept:
                refused.append(f"{text!r} ({obj['spec']['rules'][0].get('timeouts')}): {res.stderr.strip()}")
    assert not refused, "\n".join(refused)


def test_the_apiserver_refuses_what_api_py_refuses_naming_the_value(kubectl: Kubectl, ns: str) -> None:
    wrong = []
    for text in NOT_DURATIONS:
        with pytest.raises(ValueError):
            api.duration_seconds(text)
        res = kubectl.apply(_with_durations("not-durations", {"maxRetryAfter": text}), "-n", ns, check=False)
        if len(text) > api.DURATION_MAX_LENGTH:
            expected = ["Too long: may not be more than 32 bytes"]
        elif text.isprintable():
            expected = [f'"{text}" is not a duration: write numbers with units']
        else:  # a message may not hold a line break: the rule's plain message stands in
            expected = ["is not a duration: write numbers with units"]
        expected.append("spec.rules[0].retry.maxRetryAfter")
        if res.returncode == 0 or not all(e in res.stderr for e in expected):
            wrong.append(f"{text!r}: rc={res.returncode} {res.stderr.strip()}")
    assert not wrong, "\n".join(wrong)


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


# --- end to end: what the apiserver accepts reaches the sidecars as meant --------------
# The real controller and two sidecars whose Pods (API objects only) carry different
# labels; a fake OpenAI answers with the upstream model it was asked for.

LIVE_NS = "crds-e2e-live"
GOLD = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold", "platinum"]},
                             {"key": "canary", "operator": "DoesNotExist"}]}  # fmt: skip
GO_DURATIONS = {"timeouts": {"total": "1m30s", "firstToken": "1.5s", "connect": "300ms"},
                "retry": {"backoffBase": ".25s", "backoffMax": "1h2m3.5s", "maxRetryAfter": "2h"}}  # fmt: skip


def _live_route(name: str, upstream: str, selector: dict[str, Any] | None = None, **rule: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": "chat", "rules": [{"backends": [{"provider": "openai", "model": upstream}],
                                                        **rule}]}  # fmt: skip
    if selector is not None:
        spec["workloadSelector"] = selector
    return {"apiVersion": api.API_VERSION, "kind": "ModelRoute", "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module")
def live(
    kube: Any, kubectl: Kubectl, crds: None, fake_openai_process: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, SidecarProcess]]:
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LIVE_NS}})
    kubectl.apply([
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "keys", "labels": {"modelway.io/credentials": "true"}},
         "data": {"apiKey": b64(DEFAULT_KEYS["openai"])}},
        {"apiVersion": api.API_VERSION, "kind": "ModelProvider", "metadata": {"name": "openai"},
         "spec": {"type": "openai", "baseURL": fake_openai_process.base_url + "/v1",
                  "credentialsRef": {"name": "keys"}}},
        _live_route("everyone", "small-model"),
        _live_route("gold", "large-model", GOLD, **GO_DURATIONS),
    ], "-n", LIVE_NS)  # fmt: skip
    workdir = tmp_path_factory.mktemp("crds-live")
    controller = ControllerProcess(
        kube.kubeconfig, workdir, env={"POD_NAMESPACE": LIVE_NS, "POD_NAME": "controller-crds"}
    ).start()
    sidecars: dict[str, SidecarProcess] = {}
    try:
        for pod, labels in (
            ("gold", {"tier": "gold"}),
            ("canary", {"tier": "gold", "canary": "yes"}),
            ("bronze", {"tier": "bronze"}),
        ):
            token = pod_token(kubectl, LIVE_NS, pod)
            kubectl("label", "pod", pod, "-n", LIVE_NS, *(f"{k}={v}" for k, v in labels.items()))
            sidecars[pod] = controller_sidecar(controller, token, workdir, pod)
            sidecars[pod].start()
        yield sidecars
    finally:
        for sidecar in sidecars.values():
            sidecar.stop()
        controller.stop()


def _ask(sidecar: SidecarProcess) -> str:
    client = openai.OpenAI(base_url=sidecar.base_url + "/v1", api_key="unused", max_retries=0, timeout=20)
    return client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}]).model


def test_a_route_with_match_expressions_serves_exactly_the_pods_it_selects(live: dict[str, SidecarProcess]) -> None:
    assert _ask(live["gold"]) == "large-model"  # tier In (gold, platinum), no canary label
    assert _ask(live["canary"]) == "small-model"  # canary DoesNotExist fails
    assert _ask(live["bronze"]) == "small-model"  # tier In fails


def test_go_durations_reach_the_sidecar_as_their_seconds(live: dict[str, SidecarProcess]) -> None:
    _, config = live["gold"].admin("/config")
    (route,) = [r for r in config["snapshot"]["routes"] if r["name"] == f"{LIVE_NS}/gold"]
    rule = route["rules"][0]
    assert rule["timeouts"] == {"totalSeconds": 90.0, "firstTokenSeconds": 1.5, "connectSeconds": 0.3}
    retry = rule["retry"]
    assert (retry["backoffBaseSeconds"], retry["backoffMaxSeconds"], retry["maxRetryAfterSeconds"]) == (
        0.25,
        3723.5,
        7200.0,
    )


# --- the chart's NOTES.txt: its commands work as printed on a fresh install ------------

NOTES_NS = "my-team"  # the namespace NOTES.txt tells the user to make


def _notes_commands(notes: str) -> str:
    """Steps 2 and 3 of the rendered notes as the shell script a user pastes (heredocs included)."""
    steps = notes[notes.index("\n2. ") : notes.index("\n4. ")]
    script, in_heredoc = [], False
    for line in steps.splitlines():
        if in_heredoc:
            script.append(line)
            in_heredoc = line != "EOF"
        elif line.startswith("     kubectl "):
            script.append(line.strip())
            in_heredoc = line.endswith("<<'EOF'")
    return "\n".join(script) + "\n"


def test_the_chart_notes_commands_work_as_printed(
    live: dict[str, SidecarProcess], helm: Any, kube: Any, tmp_path: Path
) -> None:
    """What a user pastes from `helm install`'s notes runs, and shows what the notes promise."""
    out = helm(
        "install", "modelway", str(REPO / "charts" / "modelway"), "-n", "modelway-system", "--dry-run=client"
    ).stdout
    notes = out[out.index("NOTES:") :]
    script = _notes_commands(notes)
    env = {
        "PATH": f"{find_tool('kubectl').parent}:/usr/bin:/bin",
        "KUBECONFIG": str(kube.kubeconfig),
        "HOME": str(tmp_path),
        "OPENAI_API_KEY": "sk-notes-test",
    }
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, f"{script}\n{run.stdout}\n{run.stderr}"
    assert "modelroute.modelway.io/chat created" in run.stdout
    assert "kind: ModelRoute" in script and "examples/" not in script  # nothing from a source checkout

    # "Within seconds the route shows ACCEPTED True and PROGRAMMED True, and SYNCED 0".
    def row() -> dict[str, str] | None:
        got = subprocess.run(
            ["kubectl", "-n", NOTES_NS, "get", "modelroutes"], env=env, capture_output=True, text=True, check=True
        ).stdout
        (first,) = _rows(got)
        return first if (first["ACCEPTED"], first["PROGRAMMED"]) == ("True", "True") else None

    shown = wait_until(row, timeout=20, what="ACCEPTED and PROGRAMMED True, as the notes say")
    assert (shown["NAME"], shown["MODEL"], shown["SYNCED"]) == ("chat", "chat", "0")
    assert "\n  kubectl delete crd modelproviders.modelway.io modelroutes.modelway.io" in notes
