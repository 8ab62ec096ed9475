"""The injected sidecar on a real node, driven by the official openai SDK.

A namespace labelled modelway.io/inject=enabled; an app pod whose container
runs the openai Python SDK with no Modelway-specific code (its base URL and
key come from the env the webhook sets). Its pod gets the native sidecar,
which starts first, gets its snapshot from the controller's Service by DNS
name over TLS and passes its startup probe; then the app starts and its calls
reach a fake provider running as another pod behind a Service, traced to a
real Jaeger from the app's own span (OpenTelemetry's zero-code
instrumentation, set up by OTEL_* variables in the pod) through the
sidecar's. A route edit
moves the next calls to another provider pod; with both controller pods
deleted the app keeps being served, and the new controller pods push the next
edit.

The steps share one release and one app and run in file order.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.harness.cli import Helm, Kubectl
from tests.harness.fixtures import HarnessSession, tool
from tests.harness.jaeger import JaegerProcess, JaegerServer
from tests.harness.node import NODE_IP, NodeCluster
from tests.integration.sidecar import REPO

pytestmark = pytest.mark.e2e

CHART = REPO / "charts" / "modelway"
SYSTEM = "modelway-system"
APPS = "inject-apps"
PROVIDERS = "fake-providers"
CONTROLLER_PODS = "app.kubernetes.io/component=controller"

# An OpenAI-compatible chat endpoint that says who it is and which model it
# was asked for.
FAKE_OPENAI = r"""
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = os.environ["PROVIDER_NAME"]

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply({"ok": True})

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        print("TRACEPARENT", self.headers.get("traceparent"), flush=True)
        self.reply({
            "id": "chatcmpl-node", "object": "chat.completion", "created": 0, "model": request["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": NAME + " answered " + request["model"]}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
        })

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"""

# The app: the official SDK as any app would use it, one call a second. Its
# tracing is OpenTelemetry's zero-code kind (see _traced_app_pod): nothing here.
APP = r"""
import time
from openai import OpenAI

client = OpenAI(max_retries=0, timeout=10)
while True:
    try:
        answer = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        print("ANSWER", answer.choices[0].message.content, flush=True)
    except Exception as e:
        print("ERROR", type(e).__name__, e, flush=True)
    time.sleep(1)
"""
APP_SERVICE = "inject-app"
SIDECAR_SERVICE = "modelway-proxy"


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


def _traced_app_pod(image: str, jaeger: JaegerServer) -> dict[str, Any]:
    """The app under `opentelemetry-instrument`, configured by the standard OTEL_* variables only.

    The instrumentation patches httpx2's transports (what the SDK sends with), so each call
    is a client span whose context goes out as traceparent, and its spans go over OTLP/HTTP
    to the same Jaeger as the sidecar's.
    """
    env = {
        "OTEL_SERVICE_NAME": APP_SERVICE,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_http_endpoint,
        "OTEL_METRICS_EXPORTER": "none",  # the test's Jaeger takes traces only
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "1000",  # ms: the test waits for the batch
    }
    return _python_pod(
        "app", APPS, image, "app",
        command=["opentelemetry-instrument", "python3", "/script/main.py"],
        env=[{"name": name, "value": value} for name, value in env.items()],
    )  # fmt: skip


def _route(provider: str) -> dict:
    return {
        "apiVersion": "modelway.io/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "chat", "namespace": APPS},
        "spec": {"model": "chat", "rules": [{"name": "default", "backends": [{"provider": provider, "model": "m1"}]}]},
    }


def _answers(kubectl: Kubectl, since: str | None = None) -> list[str]:
    args = ["logs", "app", "-c", "app", "-n", APPS]
    if since:
        args.append(f"--since-time={since}")
    return [line for line in kubectl(*args, check=False).stdout.splitlines() if line.startswith(("ANSWER", "ERROR"))]


def _now() -> str:
    """Now (RFC 3339) for `kubectl logs --since-time`: the node is this machine, same clock."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@pytest.fixture(scope="module")
