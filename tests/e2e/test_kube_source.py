"""KubeClient and KubeSource against the real kube-apiserver of the harness.

The re-list/reconnect paths against a scripted aiohttp fake of the API (a real
apiserver will not produce a 410 or refuse connections on demand) are in
test_kube_client.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.auth import TokenReviewAuthenticator
from controller.kube import (
    MODEL_ROUTES,
    SECRETS,
    ConfigError,
    KubeApiError,
    KubeClient,
    ResourceGone,
    from_kubeconfig,
    in_cluster,
    load_config,
)
from controller.kube.resources import ResourceType
from controller.sources.kube import SECRET_LABEL, KubeSource
from controller.store import ResourceStore
from tests.e2e.kube_helpers import eventually, names, route, running
from tests.harness.cli import Kubectl
from tests.harness.fixtures import HarnessSession
from tests.harness.kube import KubeCluster
from tests.harness.process import ManagedProcess

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

# Used only while crds/ is missing: the same kinds with an open schema.
_FALLBACK_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: %(plural)s.modelway.io}
spec:
  group: modelway.io
  names: {kind: %(kind)s, plural: %(plural)s, singular: %(singular)s}
  scope: Namespaced
  versions:
    - name: v1alpha1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
            status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


# --- manifests and helpers -------------------------------------------------------------


def provider(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelway.io/v1alpha1",
        "kind": "ModelProvider",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "openai", "credentialsRef": {"name": "openai-key"}},
    }


def secret(name: str, namespace: str, *, labelled: bool) -> dict[str, Any]:
    labels = {SECRET_LABEL: "true"} if labelled else {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "stringData": {"apiKey": f"sk-{name}"},
    }


async def kubectl_async(kubectl: Kubectl, *args: str, manifest: Any = None) -> str:
    """kubectl off the event loop, so the source under test keeps reading its watches."""
    if manifest is not None:
        return (await asyncio.to_thread(kubectl.apply, manifest, *args)).stdout
    return (await asyncio.to_thread(kubectl, *args)).stdout


@pytest.fixture(scope="module")
def crds(kube: KubeCluster, kubectl: Kubectl) -> None:
    files = sorted((REPO / "crds").glob("*.yaml"))
    if files:
        for path in files:
            kubectl("apply", "-f", str(path))
    else:
        for kind, plural in (("ModelProvider", "modelproviders"), ("ModelRoute", "modelroutes")):
            kubectl.apply(_FALLBACK_CRD % {"kind": kind, "plural": plural, "singular": kind.lower()})
    for plural in ("modelproviders", "modelroutes"):
        kubectl("wait", "--for=condition=Established", f"crd/{plural}.modelway.io", "--timeout=30s")
        # Established comes a moment before the storage serves (429 "storage is (re)initializing").
        deadline = time.monotonic() + 30
        while kube.request("GET", f"/apis/modelway.io/v1alpha1/{plural}?limit=1")[0] != 200:
            assert time.monotonic() < deadline, f"{plural} never served"
            time.sleep(0.1)


@pytest.fixture
def namespace(kubectl: Kubectl, crds: None) -> str:
    """A fresh namespace per test: sources scoped to it see only the test's objects."""
    name = f"ks-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    return name


@pytest.fixture
async def client(kube: KubeCluster) -> AsyncIterator[KubeClient]:
    async with KubeClient(load_config(kube.kubeconfig)) as c:
        yield c


# --- the client ------------------------------------------------------------------------


