"""The controller's admin port (default 0.0.0.0:15014): probes and metrics.

- `/healthz`: the process answers.
- `/readyz`: 200 once the resource source has synced and the first compile is done
  (before that a sidecar would be sent an empty or partial snapshot), else 503.
- `/metrics`: Prometheus text (`controller.metrics`).
- `/sidecars`: the sidecars connected to this replica, with their workload and snapshot
  version (what `modelway status` prints); no credentials, no rules.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from controller.metrics import CONTENT_TYPE
from controller.telemetry import ControllerTelemetry


@dataclass
class Readiness:
    ready: bool = False
    reason: str = "waiting for the resource source to sync"


class ConnectedSidecar(Protocol):
    """What /sidecars reads of one connection (controller.core.Sidecar)."""

    name: str
    sent_version: str
    acked_version: str
    nack_error: str
    connected_at: float
    acked_at: float

    @property
    def wanted_version(self) -> str: ...

    @property
    def workload_name(self) -> str: ...


# For both controller ports' AppRunners. aiohttp's keep-alive timer also closes a connection whose
# request head has not arrived yet, so this bounds silent and slow-header (slowloris) clients too;
# its default is an hour. (No connection cap here yet: the sidecar's guard lives in proxy/.)
RUNNER_OPTIONS: dict[str, Any] = {"keepalive_timeout": 15.0}

READINESS = web.AppKey("readiness", Readiness)
TELEMETRY = web.AppKey("telemetry", ControllerTelemetry)
SIDECARS = web.AppKey[Callable[[], Iterable[ConnectedSidecar]]]("sidecars")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    readiness = request.app[READINESS]
    if not readiness.ready:
        return web.json_response({"ready": False, "reason": readiness.reason}, status=503)
    return web.json_response({"ready": True})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[TELEMETRY].prometheus_text().encode(), headers={"content-type": CONTENT_TYPE})


async def sidecars(request: web.Request) -> web.Response:
    now = time.time()
    rows: list[dict[str, Any]] = []
    for sidecar in sorted(request.app[SIDECARS](), key=lambda s: s.name):
        rows.append(
            {
                "name": sidecar.name,
                "workload": sidecar.workload_name,
                "version": sidecar.acked_version,  # what it runs
                "wantedVersion": sidecar.wanted_version,  # what it should run
                "upToDate": bool(sidecar.acked_version) and sidecar.acked_version == sidecar.wanted_version,
                "refused": sidecar.nack_error,
                "connectedSeconds": round(now - sidecar.connected_at, 1),
                "snapshotAgeSeconds": round(now - sidecar.acked_at, 1) if sidecar.acked_at else None,
            }
        )
    return web.json_response({"sidecars": rows})


def build_admin_app(
    *, readiness: Readiness, telemetry: ControllerTelemetry, connected: Callable[[], Iterable[ConnectedSidecar]] = tuple
) -> web.Application:
    app = web.Application()
    app[READINESS] = readiness
    app[TELEMETRY] = telemetry
    app[SIDECARS] = connected
    app.router.add_get("/sidecars", sidecars)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
