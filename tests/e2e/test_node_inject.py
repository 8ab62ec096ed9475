"""The injected sidecar on a real node: a pod in a namespace labelled
modelway.io/inject=enabled gets the native sidecar, which starts first, gets
its snapshot from the controller's Service by DNS name over TLS and passes its
startup probe; then the app starts, and a call it makes to the OpenAI base URL
the webhook gave it reaches a fake provider running as another pod behind a
Service.

The app and the fake provider use Python's standard library on the Debian base
image (no image holds the openai SDK yet).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.harness.cli import Helm, Kubectl
from tests.harness.fixtures import HarnessSession, tool
from tests.harness.node import NodeCluster
from tests.integration.sidecar import REPO

pytestmark = pytest.mark.e2e

CHART = REPO / "charts" / "modelway"
SYSTEM = "modelway-system"
APPS = "inject-apps"
PROVIDERS = "fake-providers"

# An OpenAI-compatible chat endpoint that says which model it was asked for.
FAKE_OPENAI = r'''
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply(200, {"ok": True})

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.reply(200, {
            "id": "chatcmpl-node", "object": "chat.completion", "created": 0, "model": request["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "fake-openai answered " + request["model"]}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
        })

ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
'''

# The app: one chat call to whatever OPENAI_BASE_URL says, its answer on
# stdout, then it idles (so its sidecar stays connected).
APP = r'''
import json, os, time, urllib.request
request = urllib.request.Request(
    os.environ["OPENAI_BASE_URL"] + "/chat/completions",
    data=json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}).encode(),
    headers={"Content-Type": "application/json", "Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]},
)
answer = json.load(urllib.request.urlopen(request, timeout=30))
print("ANSWER", answer["choices"][0]["message"]["content"], flush=True)
time.sleep(3600)
'''


def _wait(predicate: Callable[[], bool], timeout: float, what: str, kubectl: Kubectl) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    pods = kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
    events = kubectl("get", "events", "-n", APPS, "--sort-by=.lastTimestamp", check=False).stdout
    logs = kubectl("logs", "-n", APPS, "app", "--all-containers", "--prefix", "--tail=30", check=False)
    pytest.fail(
        f"{what} not within {timeout:.0f}s\n--- pods ---\n{pods}\n--- events in {APPS} ---\n{events}"
        f"\n--- app pod logs ---\n{logs.stdout}{logs.stderr}"
    )


def _python_pod(name: str, namespace: str, image: str, script_cm: str, **container: object) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "containers": [{
                "name": name,
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["python3", "/script/main.py"],
                "securityContext": {"runAsUser": 65532, "runAsNonRoot": True, "readOnlyRootFilesystem": True,
                                    "allowPrivilegeEscalation": False},
                "volumeMounts": [{"name": "script", "mountPath": "/script"}],
                **container,
            }],
            "volumes": [{"name": "script", "configMap": {"name": script_cm}}],
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
def release(harness: HarnessSession, node: NodeCluster, node_kubectl: Kubectl) -> Iterator[Helm]:
    helm = Helm(tool("helm"), node.kubeconfig, harness.workdir / "node-helm")
    repository, tag = node.images["modelway"].rsplit(":", 1)
    helm("install", "modelway", str(CHART), "-n", SYSTEM, "--create-namespace",
         "--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
         "--wait", "--timeout", "4m", timeout=300)  # fmt: skip
    yield helm
    helm("uninstall", "modelway", "-n", SYSTEM, "--wait", timeout=180, check=False)


def test_injected_sidecar_carries_the_apps_call_to_a_provider_pod(
    node: NodeCluster, node_kubectl: Kubectl, release: Helm
) -> None:
    kubectl = node_kubectl
    base = node.images["base"]
    for ns in (PROVIDERS, APPS):
        kubectl("create", "namespace", ns)
    kubectl("label", "namespace", APPS, "modelway.io/inject=enabled")
    for ns in (PROVIDERS, APPS):
        _wait(lambda ns=ns: kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0, 60,
              f"ServiceAccount default in {ns}", kubectl)  # fmt: skip

    kubectl("create", "configmap", "fake-openai", "-n", PROVIDERS, f"--from-literal=main.py={FAKE_OPENAI}")
    provider_pod = _python_pod(
        "fake-openai", PROVIDERS, base, "fake-openai",
        ports=[{"containerPort": 8080}],
        readinessProbe={"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
    )  # fmt: skip
    provider_svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "fake-openai", "namespace": PROVIDERS},
        "spec": {"selector": {"app": "fake-openai"}, "ports": [{"port": 8080, "targetPort": 8080}]},
    }
    kubectl.apply([provider_pod, provider_svc])

    provider = {
        "apiVersion": "modelway.io/v1alpha1",
        "kind": "ModelProvider",
        "metadata": {"name": "fake", "namespace": APPS},
        "spec": {
            "type": "openai-compatible",
            "baseURL": f"http://fake-openai.{PROVIDERS}.svc.cluster.local:8080/v1",
            "hosting": "in-cluster",
            "jurisdiction": "eu",
            "models": [{"name": "fake-model"}],
        },
    }
    route = {
        "apiVersion": "modelway.io/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "chat", "namespace": APPS},
        "spec": {"model": "chat", "rules": [{"name": "default", "backends": [{"provider": "fake", "model": "fake-model"}]}]},
    }
    kubectl.apply([provider, route])

    kubectl("create", "configmap", "app", "-n", APPS, f"--from-literal=main.py={APP}")
    kubectl.apply(_python_pod("app", APPS, base, "app"))

    def answered() -> bool:
        logs = kubectl("logs", "app", "-c", "app", "-n", APPS, check=False).stdout
        return "ANSWER" in logs

    _wait(answered, 180, "the app's answer", kubectl)
    logs = kubectl("logs", "app", "-c", "app", "-n", APPS).stdout
    assert "ANSWER fake-openai answered fake-model" in logs, logs

    pod = kubectl.json("get", "pod", "app", "-n", APPS)
    (sidecar,) = pod["spec"]["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar
    assert sidecar["image"] == node.images["modelway"]
    (sidecar_status,) = pod["status"]["initContainerStatuses"]
    (app_status,) = pod["status"]["containerStatuses"]
    assert sidecar_status["ready"] is True and sidecar_status["restartCount"] == 0, sidecar_status
    # The sidecar started (and passed its startup probe) before the app did.
    assert sidecar_status["state"]["running"]["startedAt"] <= app_status["state"]["running"]["startedAt"]
    sidecar_log = kubectl("logs", "app", "-c", sidecar["name"], "-n", APPS).stdout
    assert f"connected to controller https://modelway-controller.{SYSTEM}.svc:15012" in sidecar_log, sidecar_log

    def synced() -> bool:
        status = kubectl.json("get", "modelroute", "chat", "-n", APPS).get("status", {})
        return status.get("syncedSidecars") == 1

    _wait(synced, 60, "ModelRoute chat SYNCED 1", kubectl)
    header, row = kubectl("get", "modelroutes", "-n", APPS).stdout.splitlines()
    assert dict(zip(header.split(), row.split()))["SYNCED"] == "1", (header, row)
