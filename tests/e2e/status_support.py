"""Fixtures and object builders the status and leader e2e tests share: CRDs installed once,
a namespace per test, an API client, and the manifests they create."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.kube import KubeClient, load_config
from controller.sources.kube import SECRET_LABEL
from tests.harness.cli import Kubectl
from tests.harness.kube import KubeCluster

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def namespace(kubectl: Kubectl, crds: None) -> Iterator[str]:
    name = f"st-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
async def client(kube: KubeCluster) -> AsyncIterator[KubeClient]:
    async with KubeClient(load_config(kube.kubeconfig)) as c:
        yield c


async def eventually(predicate: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        await asyncio.sleep(0.05)


async def stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def secret(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "openai-key", "namespace": namespace, "labels": {SECRET_LABEL: "true"}},
        "stringData": {"apiKey": "sk-test"},
    }


def provider(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelway.io/v1alpha1",
        "kind": "ModelProvider",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "openai", "credentialsRef": {"name": "openai-key", "key": "apiKey"}},
    }


def route(name: str, namespace: str, backend: str, model: str = "gpt-4o") -> dict[str, Any]:
    return {
        "apiVersion": "modelway.io/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": name, "rules": [{"name": "default", "backends": [{"provider": backend, "model": model}]}]},
    }


async def apply(kubectl: Kubectl, manifest: Any) -> None:
    await asyncio.to_thread(kubectl.apply, manifest)  # off the loop: the elector and watches keep running


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
