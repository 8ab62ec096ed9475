"""The Modelway CRDs on a real kube-apiserver: they install, the examples apply,
the apiserver fills in the defaults, refuses bad objects with a message that
names the field, and kubectl shows the printer columns and descriptions."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from controller import api
from tests.e2e.controlplane import ControllerProcess, b64, controller_sidecar, pod_token, wait_until
from tests.e2e.crd_support import CRDS, EXAMPLES, NAMESPACE, PROVIDER, REPO, ROUTE
from tests.fakes.server import DEFAULT_KEYS
from tests.harness.cli import Kubectl
from tests.harness.tools import find_tool
from tests.integration.sidecar import SidecarProcess

pytestmark = pytest.mark.e2e


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
    """A minimal object stored by the apiserver reads back as controller.api would fill it in."""
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
        "NAME", "MODEL", "ACCEPTED", "PROGRAMMED", "SYNCED", "EXPERIMENT", "AGE"]  # fmt: skip
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


def test_an_experiment_s_status_is_kept_whole_and_shown(kubectl: Kubectl, ns: str) -> None:
    """What the controller writes for a decided experiment: nothing pruned, the EXPERIMENT column."""
    from controller.experiment_reports import CountsReport
    from controller.experiment_runner import ExperimentRunner
    from controller.experiments.counts import ArmStats, ProportionStats

    route = {**copy.deepcopy(ROUTE), "metadata": {"name": "with-experiment"}}
    route["spec"]["rules"] = [
        {
            "experiment": {
                "arms": [
                    {"name": "old", "backends": [{"provider": "openai", "model": "gpt-4o"}]},
                    {"name": "new", "backends": [{"provider": "openai", "model": "gpt-4o-mini"}]},
                ],
                "minimumDetectableEffect": 0.05,
                "minimumSample": 30,
                "guardrails": [{"margin": 0.5}],
            }
        }
    ]
    kubectl.apply(route, "-n", ns)
    parsed = api.parse_resource({**route, "metadata": {"name": "with-experiment", "namespace": ns}})
    key = ("ModelRoute", ns, "with-experiment")
    runner = ExperimentRunner(routes=lambda: {key: parsed})  # type: ignore[dict-item]
    runner.tick()
    (name,) = {e["experiment"] for e in runner.statuses()[key][1]}
    counts = {"old": ArmStats(requests=ProportionStats(700, 300)), "new": ArmStats(requests=ProportionStats(1000, 0))}
    runner.record(f"{ns}/app", CountsReport(sidecar="pod-1", started=1.0, experiments={name: counts}))
    runner.tick()
    summary, entries = runner.statuses()[key]
    status = {"experiment": summary, "experiments": list(entries)}
    _patch_status(kubectl, ns, "mwr", "with-experiment", {"status": status})
    after = kubectl.json("get", "-n", ns, "mwr", "with-experiment")
    assert after["status"] == status
    (row,) = _rows(kubectl("get", "-n", ns, "mwr", "with-experiment").stdout)
    assert row["EXPERIMENT"] == "Winner new"