async def test_client_list_get_watch_and_status(client: KubeClient, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(route("chat", namespace))
    listed = await client.list(MODEL_ROUTES, namespace=namespace)
    assert [(i["kind"], i["apiVersion"], i["metadata"]["name"]) for i in listed.items] == [
        ("ModelRoute", "modelway.io/v1alpha1", "chat")
    ]
    assert listed.resource_version

    got = await client.get(MODEL_ROUTES, "chat", namespace=namespace)
    assert got["spec"]["model"] == "chat"

    # A watch from the list's version sees what happens after it, bookmarks aside.
    kubectl.apply(route("code", namespace))
    watch = client.watch(MODEL_ROUTES, namespace=namespace, resource_version=listed.resource_version, timeout_seconds=5)
    async with contextlib.aclosing(watch) as events:
        async for event in events:
            if event.type != "BOOKMARK":
                assert (event.type, event.object["metadata"]["name"]) == ("ADDED", "code")
                break

    condition = {
        "type": "Accepted",
        "status": "True",
        "reason": "Accepted",
        "message": "ok",
        "observedGeneration": 1,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    patched = await client.patch_status(MODEL_ROUTES, "chat", {"conditions": [condition]}, namespace=namespace)
    assert patched["status"]["conditions"][0]["reason"] == "Accepted"
    managers = {m["manager"] for m in patched["metadata"]["managedFields"] if m.get("subresource") == "status"}
    assert managers == {"modelway"}

    created = await client.create_event(
        regarding={
            "apiVersion": "modelway.io/v1alpha1",
            "kind": "ModelRoute",
            "name": "chat",
            "namespace": namespace,
            "uid": got["metadata"]["uid"],
        },
        reason="Programmed",
        note="pushed to 0 sidecars",
        action="Push",
        reporting_instance="test-1",
    )
    assert created["metadata"]["name"].startswith("chat.")

    merged = await client.patch(MODEL_ROUTES, "chat", {"metadata": {"labels": {"a": "b"}}}, namespace=namespace)
    assert merged["metadata"]["labels"] == {"a": "b"}
    await client.delete(MODEL_ROUTES, "chat", namespace=namespace)
    with pytest.raises(KubeApiError) as missing:
        await client.get(MODEL_ROUTES, "chat", namespace=namespace)
    assert missing.value.status == 404
    assert f"GET /apis/modelway.io/v1alpha1/namespaces/{namespace}/modelroutes/chat: 404 NotFound" in str(missing.value)


async def test_list_follows_pages(client: KubeClient, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply([route(f"r{i}", namespace) for i in range(5)])
    listed = await client.list(MODEL_ROUTES, namespace=namespace, page_size=2)
    assert sorted(i["metadata"]["name"] for i in listed.items) == [f"r{i}" for i in range(5)]


async def test_watch_from_an_expired_version_is_gone(client: KubeClient, crds: None) -> None:
    watch = client.watch(MODEL_ROUTES, resource_version="1", timeout_seconds=5)
    with pytest.raises(ResourceGone) as gone:
        async with contextlib.aclosing(watch) as events:
            async for _ in events:
                pass
    assert gone.value.status == 410


async def test_a_missing_crd_says_how_to_fix_it(client: KubeClient) -> None:
    nowhere = ResourceType("modelway.io", "v1alpha1", "modelpolicies-not-installed", "Nope")
    with pytest.raises(KubeApiError, match=r"404 NotFound.*CRDs are not installed"):
        await client.list(nowhere)


async def test_leases(client: KubeClient, namespace: str) -> None:
    assert await client.get_lease("leader", namespace=namespace) is None
    created = await client.create_lease(
        "leader", namespace=namespace, spec={"holderIdentity": "a", "leaseDurationSeconds": 15}
    )
    with pytest.raises(KubeApiError) as exists:
        await client.create_lease("leader", namespace=namespace, spec={"holderIdentity": "b"})
    assert exists.value.status == 409

    updated = await client.update_lease({**created, "spec": {**created["spec"], "holderIdentity": "b"}})
    assert updated["spec"]["holderIdentity"] == "b"
    with pytest.raises(KubeApiError) as stale:  # written from the old resourceVersion
        await client.update_lease({**created, "spec": {**created["spec"], "holderIdentity": "c"}})
    assert stale.value.status == 409
    assert (await client.get_lease("leader", namespace=namespace) or {})["spec"]["holderIdentity"] == "b"


async def test_token_review(client: KubeClient, kubectl: Kubectl, namespace: str) -> None:
    kubectl("create", "serviceaccount", "app", "-n", namespace)
    token = kubectl("create", "token", "app", "-n", namespace, "--audience", "modelway").stdout.strip()
    review = await client.token_review(token, audiences=["modelway"])
    assert review.authenticated, review.error
    assert review.username == f"system:serviceaccount:{namespace}:app"
    assert review.service_account == (namespace, "app")
    assert review.audiences == ("modelway",)
    assert review.pod_name is None

    refused = await client.token_review(token, audiences=["someone-else"])
    assert not refused.authenticated
    assert refused.error

    # A token bound to a Pod (what a projected volume holds) names the pod.
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "app-0", "namespace": namespace},
            "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "app"}]},
        }
    )
    pod_uid = kubectl.json("get", "pod", "app-0", "-n", namespace)["metadata"]["uid"]
    bound = kubectl(
        "create",
        "token",
        "app",
        "-n",
        namespace,
        "--audience",
        "modelway",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "app-0",
    ).stdout.strip()
    review = await client.token_review(bound)  # audience "modelway" by default
    assert review.authenticated, review.error
    assert (review.pod_name, review.pod_uid) == ("app-0", pod_uid)

    # What the controller's authenticator is wired to: the raw status and the Pod.
    status = await client.review_token_status(bound)
    assert status["user"]["extra"]["authentication.kubernetes.io/pod-name"] == ["app-0"]
    assert (await client.get_pod(namespace, "app-0") or {})["metadata"]["uid"] == pod_uid
    assert await client.get_pod(namespace, "app-1") is None
    authenticator = TokenReviewAuthenticator(review=client.review_token_status, get_pod=client.get_pod)
    identity = await authenticator.authenticate(bound)
    assert identity is not None and (identity.namespace, identity.pod_name) == (namespace, "app-0")
    assert await authenticator.authenticate(token) is None  # not bound to a pod


