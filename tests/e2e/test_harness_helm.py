"""The helm fixture is the real helm: lint, template and install into the apiserver."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.harness.cli import Helm, Kubectl

pytestmark = pytest.mark.e2e


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    root = tmp_path / "smoke"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text(
        "apiVersion: v2\nname: smoke\nversion: 0.1.0\ndescription: throwaway chart\nkubeVersion: '>=1.30.0-0'\n"
    )
    (root / "values.yaml").write_text("greeting: hello\n")
    (root / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
        "  name: {{ .Release.Name }}-greeting\n"
        "  labels:\n    app.kubernetes.io/managed-by: {{ .Release.Service }}\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    return root


def test_lint_and_template(helm_offline: Helm, chart: Path) -> None:
    helm_offline("lint", str(chart), "--strict")
    out = helm_offline("template", "demo", str(chart), "--set", "greeting=hi").stdout
    (cm,) = [d for d in yaml.safe_load_all(out) if d]
    assert cm["metadata"]["name"] == "demo-greeting"
    assert cm["data"] == {"greeting": "hi"}


def test_install_into_the_apiserver(helm: Helm, kubectl: Kubectl, chart: Path) -> None:
    helm("install", "smoke", str(chart), "--namespace", "helm-smoke", "--create-namespace",
         "--set", "greeting=installed")  # fmt: skip
    cm = kubectl.json("get", "configmap", "smoke-greeting", "--namespace", "helm-smoke")
    assert cm["data"] == {"greeting": "installed"}
    (release,) = helm.json("list", "--namespace", "helm-smoke")
    assert release["status"] == "deployed"
    helm("uninstall", "smoke", "--namespace", "helm-smoke")
    gone = kubectl("get", "configmap", "smoke-greeting", "--namespace", "helm-smoke", check=False)
    assert gone.returncode != 0
