"""Fixtures the CRD e2e tests share: the CRDs installed, one namespace, the examples applied; and the
valid objects the refusal tests change in one place."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller import api
from tests.harness.cli import Kubectl
from tests.harness.kube import KubeCluster

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
EXAMPLES = REPO / "examples" / "k8s"
NAMESPACE = "crds-e2e"
PLURALS = ("modelproviders", "modelroutes", "modelpolicies", "clustermodelpolicies")

# Valid objects that tests copy and change in one place.
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


def route_with(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """`ROUTE` with `change` applied to its spec."""
    obj = copy.deepcopy(ROUTE)
    change(obj["spec"])
    return obj


def rule0_with(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """`ROUTE` with `change` applied to its first rule."""
    return route_with(lambda spec: change(spec["rules"][0]))


def assert_refused(kubectl: Kubectl, ns: str, obj: dict[str, Any], expected: list[str]) -> None:
    """The apiserver refuses `obj`, its message holding each of `expected`, and stores nothing."""
    namespace = () if obj["kind"] in api.CLUSTER_KINDS else ("-n", ns)
    res = kubectl.apply(obj, *namespace, check=False)
    assert res.returncode != 0, f"accepted: {res.stdout}"
    missing = [text for text in expected if text not in res.stderr]
    assert not missing, f"refusal lacks {missing}:\n{res.stderr}"
    kind = obj["kind"].lower()
    assert kubectl("get", *namespace, kind, obj["metadata"]["name"], check=False).returncode != 0


@pytest.fixture(scope="session")
def crds(kube: KubeCluster, kubectl: Kubectl) -> None:
    """The four CRDs applied, Established and served (Established comes a moment before the storage serves)."""
    kubectl("apply", "-f", str(CRDS))
    for plural in PLURALS:
        kubectl("wait", "--for=condition=Established", f"crd/{plural}.modelway.io", "--timeout=60s")
        deadline = time.monotonic() + 30
        while kube.request("GET", f"/apis/modelway.io/v1alpha1/{plural}?limit=1")[0] != 200:
            assert time.monotonic() < deadline, f"{plural} never served"
            time.sleep(0.1)


@pytest.fixture(scope="session")
def ns(kubectl: Kubectl, crds: None) -> str:
    # Never deleted: without a controller-manager a namespace's deletion never finishes.
    kubectl("create", "namespace", NAMESPACE)
    return NAMESPACE


@pytest.fixture(scope="session")
def examples(kubectl: Kubectl, ns: str) -> str:
    kubectl("apply", "-n", ns, "-f", str(EXAMPLES))
    return ns
