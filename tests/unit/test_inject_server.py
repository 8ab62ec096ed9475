"""The AdmissionReview server over HTTP (in-process): what the API server sends, what it gets back."""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from controller.webhook.inject import SidecarSettings
from controller.webhook.server import build_webhook_app

SETTINGS = SidecarSettings(image="img:1", controller_url="https://c.ns.svc:15012")


def review(pod: dict[str, Any], *, namespace: str = "team-a", operation: str = "CREATE") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "abc-123",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": operation,
            "namespace": namespace,
            "object": pod,
        },
    }


async def call(body: Any) -> tuple[int, dict[str, Any]]:
    app = build_webhook_app(settings=SETTINGS, ca_pem=lambda: "CA-PEM", own_namespace="modelway-system")
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/inject", data=json.dumps(body) if not isinstance(body, str) else body)
        return resp.status, await resp.json()


POD = {"metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "app", "image": "a"}]}}


async def test_create_gets_a_json_patch_for_the_same_uid():
    status, body = await call(review(POD))
    assert status == 200 and body["kind"] == "AdmissionReview"
    response = body["response"]
    assert response["uid"] == "abc-123" and response["allowed"] is True and response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    sidecar = next(op["value"][0] for op in ops if op["path"] == "/spec/initContainers")
    assert {"name": "MODELWAY_CA_PEM", "value": "CA-PEM"} in sidecar["env"]


async def test_updates_and_the_controller_namespace_are_admitted_unchanged():
    for request in (review(POD, operation="UPDATE"), review(POD, namespace="modelway-system")):
        status, body = await call(request)
        assert status == 200 and body["response"] == {"uid": "abc-123", "allowed": True}


async def test_not_a_review_is_a_400():
    status, body = await call("not json")
    assert status == 400 and "AdmissionReview" in body["error"]
