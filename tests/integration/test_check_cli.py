"""`modelway check` on folders of YAML: the real CLI, each problem class, and the exit status."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sidecar import REPO

SECRET = """\
apiVersion: v1
kind: Secret
metadata: {name: llm-keys, namespace: team-a, labels: {modelway.io/credentials: "true"}}
stringData: {openai: sk-test, anthropic: sk-ant-test}
"""
PROVIDERS = """\
apiVersion: modelway.io/v1alpha1
kind: ModelProvider
metadata: {name: openai, namespace: team-a}
spec: {type: openai, jurisdiction: us, credentialsRef: {name: llm-keys, key: openai}}
---
apiVersion: modelway.io/v1alpha1
kind: ModelProvider
metadata: {name: claude, namespace: team-a}
spec: {type: anthropic, jurisdiction: eu, credentialsRef: {name: llm-keys, key: anthropic}}
"""


def route(name: str, model: str, *, provider: str = "openai", regex: str | None = None) -> str:
    rules = []
    if regex is not None:
        rules.append(
            {
                "name": "beta",
                "matches": {"headers": [{"name": "x-tier", "regex": regex}]},
                "backends": [{"provider": provider, "model": "m"}],
            }
        )
    rules.append({"name": "default", "backends": [{"provider": provider, "model": "m"}]})
    return json.dumps(
        {
            "apiVersion": "modelway.io/v1alpha1",
            "kind": "ModelRoute",
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": {"model": model, "rules": rules},
        }
    )


def check(folder: Path, *args: str) -> tuple[int, list[dict[str, Any]]]:
    result = subprocess.run(
        [sys.executable, "-m", "controller.dev", "check", str(folder), "-o", "json", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.stderr == "", result.stderr
    return result.returncode, json.loads(result.stdout)["findings"]


def folder(tmp_path: Path, **files: str) -> Path:
    for name, text in {"secret.yaml": SECRET, "providers.yaml": PROVIDERS, **files}.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


def test_a_clean_folder_passes(tmp_path: Path) -> None:
    status, findings = check(folder(tmp_path, **{"route.yaml": route("chat", "chat")}))
    assert (status, findings) == (0, [])


def test_a_bad_regex_is_an_error_naming_the_file_and_field(tmp_path: Path) -> None:
    status, findings = check(folder(tmp_path, **{"route.yaml": route("chat", "chat", regex="(beta")}))
    assert status == 1
    [finding] = findings
    assert finding["severity"] == "error" and finding["object"].endswith("route.yaml")
    assert "spec.rules.0.matches.headers.0.regex" in finding["problem"] and "does not compile" in finding["problem"]


def test_an_unresolved_backend_names_the_provider(tmp_path: Path) -> None:
    status, findings = check(folder(tmp_path, **{"route.yaml": route("chat", "chat", provider="ghost")}))
    assert status == 1
    [finding] = findings
    assert finding["object"] == "ModelRoute team-a/chat"
    assert finding["problem"].startswith("BackendNotFound") and "ghost" in finding["problem"]
    assert "create the ModelProvider" in finding["fix"]


def test_two_routes_for_one_model_conflict(tmp_path: Path) -> None:
    status, findings = check(folder(tmp_path, **{"a.yaml": route("chat-a", "chat"), "b.yaml": route("chat-b", "chat")}))
    assert status == 1
    [finding] = findings
    assert finding["object"] == "ModelRoute team-a/chat-b" and finding["problem"].startswith("Conflicted")


def test_a_bad_base_url_is_an_error(tmp_path: Path) -> None:
    bad = PROVIDERS.replace("spec: {type: openai,", "spec: {type: openai, baseURL: 'http://llm.internal:99999/v1',")
    status, findings = check(folder(tmp_path, **{"providers.yaml": bad, "route.yaml": route("chat", "chat")}))
    assert status == 1
    assert any("baseURL" in f["problem"] and "99999" in f["problem"] for f in findings)


def test_a_secret_without_the_label_is_an_error_with_the_command_that_fixes_it(tmp_path: Path) -> None:
    unlabelled = SECRET.replace(', labels: {modelway.io/credentials: "true"}', "")
    status, findings = check(folder(tmp_path, **{"secret.yaml": unlabelled, "route.yaml": route("chat", "chat")}))
    assert status == 1
    [finding] = findings
    assert finding["object"] == "Secret team-a/llm-keys"
    assert finding["fix"] == "kubectl label secret -n team-a llm-keys modelway.io/credentials=true"


def test_a_policy_that_leaves_a_route_nothing_for_a_class_is_a_warning(tmp_path: Path) -> None:
    policy = """\
    apiVersion: modelway.io/v1alpha1
    kind: ModelPolicy
    metadata: {name: eu-only, namespace: team-a}
    spec:
      residency:
        - {dataClass: personal, jurisdictions: [eu]}
    """
    status, findings = check(folder(tmp_path, **{"route.yaml": route("chat", "chat"), "policy.yaml": policy}))
    assert status == 0  # a warning: the policy may mean it
    [finding] = findings
    assert finding["severity"] == "warning" and finding["object"] == "ModelRoute team-a/chat"
    assert (
        "personal and restricted requests" in finding["problem"] and "ModelPolicy team-a/eu-only" in finding["problem"]
    )
    assert check(tmp_path, "--strict")[0] == 1
    # a fallback the policy allows closes the gap
    with_fallback = json.loads(route("chat", "chat"))
    with_fallback["spec"]["rules"][0]["fallbacks"] = [{"provider": "claude", "model": "claude-sonnet-4-5"}]
    (tmp_path / "route.yaml").write_text(json.dumps(with_fallback))
    assert check(tmp_path) == (0, [])


@pytest.mark.parametrize("content", ["kind: List\nitems: 5\n", "a: [unclosed\n", "\xff\xfe"])
def test_a_file_that_cannot_be_read_is_an_error_and_the_rest_is_still_checked(tmp_path: Path, content: str) -> None:
    (tmp_path / "broken.yaml").write_bytes(content.encode("latin-1"))
    status, findings = check(folder(tmp_path, **{"route.yaml": route("chat", "chat", provider="ghost")}))
    assert status == 1
    [route_finding] = [f for f in findings if f["object"] == "ModelRoute team-a/chat"]
    [file_finding] = [f for f in findings if f["object"].endswith("broken.yaml")]
    assert "ghost" in route_finding["problem"] and file_finding["severity"] == "error"


def test_text_output_and_a_missing_folder(tmp_path: Path) -> None:
    folder(tmp_path, **{"route.yaml": route("chat", "chat", provider="ghost")})
    result = subprocess.run(
        [sys.executable, "-m", "controller.dev", "check", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 1
    assert "ERROR   ModelRoute team-a/chat" in result.stdout and "fix: create the ModelProvider" in result.stdout
    assert "1 error(s), 0 warning(s)" in result.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "controller.dev", "check", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert missing.returncode == 2 and "is not a folder" in missing.stderr


def test_the_examples_have_no_errors() -> None:
    for example in ("examples/dev", "examples/k8s"):
        status, findings = check(REPO / example)
        assert status == 0, findings