async def test_in_cluster_config_rereads_a_rotated_token(
    kube: KubeCluster, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    for sa in ("nobody", "reader"):
        kubectl("create", "serviceaccount", sa, "-n", namespace)
    kubectl("create", "role", "read-secrets", "-n", namespace, "--verb=list,get", "--resource=secrets")
    kubectl(
        "create",
        "rolebinding",
        "reader",
        "-n",
        namespace,
        "--role=read-secrets",
        f"--serviceaccount={namespace}:reader",
    )
    mount = tmp_path / "serviceaccount"
    mount.mkdir()
    (mount / "ca.crt").write_bytes(kube.ca.ca_pem)
    (mount / "namespace").write_text(namespace)
    (mount / "token").write_text(kubectl("create", "token", "nobody", "-n", namespace).stdout)
    host, port = kube.server.removeprefix("https://").rsplit(":", 1)
    config = in_cluster(
        environ={"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}, directory=mount, token_refresh=0
    )
    assert config.namespace == namespace
    assert "eyJ" not in repr(config)  # no JWT in reprs (and so in logs)

    async with KubeClient(config) as c:
        with pytest.raises(KubeApiError) as denied:
            await c.list(SECRETS, namespace=namespace)
        assert denied.value.status == 403
        assert f'"system:serviceaccount:{namespace}:nobody" cannot list resource "secrets"' in str(denied.value)
        assert "RBAC" in str(denied.value)

        (mount / "token").write_text(kubectl("create", "token", "reader", "-n", namespace).stdout)
        assert (await c.list(SECRETS, namespace=namespace)).items == []


async def test_kubeconfig_with_inline_data_and_tokens(
    kube: KubeCluster, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    kubectl("create", "serviceaccount", "robot", "-n", namespace)
    token = kubectl("create", "token", "robot", "-n", namespace).stdout.strip()
    (tmp_path / "robot.token").write_text(token)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "inline",
        "clusters": [
            {"name": "c", "cluster": {"server": kube.server, "certificate-authority-data": b64(kube.ca.cert)}}
        ],
        "users": [
            {
                "name": "admin",
                "user": {"client-certificate-data": b64(kube.admin.cert), "client-key-data": b64(kube.admin.key)},
            },
            {"name": "robot", "user": {"tokenFile": "robot.token"}},  # relative to the kubeconfig
            {"name": "plugin", "user": {"exec": {"command": "aws"}}},
        ],
        "contexts": [
            {"name": "inline", "context": {"cluster": "c", "user": "admin", "namespace": namespace}},
            {"name": "robot", "context": {"cluster": "c", "user": "robot"}},
            {"name": "plugin", "context": {"cluster": "c", "user": "plugin"}},
        ],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))

    admin = from_kubeconfig([path])
    assert admin.namespace == namespace
    async with KubeClient(admin) as c:
        assert (await c.list(SECRETS, namespace=namespace)).items == []
    async with KubeClient(from_kubeconfig([path], context="robot")) as c:  # the robot's token reached the server
        with pytest.raises(KubeApiError, match=f"serviceaccount:{namespace}:robot"):
            await c.list(SECRETS, namespace=namespace)
    with pytest.raises(ConfigError, match="'exec'"):
        from_kubeconfig([path], context="plugin")


# --- the source against the real apiserver -----------------------------------------------


async def test_source_lists_then_follows_changes(client: KubeClient, kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(
        [
            provider("openai", namespace),
            route("chat", namespace),
            secret("openai-key", namespace, labelled=True),
            secret("other", namespace, labelled=False),
        ]
    )
    calls = 0

    def changed() -> None:
        nonlocal calls
        calls += 1

    store = ResourceStore(on_change=changed)
    async with running(KubeSource(client, namespaces=[namespace]), store):
        assert names(store, "ModelProvider") == {f"{namespace}/openai"}
        assert names(store, "ModelRoute") == {f"{namespace}/chat"}
        assert names(store, "Secret") == {f"{namespace}/openai-key"}  # the unlabelled one is not seen
        assert store.view().secrets[0].data["apiKey"] == base64.b64encode(b"sk-openai-key").decode()

        await kubectl_async(kubectl, manifest=route("code", namespace))
        await eventually(
            lambda: names(store, "ModelRoute") == {f"{namespace}/chat", f"{namespace}/code"},
            what="applied route in the store",
        )

        await kubectl_async(kubectl, manifest=route("code", namespace, model="code-v2"))
        await eventually(
            lambda: {r.spec.model for r in store.view().routes} == {"chat", "code-v2"},
            what="modified route in the store",
        )

        await kubectl_async(kubectl, "delete", "modelroute", "chat", "-n", namespace)
        await eventually(lambda: names(store, "ModelRoute") == {f"{namespace}/code"}, what="deleted route gone")

        await kubectl_async(kubectl, manifest=secret("late", namespace, labelled=True))
        await kubectl_async(kubectl, manifest=secret("late-unlabelled", namespace, labelled=False))
        await eventually(lambda: f"{namespace}/late" in names(store, "Secret"), what="labelled secret")
        # Unlabelling is a DELETED event for a label-selected watch.
        await kubectl_async(kubectl, "label", "secret", "openai-key", "-n", namespace, f"{SECRET_LABEL}-")
        await eventually(lambda: names(store, "Secret") == {f"{namespace}/late"}, what="unlabelled secret gone")
        assert calls >= 6


async def test_source_watches_all_namespaces_by_default(client: KubeClient, kubectl: Kubectl, namespace: str) -> None:
    other = f"{namespace}-b"
    kubectl("create", "namespace", other)
    kubectl.apply([route("one", namespace), route("two", other)])
    store = ResourceStore()
    async with running(KubeSource(client), store):
        assert {f"{namespace}/one", f"{other}/two"} <= names(store, "ModelRoute")
        await kubectl_async(kubectl, manifest=route("three", other))
        await eventually(lambda: f"{other}/three" in names(store, "ModelRoute"), what="route in a 2nd namespace")


async def test_source_survives_an_apiserver_restart(
    client: KubeClient,
    kubectl: Kubectl,
    namespace: str,
    kube: KubeCluster,
    harness: HarnessSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    kubectl.apply(route("before", namespace))
    store = ResourceStore()
    source = KubeSource(client, namespaces=[namespace], backoff_base=0.1, backoff_cap=1.0)
    with caplog.at_level(logging.INFO, logger="modelway.sources.kube"):
        async with running(source, store):
            assert names(store, "ModelRoute") == {f"{namespace}/before"}
            await asyncio.to_thread(restart_apiserver, harness, kube)
            await kubectl_async(kubectl, manifest=route("after", namespace))
            await kubectl_async(kubectl, "delete", "modelroute", "before", "-n", namespace)
            await eventually(
                lambda: names(store, "ModelRoute") == {f"{namespace}/after"},
                timeout=60,
                what="changes made after the restart in the store",
            )
    problems = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert problems, "the outage was not logged"
    # Each distinct problem once per streak, not once per retry.
    assert len({r.getMessage() for r in problems}) == len(problems)


def restart_apiserver(harness: HarnessSession, kube: KubeCluster) -> None:
    """Stop and start kube-apiserver on the same port and etcd (state kept).

    A stand-in until tests/harness offers a restart: it swaps the new process
    into the harness's process list so session teardown stops it.
    """
    processes = harness.components["kube"]
    index = next(i for i, p in enumerate(processes) if p.name == "kube-apiserver")
    old = processes[index]
    old.stop()
    new = ManagedProcess(old.name, old.argv, old.log_path)
    processes[index] = new
    new.wait_ready(lambda: kube.request("GET", "/readyz", timeout=3)[0] == 200, timeout=90, what="ready again")
