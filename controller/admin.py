"""The controller's admin port (default 0.0.0.0:15014): probes and metrics.

- `/healthz`: the process answers.
- `/readyz`: 200 once the resource source has synced and the first compile is done
  (before that a sidecar would be sent an empty or partial snapshot), else 503.
- `/metrics`: Prometheus text (`controller.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from controller.metrics import CONTENT_TYPE
from controller.telemetry import ControllerTelemetry


@dataclass
class Readiness:
    ready: bool = False
    reason: str = "waiting for the resource source to sync"


# For both controller ports' AppRunners. aiohttp's keep-alive timer also closes a connection whose
# request head has not arrived yet, so this bounds silent and slow-header (slowloris) clients too;
# its default is an hour. (No connection cap here yet: the sidecar's guard lives in proxy/.)
RUNNER_OPTIONS: dict[str, Any] = {"keepalive_timeout": 15.0}

READINESS = web.AppKey("readiness", Readiness)
TELEMETRY = web.AppKey("telemetry", ControllerTelemetry)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    readiness = request.app[READINESS]
    if not readiness.ready:
        return web.json_response({"ready": False, "reason": readiness.reason}, status=503)
    return web.json_response({"ready": True})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[TELEMETRY].prometheus_text().encode(), headers={"content-type": CONTENT_TYPE})


def build_admin_app(*, readiness: Readiness, telemetry: ControllerTelemetry) -> web.Application:
    app = web.Application()
    app[READINESS] = readiness
    app[TELEMETRY] = telemetry
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
