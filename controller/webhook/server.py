"""The AdmissionReview (admission.k8s.io/v1) server the API server calls for new pods.

Thin on purpose: decode, ask `inject.build_patch`, encode. The webhook's
selectors keep other pods away; what reaches us and must not be injected
(our own namespace, an opt-out annotation, a pod already injected) gets an
empty answer, never a refusal. A pod we should inject but cannot is refused:
it would start with its SDKs pointed nowhere.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from controller.webhook.inject import SidecarSettings, build_patch

log = logging.getLogger("modelway.webhook")

INJECT_PATH = "/inject"
MAX_REVIEW_BYTES = 4 * 1024 * 1024  # a Pod with large inline env still fits; the apiserver caps at 3 MiB


def build_webhook_app(*, settings: SidecarSettings, ca_pem: Callable[[], str], own_namespace: str) -> web.Application:
    """`ca_pem()` is read per request: the certificate source may renew the CA while we run."""

    async def inject(request: web.Request) -> web.Response:
        try:
            review = await request.json()
            req = review["request"]
            uid = str(req["uid"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "expected an admission.k8s.io/v1 AdmissionReview"}, status=400)
        return web.json_response(
            _review(uid, _answer(req, settings=settings, ca_pem=ca_pem(), own_namespace=own_namespace))
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app.router.add_post(INJECT_PATH, inject)
    app.router.add_get("/healthz", healthz)
    return app


def _answer(req: dict[str, Any], *, settings: SidecarSettings, ca_pem: str, own_namespace: str) -> dict[str, Any]:
    kind = (req.get("kind") or {}).get("kind")
    if kind != "Pod" or req.get("operation") != "CREATE" or req.get("subResource"):
        return {"allowed": True}
    pod = req.get("object") or {}
    namespace = str(req.get("namespace") or (pod.get("metadata") or {}).get("namespace") or "")
    meta = pod.get("metadata") or {}
    who = f"{namespace}/{meta.get('name') or (meta.get('generateName') or '') + '*'}"
    try:
        decision = build_patch(pod, namespace=namespace, settings=settings, ca_pem=ca_pem, own_namespace=own_namespace)
    except Exception as exc:
        log.exception("pod %s: injection failed", who)
        return {
            "allowed": False,
            "status": {"code": 500, "message": f"modelway sidecar injection failed: {type(exc).__name__}"},
        }
    log.info("pod %s: %s", who, decision.reason)
    if not decision.patch:
        return {"allowed": True}
    patch = base64.b64encode(json.dumps(decision.patch).encode()).decode()
    return {"allowed": True, "patchType": "JSONPatch", "patch": patch}


def _review(uid: str, response: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": uid, **response}}
