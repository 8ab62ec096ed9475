"""The sidecar's end of the controller stream: receive snapshots, swap them in, ACK or NACK.

The sidecar keeps serving its last good snapshot whenever the controller is
away, also across its own restart: every accepted snapshot is saved to a file
(on an emptyDir in Kubernetes) and loaded from there at start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from proxy.experiments import ExperimentCounts
from proxy.runtime import Runtime, RuntimeHolder
from proxy.snapshot import (
    STREAM_PATH,
    Snapshot,
    older_sidecar,
    parse_snapshot,
    problem_text,
    refused_field,
    snapshot_schema,
    to_wire,
)

log = logging.getLogger("modelway.sync")


class SyncSettings(msgspec.Struct, frozen=True, kw_only=True):
    controller_url: str  # e.g. https://modelway-controller.modelway-system.svc:15012
    token_file: Path
    ca_file: Path | None = None
    ca_pem: str | None = None  # the same as text (MODELWAY_CA_PEM): a pod cannot mount the controller's Secret
    state_file: Path | None = None
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    heartbeat_seconds: float = 20.0
    counts_seconds: float = 5.0  # how often experiment counts go to the controller (when they moved)


def load_saved(state_file: Path) -> tuple[Snapshot, float] | None:
    """The last snapshot this sidecar accepted, and when it received it; None when there is none."""
    try:
        saved = json.loads(state_file.read_text())
        return parse_snapshot(saved["snapshot"]), float(saved["receivedAt"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring saved snapshot %s: %s", state_file, type(exc).__name__)
        return None


def save(state_file: Path, snapshot: Snapshot, received_at: float) -> None:
    """Atomic (write + rename) and owner-only: the file holds credentials."""
    tmp = state_file.with_name(state_file.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"receivedAt": received_at, "snapshot": to_wire(snapshot)}, out)
    os.replace(tmp, state_file)


class ControllerSync:
    def __init__(
        self,
        *,
        settings: SyncSettings,
        holder: RuntimeHolder,
        build_runtime: Callable[[Snapshot, float], Runtime] = lambda s, t: Runtime.build(s, received_at=t),
        counts: ExperimentCounts | None = None,
    ) -> None:
        self._settings = settings
        self._counts = counts
        self._holder = holder
        self._build = build_runtime
        self.connected = False
        self._ssl: ssl.SSLContext | bool = True
        if settings.ca_file is not None or settings.ca_pem:
            self._ssl = ssl.create_default_context(
                cafile=str(settings.ca_file) if settings.ca_file else None, cadata=settings.ca_pem or None
            )

    async def run(self) -> None:
        """Connects, serves the stream, reconnects with backoff and jitter; forever."""
        failures = 0
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    await self._session(session)
                    failures = 0  # a stream that ran and ended cleanly: reconnect at once
                except (aiohttp.ClientError, OSError, TimeoutError, _StreamRefused) as exc:
                    failures += 1
                    log.log(
                        logging.WARNING if failures <= 3 else logging.DEBUG,
                        "controller stream: %s (attempt %d); serving snapshot %s",
                        _describe(exc),
                        failures,
                        self._holder.current.snapshot.version if self._holder.current else "(none)",
                    )
                finally:
                    self.connected = False
                cap = min(self._settings.backoff_max_seconds, self._settings.backoff_base_seconds * 2**failures)
                await asyncio.sleep(random.uniform(0, cap) if failures else 0.05)

    async def _session(self, session: aiohttp.ClientSession) -> None:
        token = self._settings.token_file.read_text().strip()  # re-read: projected tokens rotate
        url = self._settings.controller_url.rstrip("/") + STREAM_PATH
        try:
            ws = await session.ws_connect(
                url,
                headers={"authorization": "Bearer " + token},
                ssl=self._ssl,
                heartbeat=self._settings.heartbeat_seconds,
                timeout=aiohttp.ClientWSTimeout(ws_close=5),
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise _StreamRefused(f"controller refused the stream: HTTP {exc.status} {exc.message}") from None
        async with ws:
            self.connected = True
            current = self._holder.current
            version = current.snapshot.version if current else ""
            await ws.send_json({"type": "hello", "version": version, "schema": snapshot_schema()})
            log.info(
                "connected to controller %s (snapshot schema %s)", self._settings.controller_url, snapshot_schema()
            )
            reporter = asyncio.create_task(self._report_counts(ws)) if self._counts is not None else None
            try:
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        await ws.send_json(self._apply(message.data))
                    elif message.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE):
                        break
            finally:
                if reporter is not None:
                    reporter.cancel()
            if ws.close_code and ws.close_code >= 4000:
                # aiohttp's client keeps the close code but not the reason the controller sent with it
                raise _StreamRefused(f"controller closed the stream: {ws.close_code}")

    async def _report_counts(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Running totals: all of them at once on connecting (this controller may not have them), then
        whenever they moved. A failed send ends reporting for this connection; the next one resends."""
        assert self._counts is not None
        force = True
        try:
            while True:
                report = self._counts.report(force=force)
                force = False
                if report is not None:
                    await ws.send_json(report)
                await asyncio.sleep(self._settings.counts_seconds)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            log.debug("experiment counts not sent: %s", _describe(exc))

    def _apply(self, raw: str) -> dict[str, Any]:
        try:
            message = json.loads(raw)
            version = str(message.get("version", ""))
            if message.get("type") != "snapshot":
                return {"type": "nack", "version": version, "error": f"unknown message type {message.get('type')!r}"}
        except (ValueError, AttributeError):
            return {"type": "nack", "version": "", "error": "message is not a JSON object"}
        received_at = time.time()
        try:
            snapshot = parse_snapshot({**message["snapshot"], "version": version})
            runtime = self._build(snapshot, received_at)
        except (KeyError, TypeError, ValueError) as exc:
            error = _validation_summary(exc)
            log.error(
                "refused snapshot %s: %s; keeping %s",
                version,
                error,
                self._holder.current.snapshot.version if self._holder.current else "(none)",
            )
            return {"type": "nack", "version": version, "error": error}
        self._holder.swap(runtime)
        if self._settings.state_file is not None:
            try:
                save(self._settings.state_file, snapshot, received_at)
            except OSError as exc:
                log.warning("could not save snapshot to %s: %s", self._settings.state_file, exc.strerror)
        log.info("snapshot %s is live (%d routes)", version, len(snapshot.routes))
        return {"type": "ack", "version": version}


class _StreamRefused(Exception):
    pass


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _validation_summary(exc: Exception) -> str:
    if isinstance(exc, msgspec.ValidationError):
        problem = problem_text(exc)
        field = refused_field(problem)  # from the controller a field unknown here is no typo: a newer controller
        return problem if field is None else older_sidecar(field, sidecar_schema=snapshot_schema())
    return f"{type(exc).__name__}: {exc}"