def node_jaeger(harness: HarnessSession, node: NodeCluster) -> Iterator[JaegerServer]:
    """Jaeger as a process whose OTLP receivers pods reach (on the node's bridge)."""
    proc = JaegerProcess(binary=tool("jaeger"), workdir=harness.workdir / "node-jaeger", ports=harness.ports,
                         otlp_host=NODE_IP)  # fmt: skip
    harness.components["node_jaeger"] = proc.processes
    try:
        yield proc.start()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def app(
    harness: HarnessSession, node: NodeCluster, node_kubectl: Kubectl, node_jaeger: JaegerServer
) -> Iterator[Kubectl]:
    """The release (tracing to Jaeger), two fake provider pods, the providers and route, and the app."""
    kubectl = node_kubectl
    helm = Helm(tool("helm"), node.kubeconfig, harness.workdir / "node-helm")
    repository, tag = node.images["modelway"].rsplit(":", 1)
    helm("install", "modelway", str(CHART), "-n", SYSTEM, "--create-namespace",
         "--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
         "--set", f"otlp.endpoint={node_jaeger.otlp_http_endpoint}",
         "--wait", "--timeout", "4m", timeout=300)  # fmt: skip
    for ns in (PROVIDERS, APPS):
        kubectl("create", "namespace", ns)
    kubectl("label", "namespace", APPS, "modelway.io/inject=enabled")
    for ns in (PROVIDERS, APPS):
        _wait(lambda ns=ns: kubectl("get", "sa", "default", "-n", ns, check=False).returncode == 0, 60,
              f"ServiceAccount default in {ns}", kubectl)  # fmt: skip

    kubectl("create", "configmap", "fake-openai", "-n", PROVIDERS, f"--from-literal=main.py={FAKE_OPENAI}")
    objects: list[dict] = []
    for name in ("provider-a", "provider-b"):
        objects.append(_python_pod(
            name, PROVIDERS, node.images["base"], "fake-openai",
            env=[{"name": "PROVIDER_NAME", "value": name}],
            ports=[{"containerPort": 8080}],
            readinessProbe={"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
        ))  # fmt: skip
        objects.append({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": PROVIDERS},
            "spec": {"selector": {"app": name}, "ports": [{"port": 8080, "targetPort": 8080}]},
        })  # fmt: skip
        objects.append({
            "apiVersion": "modelway.io/v1alpha1",
            "kind": "ModelProvider",
            "metadata": {"name": name, "namespace": APPS},
            "spec": {
                "type": "openai-compatible",
                "baseURL": f"http://{name}.{PROVIDERS}.svc.cluster.local:8080/v1",
                "hosting": "in-cluster",
                "jurisdiction": "eu",
                "models": [{"name": "m1"}],
            },
        })  # fmt: skip
    objects.append(_route("provider-a"))
    kubectl.apply(objects)

    kubectl("create", "configmap", "app", "-n", APPS, f"--from-literal=main.py={APP}")
    kubectl.apply(_traced_app_pod(node.images["app"], node_jaeger))
    yield kubectl
    kubectl("delete", "namespace", APPS, PROVIDERS, "--wait=true", "--timeout=120s", check=False, timeout=150)
    helm("uninstall", "modelway", "-n", SYSTEM, "--wait", timeout=180, check=False)


def test_sidecar_starts_first_and_the_sdk_call_reaches_the_provider_pod(node: NodeCluster, app: Kubectl) -> None:
    kubectl = app
    _wait(lambda: any(a.startswith("ANSWER") for a in _answers(kubectl)), 180, "the app's first answer", kubectl)
    assert _answers(kubectl)[0] == "ANSWER provider-a answered m1", _answers(kubectl)

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
    # Read by the header's column offsets: a column may be empty (EXPERIMENT, on a route without one).
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    cells = {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)}
    assert cells["SYNCED"] == "1", (header, row)


def _service(trace: dict[str, Any], span: dict[str, Any]) -> str:
    return str(trace["processes"][span["processID"]]["serviceName"])


def _parent(span: dict[str, Any]) -> str | None:
    refs = [r for r in span["references"] if r["refType"] == "CHILD_OF"]
    assert len(refs) <= 1, span
    return str(refs[0]["spanID"]) if refs else None


