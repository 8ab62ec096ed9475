"""The kube fixture is a real apiserver: CEL-validated CRDs, the status
subresource, TokenRequest/TokenReview, Leases, Events, watch bookmarks and
admission webhooks served from this machine."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.harness.cli import Kubectl
from tests.harness.kube import KubeCluster, KubeControlPlane

pytestmark = pytest.mark.e2e

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.modelway.io
spec:
  group: smoke.modelway.io
  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wdg]}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                min: {type: integer}
                max: {type: integer}
              x-kubernetes-validations:
                - rule: "self.min <= self.max"
                  message: "min must not exceed max"
            status:
              type: object
              properties:
                ready: {type: boolean}
"""


def widget(name: str, lo: int, hi: int) -> dict[str, Any]:
    return {
        "apiVersion": "smoke.modelway.io/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"min": lo, "max": hi},
    }


def test_version_is_the_pinned_release(kubectl: Kubectl) -> None:
    version = json.loads(kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    assert version["clientVersion"]["gitVersion"] == version["serverVersion"]["gitVersion"]


def test_crd_cel_rule_rejects_bad_object(kubectl: Kubectl) -> None:
    kubectl.apply(CRD)
    kubectl("wait", "--for=condition=Established", "crd/widgets.smoke.modelway.io", "--timeout=30s")

    kubectl.apply(widget("good", 1, 2))
    bad = kubectl.apply(widget("bad", 3, 2), check=False)
    assert bad.returncode != 0
    assert "min must not exceed max" in bad.stderr

    # status is a subresource: written only through /status.
    kubectl("patch", "widget", "good", "--subresource=status", "--type=merge",
            "-p", '{"status": {"ready": true}}')  # fmt: skip
    assert kubectl.json("get", "wdg", "good")["status"] == {"ready": True}


def test_token_review_of_a_minted_token(kubectl: Kubectl) -> None:
    kubectl("create", "serviceaccount", "smoke-sa")
    token = kubectl("create", "token", "smoke-sa", "--audience=modelway").stdout.strip()
    review: dict[str, Any] = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": ["modelway"]},
    }
    status = json.loads(kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review)).stdout)["status"]
    assert status["authenticated"] is True
    assert status["user"]["username"] == "system:serviceaccount:default:smoke-sa"
    assert status["audiences"] == ["modelway"]

    review["spec"]["audiences"] = ["someone-else"]
    status = json.loads(kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review)).stdout)["status"]
    assert not status.get("authenticated")


def test_leases_and_events(kubectl: Kubectl) -> None:
    kubectl.apply(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "smoke-leader", "namespace": "default"},
            "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15},
        }
    )
    assert kubectl.json("get", "lease", "smoke-leader")["spec"]["holderIdentity"] == "replica-a"
    kubectl.apply(
        {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "smoke-event", "namespace": "default"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "modelway.io/smoke",
            "reportingInstance": "smoke-1",
            "action": "Reconcile",
            "reason": "Smoke",
            "type": "Normal",
            "note": "hello",
            "regarding": {"kind": "Lease", "name": "smoke-leader", "namespace": "default"},
        }
    )
    assert kubectl.json("get", "events.events.k8s.io", "smoke-event")["note"] == "hello"


def test_watch_sends_bookmarks(kube: KubeCluster, kubectl: Kubectl) -> None:
    kubectl("create", "configmap", "smoke-watched", "--from-literal=a=b")
    # A watch-list request ends its initial events with a bookmark: the
    # quickest way to see the apiserver emit one.
    url = (
        kube.server + "/api/v1/namespaces/default/configmaps?watch=1&allowWatchBookmarks=true"
        "&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=20"
    )
    seen: list[tuple[str, str]] = []
    with urllib.request.urlopen(url, context=kube.ssl_context(), timeout=20) as stream:
        for line in stream:
            event = json.loads(line)
            meta = event["object"]["metadata"]
            seen.append((event["type"], meta.get("name", "")))
            if event["type"] == "BOOKMARK":
                assert meta["annotations"]["k8s.io/initial-events-end"] == "true"
                break
    assert ("ADDED", "smoke-watched") in seen
    assert seen[-1][0] == "BOOKMARK"


class _DenyForbidden(BaseHTTPRequestHandler):
    """A validating webhook: denies ConfigMaps that carry a ``forbidden`` key."""

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        allowed = "forbidden" not in (request["object"].get("data") or {})
        body = json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": request["uid"],
                    "allowed": allowed,
                    "status": {"code": 403, "message": "smoke webhook says no"},
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def webhook_url(kube: KubeCluster) -> Iterator[str]:
    pair = kube.issue_serving_cert("smoke-webhook")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pair.cert), str(pair.key))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DenyForbidden)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/validate"
    finally:
        server.shutdown()
        server.server_close()


def test_admission_webhook_on_this_machine_is_called(kube: KubeCluster, kubectl: Kubectl, webhook_url: str) -> None:
    kubectl.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "smoke-webhook"},
            "webhooks": [
                {
                    "name": "smoke.modelway.io",
                    "clientConfig": {"url": webhook_url, "caBundle": base64.b64encode(kube.ca.ca_pem).decode()},
                    "rules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["configmaps"],
                        }
                    ],
                    "objectSelector": {"matchLabels": {"smoke-webhook": "on"}},
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "failurePolicy": "Fail",
                    "timeoutSeconds": 5,
                }
            ],
        }
    )
    try:
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "smoke-hooked", "namespace": "default", "labels": {"smoke-webhook": "on"}},
            "data": {"forbidden": "yes"},
        }
        # The apiserver picks new webhook configurations up asynchronously.
        deadline = time.monotonic() + 20
        while True:
            res = kubectl.apply(cm, check=False)
            if res.returncode != 0 and "smoke webhook says no" in res.stderr:
                break
            if res.returncode == 0:
                kubectl("delete", "configmap", "smoke-hooked")
            assert time.monotonic() < deadline, f"webhook never denied: {res.stdout}{res.stderr}"
            time.sleep(0.5)
        cm["data"] = {"fine": "yes"}
        kubectl.apply(cm)
    finally:
        kubectl("delete", "validatingwebhookconfiguration", "smoke-webhook", "--ignore-not-found")


def test_apiserver_restart_keeps_state(kube_control_plane: KubeControlPlane, kubectl: Kubectl) -> None:
    kubectl("create", "configmap", "smoke-survivor", "--from-literal=a=b")
    kube_control_plane.restart_apiserver()
    assert kubectl.json("get", "configmap", "smoke-survivor")["data"] == {"a": "b"}
