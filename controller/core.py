"""The controller's heart: debounce changes, judge and compile, push what changed.

Like Istio's pilot: every change to the store schedules one recompute after a
quiet period (100 ms), bounded so a steady stream of changes still gets pushed
(at most 1 s late). A recompute judges everything once, then compiles one
snapshot per distinct workload among the connected sidecars; a sidecar is sent
a snapshot only when its version differs from what it has.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from controller.api import ModelRoute
from controller.compile import Judgement, Workload, assemble, compile_route, judge, select_routes, workload_policy
from controller.store import Key, ResourceStore
from controller.telemetry import ControllerTelemetry
from proxy.snapshot import Policy, Route, Snapshot, to_wire

log = logging.getLogger("modelway.controller")


class Stream(Protocol):
    """The controller's side of one sidecar stream (a WebSocket in production)."""

    async def send_str(self, data: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Compiled:
    snapshot: Snapshot
    message: str  # the wire message, serialised once for every sidecar that gets it
    routes: dict[Key, int]  # route key -> generation it carries


@dataclass(eq=False)
class Sidecar:
    """One connected sidecar."""

    name: str
    workload: Workload
    stream: Stream
    sent_version: str = ""
    acked_version: str = ""
    nack_error: str = ""
    connected_at: float = field(default_factory=time.time)
    sent_at: float = 0.0
    acked_at: float = 0.0  # wall clock of the last ACK (for the snapshot-age metric)
    ack_latency: float | None = None
    compiled: Compiled | None = None  # what it should run now (set at every push decision)

    @property
    def wanted_version(self) -> str:
        return self.compiled.snapshot.version if self.compiled is not None else ""

    @property
    def workload_name(self) -> str:
        return f"{self.workload.namespace}/{self.workload.service_account}"


@dataclass(frozen=True, slots=True)
class RouteSync:
    synced: int  # sidecars that ACKed a snapshot with this route's served generation
    total: int  # connected sidecars whose snapshot carries this route
    rejected: int = 0  # sidecars that refused (NACKed) the snapshot carrying it
    rejection: str = ""  # what one of them said


class Controller:
    def __init__(
        self,
        *,
        store: ResourceStore,
        quiet_seconds: float = 0.1,
        max_delay_seconds: float = 1.0,
        on_recompute: Callable[[Judgement], None] = lambda judgement: None,
        on_sync_change: Callable[[], None] = lambda: None,
        telemetry: ControllerTelemetry | None = None,
    ) -> None:
        self.store = store
        self.telemetry = telemetry or ControllerTelemetry()
        self.telemetry.metrics.watch(self)
        self._quiet = quiet_seconds
        self._max_delay = max_delay_seconds
        self._on_recompute = on_recompute
        self._on_sync_change = on_sync_change
        self.judgement = Judgement(providers={}, routes={})
        self.sidecars: set[Sidecar] = set()
        # Per recompute: one Compiled per distinct set of routes and policy (many workloads share one),
        # and one policy section per distinct workload.
        self._compiled: dict[tuple[tuple[int, ...], Policy], Compiled] = {}
        self._policies: dict[tuple[object, ...], Policy] = {}
        self._by_version: dict[str, Compiled] = {}
        # Across recomputes: each served route compiled once, until it changes.
        self._routes: dict[int, tuple[ModelRoute, Route]] = {}
        self._changed = asyncio.Event()
        self.pushes = 0

    # --- change handling ----------------------------------------------------------

    def notify(self) -> None:
        """Wired to the store's on_change: something changed, recompute soon."""
        self._changed.set()

    async def run(self) -> None:
        while True:
            await self._changed.wait()
            first = asyncio.get_running_loop().time()
            while True:  # debounce: wait for quiet, but never longer than max_delay in total
                self._changed.clear()
                remaining = first + self._max_delay - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
                    async with asyncio.timeout(min(self._quiet, remaining)):
                        await self._changed.wait()
                except TimeoutError:
                    break
            self._changed.clear()
            await self.recompute()

    async def recompute(self) -> None:
        started = time.perf_counter()
        telemetry = self.telemetry
        with telemetry.span("reconcile") as reconcile:  # one trace per recompute: compile, then push
            with telemetry.span("compile") as compile_span:
                self.judgement = judge(self.store.view(), last_good=self.judgement.last_good)
                self._compiled.clear()
                self._policies.clear()
                served = {id(r): r for routes in self.judgement.served_by_namespace.values() for r in routes}
                self._routes = {key: entry for key, entry in self._routes.items() if key in served}
                self._on_recompute(self.judgement)
                sidecars = list(self.sidecars)
                for sidecar in sidecars:  # compiled here so the span shows it; _push finds them cached
                    self.compiled_for(sidecar.workload)
                compile_span.set_attributes({"modelway.routes": len(self.judgement.routes),
                                             "modelway.snapshots": len(self._compiled)})
            with telemetry.span("push") as push_span:
                sends = [self._push(sidecar) for sidecar in sidecars]
                pushed = sum(await asyncio.gather(*sends)) if sends else 0
                push_span.set_attributes({"modelway.sidecars.connected": len(sidecars),
                                          "modelway.sidecars.reached": pushed})
            self._forget_unused_versions()
            reconcile.set_attribute("modelway.sidecars.reached", pushed)
        telemetry.metrics.reconcile.record(time.perf_counter() - started)
        log.info("recomputed %d routes for %d sidecars in %.1f ms; pushed %d", len(self.judgement.routes),
                 len(self.sidecars), (time.perf_counter() - started) * 1000, pushed)
        self._on_sync_change()

    # --- sidecars -----------------------------------------------------------------

    def compiled_for(self, workload: Workload) -> Compiled:
        routes = select_routes(self.judgement, workload)
        route_ids = tuple(id(r) for r in routes)  # the judgement holds these objects: ids are stable
        compiled_routes: list[Route] | None = None  # built only on a cache miss
        policy = self._policies.get(policy_key := (workload.cache_key(), route_ids))
        if policy is None:
            compiled_routes = [self._compiled_route(r) for r in routes]
            policy = self._policies[policy_key] = workload_policy(self.judgement, workload, compiled_routes)
        key = (route_ids, policy)
        compiled = self._compiled.get(key)
        if compiled is None:
            if compiled_routes is None:
                compiled_routes = [self._compiled_route(r) for r in routes]
            snapshot = assemble(self.judgement, compiled_routes, policy=policy)
            message = json.dumps({"type": "snapshot", "version": snapshot.version, "snapshot": to_wire(snapshot)})
            generations = {("ModelRoute", r.metadata.namespace, r.metadata.name): r.metadata.generation for r in routes}
            compiled = Compiled(snapshot=snapshot, message=message, routes=generations)
            self._compiled[key] = compiled
            self._by_version[snapshot.version] = compiled
        return compiled

    def _compiled_route(self, route: ModelRoute) -> Route:
        entry = self._routes.get(id(route))
        if entry is None:
            entry = (route, compile_route(route))  # keeping `route` keeps its id unique
            self._routes[id(route)] = entry
        return entry[1]

    async def attach(self, sidecar: Sidecar, *, has_version: str = "") -> None:
        """A sidecar connected; it says which version it already runs (from its saved copy)."""
        self.sidecars.add(sidecar)
        if has_version:
            sidecar.sent_version = sidecar.acked_version = has_version
            sidecar.acked_at = time.time()
        with self.telemetry.span("push", attributes={"modelway.sidecar": sidecar.name}) as span:
            reached = await self._push(sidecar)
            span.set_attributes({"modelway.sidecars.connected": 1, "modelway.sidecars.reached": int(reached)})
        self._on_sync_change()

    def detach(self, sidecar: Sidecar) -> None:
        self.sidecars.discard(sidecar)
        self._on_sync_change()

    async def _push(self, sidecar: Sidecar) -> bool:
        compiled = self.compiled_for(sidecar.workload)
        sidecar.compiled = compiled
        if compiled.snapshot.version == sidecar.sent_version:
            return False
        sidecar.sent_version = compiled.snapshot.version
        sidecar.sent_at = time.monotonic()
        try:
            await sidecar.stream.send_str(compiled.message)
        except (ConnectionError, RuntimeError) as exc:
            log.info("could not push to %s: %s", sidecar.name, exc)
            return False
        self.pushes += 1
        self.telemetry.metrics.pushes.add(1)
        return True

    def _forget_unused_versions(self) -> None:
        live = {c.snapshot.version for c in self._compiled.values()}
        live |= {s.compiled.snapshot.version for s in self.sidecars if s.compiled is not None}
        live |= {s.acked_version for s in self.sidecars} | {s.sent_version for s in self.sidecars}
        self._by_version = {v: c for v, c in self._by_version.items() if v in live}

    def acknowledge(self, sidecar: Sidecar, *, version: str, error: str | None) -> None:
        if error is None:
            sidecar.acked_version, sidecar.nack_error, sidecar.acked_at = version, "", time.time()
            if version == sidecar.sent_version and sidecar.sent_at:
                sidecar.ack_latency = time.monotonic() - sidecar.sent_at
                self.telemetry.metrics.ack_latency.record(sidecar.ack_latency)
        else:
            self.telemetry.metrics.nacks.add(1)
            sidecar.nack_error = error
            log.warning("sidecar %s refused snapshot %s: %s", sidecar.name, version, error)
        self._on_sync_change()

    # --- status inputs ------------------------------------------------------------

    def route_sync(self) -> dict[Key, RouteSync]:
        counts: dict[Key, list[int]] = {}
        rejections: dict[Key, str] = {}
        for sidecar in self.sidecars:
            if sidecar.compiled is None:
                continue
            wanted = sidecar.compiled.routes
            acked = self._by_version.get(sidecar.acked_version)
            # It refused what it should run now (the controller does not send that version again).
            refused = bool(sidecar.nack_error) and sidecar.sent_version == sidecar.compiled.snapshot.version
            for key, generation in wanted.items():
                entry = counts.setdefault(key, [0, 0, 0])
                entry[1] += 1
                if acked is not None and acked.routes.get(key) == generation:
                    entry[0] += 1
                elif refused:
                    entry[2] += 1
                    rejections.setdefault(key, f"{sidecar.name}: {sidecar.nack_error}")
        return {key: RouteSync(synced=s, total=t, rejected=r, rejection=rejections.get(key, ""))
                for key, (s, t, r) in counts.items()}