def _whole_trace(jaeger: JaegerServer) -> dict[str, Any] | None:
    """The newest of the app's traces that holds the sidecar's client span too (a trace's
    spans come in the app's and the sidecar's batches, at their own times)."""
    try:
        traces = jaeger.traces(APP_SERVICE, limit="20")
    except OSError:  # the service is unknown until the app's first batch arrives
        return None
    whole = [
        t
        for t in traces
        if any(_service(t, s) == SIDECAR_SERVICE and s["operationName"] == "chat m1" for s in t["spans"])
    ]
    return max(whole, key=lambda t: min(s["startTime"] for s in t["spans"]), default=None)


def test_the_call_is_traced_from_app_through_sidecar_to_provider(app: Kubectl, node_jaeger: JaegerServer) -> None:
    kubectl = app
    deadline = time.monotonic() + 60
    trace = _whole_trace(node_jaeger)
    while trace is None and time.monotonic() < deadline:
        time.sleep(1)
        trace = _whole_trace(node_jaeger)
    assert trace is not None, (
        f"no trace of {APP_SERVICE} through the sidecar within 60s; services: {node_jaeger.services()}"
    )

    # One trace: the app's own span (its SDK's HTTP call, made by the OpenTelemetry
    # instrumentation) is the root; the sidecar's server span is its child, and the
    # sidecar's call to the provider is the server span's child.
    (app_span,) = [s for s in trace["spans"] if _service(trace, s) == APP_SERVICE]
    sidecar = {s["operationName"]: s for s in trace["spans"] if _service(trace, s) == SIDECAR_SERVICE}
    server, client = sidecar["chat chat"], sidecar["chat m1"]
    assert _parent(app_span) is None, app_span
    assert _parent(server) == app_span["spanID"], (server, app_span)  # the sidecar continues the app's trace
    assert _parent(client) == server["spanID"], (client, server)
    # The provider pod got the sidecar's client span as its parent, sampled.
    provider_log = kubectl("logs", "provider-a", "-n", PROVIDERS).stdout
    received = [line.split()[1] for line in provider_log.splitlines() if line.startswith("TRACEPARENT ")]
    sent = f"00-{trace['traceID']}-{client['spanID']}-"
    flags = [traceparent.removeprefix(sent) for traceparent in received if traceparent.startswith(sent)]
    assert len(flags) == 1 and int(flags[0], 16) & 1, (sent, received)


def test_route_edit_moves_the_next_calls(app: Kubectl) -> None:
    kubectl = app
    kubectl.apply(_route("provider-b"))
    since = _now()
    _wait(lambda: "ANSWER provider-b answered m1" in _answers(kubectl, since), 60,
          "an answer from provider-b after the edit", kubectl)  # fmt: skip
    time.sleep(3)
    later = _now()
    time.sleep(3)
    assert set(_answers(kubectl, later)) == {"ANSWER provider-b answered m1"}, _answers(kubectl, later)


def test_app_is_served_without_controllers_and_new_ones_push_the_next_edit(app: Kubectl) -> None:
    kubectl = app
    old = {p["metadata"]["name"] for p in kubectl.json("get", "pods", "-n", SYSTEM, "-l", CONTROLLER_PODS)["items"]}
    assert len(old) == 2
    deleted_at = _now()
    kubectl("delete", "pods", "-n", SYSTEM, "-l", CONTROLLER_PODS, "--wait=false")

    def new_controllers_ready() -> bool:
        pods = kubectl.json("get", "pods", "-n", SYSTEM, "-l", CONTROLLER_PODS)["items"]
        ready = [
            p
            for p in pods
            if p["metadata"]["name"] not in old
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ]
        return len(ready) == 2  # fmt: skip

    _wait(new_controllers_ready, 180, "2 new controller pods Ready", kubectl)
    # Served all along, from the deletion until the new controllers were
    # Ready: answers kept coming, none failed.
    served = _answers(kubectl, deleted_at)
    assert len(served) >= 3 and set(served) == {"ANSWER provider-b answered m1"}, served
    kubectl.apply(_route("provider-a"))
    since = _now()
    _wait(lambda: "ANSWER provider-a answered m1" in _answers(kubectl, since), 90,
          "the next edit pushed by the new controllers", kubectl)  # fmt: skip
    assert not [a for a in _answers(kubectl, since) if a.startswith("ERROR")], _answers(kubectl, since)
