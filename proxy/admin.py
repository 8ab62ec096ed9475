"""The admin port: liveness, readiness (a snapshot is loaded), the config (secrets masked), the limits
that bind this sidecar and where their counters stand (`/limits`), and the metrics as Prometheus text
(`/metrics`, rendered at scrape time from `proxy.telemetry.metrics`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from proxy.runtime import Runtime, RuntimeHolder
from proxy.telemetry.metrics import CONTENT_TYPE, Registry, render_prometheus

ADMIN_HOLDER = web.AppKey("admin_holder", RuntimeHolder)
# Where the configuration comes from and how that source is doing, e.g.
# {"source": "controller", "controllerConnected": true}.
SOURCE_STATUS = web.AppKey[Callable[[], dict[str, Any]]]("source_status")
METRICS = web.AppKey("metrics", Registry)
# The limits that bind this sidecar and where they stand (proxy.request.admit.Admission.status).
LIMITS_STATUS = web.AppKey[Callable[[Runtime | None], dict[str, Any]]]("limits_status")


def _age(received_at: float) -> float:
    return round(time.time() - received_at, 3)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[ADMIN_HOLDER].current
    if runtime is None:
        return web.json_response(
            {"ready": False, "reason": "no snapshot yet", **request.app[SOURCE_STATUS]()}, status=503
        )
    return web.json_response(
        {
            "ready": True,
            "version": runtime.snapshot.version,
            "snapshotAgeSeconds": _age(runtime.received_at),
            **request.app[SOURCE_STATUS](),
        }
    )


_LOOPBACK = frozenset({"127.0.0.1", "::1"})


def _from_outside(request: web.Request) -> web.Response | None:
    # In a pod the admin port listens on the pod IP for the kubelet's probes; the routes, policies
    # and limits (credentials are masked anyway) are for whoever is inside the pod, not the network.
    if request.remote in _LOOPBACK:
        return None
    return web.json_response(
        {
            "error": f"{request.path} answers only on 127.0.0.1, from inside the pod: "
            f"`kubectl port-forward <pod> 15020`, then http://127.0.0.1:15020{request.path}"
        },
        status=403,
    )


async def config(request: web.Request) -> web.Response:
    refused = _from_outside(request)
    if refused is not None:
        return refused
    runtime = request.app[ADMIN_HOLDER].current
    if runtime is None:
        return web.json_response({"snapshot": None, "reason": "no snapshot loaded yet"}, status=503)
    return web.json_response(
        {
            "snapshot": runtime.snapshot.masked(),
            "snapshotAgeSeconds": _age(runtime.received_at),
            **request.app[SOURCE_STATUS](),
        }
    )


async def limits(request: web.Request) -> web.Response:
    refused = _from_outside(request)
    if refused is not None:
        return refused
    return web.json_response(request.app[LIMITS_STATUS](request.app[ADMIN_HOLDER].current))


async def metrics(request: web.Request) -> web.Response:
    # Telemetry off (OTEL_SDK_DISABLED=true): an empty registry, an empty page.
    text = render_prometheus(request.app[METRICS])
    return web.Response(body=text.encode(), headers={"content-type": CONTENT_TYPE})


def build_admin_app(
    *,
    holder: RuntimeHolder,
    source_status: Callable[[], dict[str, Any]] = lambda: {},
    metrics_registry: Registry | None = None,
    limits_status: Callable[[Runtime | None], dict[str, Any]] | None = None,
) -> web.Application:
    app = web.Application()
    app[ADMIN_HOLDER] = holder
    app[SOURCE_STATUS] = source_status
    app[METRICS] = metrics_registry or Registry()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/config", config)
    if limits_status is not None:
        app[LIMITS_STATUS] = limits_status
        app.router.add_get("/limits", limits)
    return app
