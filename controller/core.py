"""The controller's heart: debounce changes, judge and compile, push what changed.

Like Istio's pilot: every change to the store schedules one recompute after a
quiet period (100 ms), bounded so a steady stream of changes still gets pushed
(at most 1 s late). A recompute judges again only the namespaces whose objects
changed (compile.judge keeps the rest), then compiles a snapshot for each
distinct workload among the connected sidecars whose inputs changed: those of
a namespace with a changed object, Namespace or policy in scope (a cluster
policy reaches the namespaces it selects). Every other workload keeps its
snapshot, and the sidecars of a workload share one snapshot and one encoded
message. A sidecar is sent a snapshot only when its version differs from what
it has.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from controller.api import ModelRoute
from controller.compile import Judgement, NamespaceInputs, assemble, judge, same_inputs, select_routes, workload_policy
from controller.compile_route import compile_route
from controller.store import Key, ResourceStore
from controller.telemetry import ControllerTelemetry
from controller.workload import Workload
from proxy.snapshot import LimitStore, Policy, Route, Snapshot, to_wire

log = logging.getLogger("modelway.controller")


class Stream(Protocol):
    """The controller's side of one sidecar stream (a WebSocket in production, push.WebSocketStream)."""

    def send_snapshot(self, compiled: Compiled) -> Awaitable[None] | None:
        """Writes at once the encoded message the sidecars of a workload share; returns something to
        await only when the connection is backed up: a push to thousands of sidecars then needs no task
        per sidecar. Raises ConnectionError or RuntimeError when the stream is closing."""
        ...


@dataclass(frozen=True, slots=True)
class Compiled:
    snapshot: Snapshot
    message: str  # the wire message, serialised once for every sidecar that gets it
    routes: dict[Key, int]  # route key -> generation it carries
    # Encodings of `message` that streams build once and share (e.g. a WebSocket frame).
    encoded: dict[object, bytes] = field(default_factory=dict, compare=False)


@dataclass(eq=False, slots=True)
class Sidecar:
    """One connected sidecar (thousands of them: slots keep each small)."""

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
        telemetry: ControllerTelemetry | None = None,
        limit_store: LimitStore | None = None,
    ) -> None:
        self.store = store
        self._limit_store = limit_store  # sent in every snapshot: one Secret here reaches every namespace
        store.subscribe(self.notify)
        self.telemetry = telemetry or ControllerTelemetry()
        self.telemetry.metrics.watch(self)
        self._quiet = quiet_seconds
        self._max_delay = max_delay_seconds
        self._recompute_listeners: list[Callable[[Judgement], None]] = []
        self._sync_listeners: list[Callable[[], None]] = []
        self.judgement = Judgement(providers={}, routes={})
        self.sidecars: set[Sidecar] = set()
        # Across recomputes: per distinct workload, its snapshot and the inputs it was made from
        # (kept while they are the same objects); per version, one Compiled (workloads share it).
        self._workloads: dict[tuple[object, ...], tuple[NamespaceInputs, Compiled]] = {}
        self._by_version: dict[str, Compiled] = {}
        # Per recompute: each namespace's inputs, worked out once, and a Compiled per distinct set of
        # routes and policy (many workloads share one: assembling and versioning cost the most).
        self._inputs: dict[str, NamespaceInputs] = {}
        self._assembled: dict[tuple[tuple[int, ...], Policy], Compiled] = {}
        # Across recomputes: each served route compiled once, until it changes; per namespace, so a
        # change forgets only its own namespace's (the judgement holds the routes: ids are stable).
        self._routes: dict[str, dict[int, tuple[ModelRoute, Route]]] = {}
        # One Workload per distinct workload, shared by its sidecars (thousands of them).
        self._workload_of: dict[tuple[object, ...], Workload] = {}
        self._members: dict[tuple[object, ...], int] = {}  # connected sidecars per workload
        # Adaptive experiments' current weights, per route and rule (controller.experiment_runner sets them).
        self._arm_weights: dict[Key, dict[str, dict[str, int]]] = {}
        self._changed = asyncio.Event()
        # Bumped whenever what sidecars run or acknowledged may have changed: `route_sync` is asked by
        # the status writer and the replica counts alike, about once a second each, over every sidecar.
        self._sync_epoch = 0
        self._route_sync: tuple[int, dict[Key, RouteSync]] = (-1, {})
        self.pushes = 0
        self.compiles = 0  # workload snapshots compiled (a test counts them)

    # --- change handling ----------------------------------------------------------

    def subscribe(
        self, *, on_sync_change: Callable[[], None], on_recompute: Callable[[Judgement], None] | None = None
    ) -> None:
        """What status reporting calls in its constructor: `on_recompute(judgement)` after each judgement,
        `on_sync_change()` when what sidecars run (or refused) may have changed. Both are called on the
        loop and must be cheap."""
        self._sync_listeners.append(on_sync_change)
        if on_recompute is not None:
            self._recompute_listeners.append(on_recompute)

    def notify(self) -> None:
        """The store's listener: something changed, recompute soon."""
        self._changed.set()

    def _on_recompute(self, judgement: Judgement) -> None:
        for listener in self._recompute_listeners:
            listener(judgement)

    def _on_sync_change(self) -> None:
        self._sync_epoch += 1
        for listener in self._sync_listeners:
            listener()

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
                previous = self.judgement
                self.judgement = judge(self.store.view(), previous=previous)
                self._inputs.clear()
                self._assembled.clear()
                parts, before = self.judgement.parts, previous.parts
                changed = {ns for ns in parts.keys() | before.keys() if parts.get(ns) is not before.get(ns)}
                for ns in changed:  # forget compiled routes that are no longer served
                    kept = self._routes.pop(ns, {})
                    served = {id(r) for r in self.judgement.served_by_namespace.get(ns, ())}
                    if kept := {key: entry for key, entry in kept.items() if key in served}:
                        self._routes[ns] = kept
                self._on_recompute(self.judgement)
                sidecars = list(self.sidecars)
                compiles = self.compiles
                # Once per distinct workload, not per sidecar: the push below only looks its workload up.
                workloads = {s.workload.cache_key(): s.workload for s in sidecars}
                wanted = {key: self.compiled_for(workload) for key, workload in workloads.items()}
                for key in self._workloads.keys() - wanted.keys():  # no sidecar of it is left
                    del self._workloads[key]
                compile_span.set_attributes(
                    {"modelway.routes": len(self.judgement.routes), "modelway.snapshots": self.compiles - compiles}
                )
            with telemetry.span("push") as push_span:
                self._sync_epoch += 1  # what sidecars should run changes now
                begun = []
                for sidecar in sidecars:
                    sidecar.compiled = compiled = wanted[sidecar.workload.cache_key()]
                    if compiled.snapshot.version != sidecar.sent_version:
                        begun.append(self._begin_push(sidecar, count=False))
                waiting = [b for b in begun if not isinstance(b, bool)]  # backed-up connections only
                pushed = sum(b for b in begun if b is True) + (sum(await asyncio.gather(*waiting)) if waiting else 0)
                self._pushed(pushed)  # once, not per sidecar: a metric update costs as much as a push
                push_span.set_attributes(
                    {"modelway.sidecars.connected": len(sidecars), "modelway.sidecars.reached": pushed}
                )
            self._forget_unused_versions()
            reconcile.set_attribute("modelway.sidecars.reached", pushed)
        telemetry.metrics.reconcile.record(time.perf_counter() - started)
        log.info(
            "recomputed %d routes for %d sidecars in %.1f ms; pushed %d",
            len(self.judgement.routes),
            len(self.sidecars),
            (time.perf_counter() - started) * 1000,
            pushed,
        )
        self._on_sync_change()

    # --- sidecars -----------------------------------------------------------------

    def compiled_for(self, workload: Workload) -> Compiled:
        key = workload.cache_key()
        inputs = self._inputs.get(workload.namespace)
        if inputs is None:
            inputs = self._inputs[workload.namespace] = self.judgement.inputs_of(workload.namespace)
        cached = self._workloads.get(key)
        if cached is not None and same_inputs(cached[0], inputs):
            return cached[1]
        self.compiles += 1
        routes = select_routes(self.judgement, workload)
        compiled_routes = [self._compiled_route(r) for r in routes]
        policy = workload_policy(self.judgement, workload, compiled_routes)
        assembled = (tuple(id(r) for r in routes), policy)  # the judgement holds these routes: ids are stable
        compiled = self._assembled.get(assembled)
        if compiled is None:
            snapshot = assemble(self.judgement, compiled_routes, policy=policy, limit_store=self._limit_store)
            compiled = self._by_version.get(snapshot.version)
            if compiled is None:  # else the same content as before: share it
                message = json.dumps({"type": "snapshot", "version": snapshot.version, "snapshot": to_wire(snapshot)})
                generations = {
                    ("ModelRoute", r.metadata.namespace, r.metadata.name): r.metadata.generation for r in routes
                }
                compiled = Compiled(snapshot=snapshot, message=message, routes=generations)
                self._by_version[snapshot.version] = compiled
            self._assembled[assembled] = compiled
        self._workloads[key] = (inputs, compiled)
        return compiled

    def set_arm_weights(self, route: Key, weights: Mapping[str, Mapping[str, int]]) -> None:
        """An adaptive experiment's new split (per rule, per arm): the route's sidecars get it in their
        next snapshot. Called once per real move (the runner debounces), not per request."""
        self._arm_weights[route] = {rule: dict(arms) for rule, arms in weights.items()}
        _, namespace, name = route
        if routes := self._routes.get(namespace):
            self._routes[namespace] = {k: e for k, e in routes.items() if e[0].metadata.name != name}
        self._workloads = {k: v for k, v in self._workloads.items() if k[0] != namespace}
        self.notify()

    def _compiled_route(self, route: ModelRoute) -> Route:
        routes = self._routes.setdefault(route.metadata.namespace, {})
        entry = routes.get(id(route))
        if entry is None:
            weights = self._arm_weights.get(("ModelRoute", route.metadata.namespace, route.metadata.name))
            entry = (route, compile_route(route, arm_weights=weights))  # keeping `route` keeps its id unique
            routes[id(route)] = entry
        return entry[1]

    async def attach(self, sidecar: Sidecar, *, has_version: str = "") -> None:
        """A sidecar connected; it says which version it already runs (from its saved copy)."""
        # Sidecars of one workload share its Workload (its labels): one copy, however many replicas.
        key = sidecar.workload.cache_key()
        sidecar.workload = self._workload_of.setdefault(key, sidecar.workload)
        self._members[key] = self._members.get(key, 0) + 1
        self.sidecars.add(sidecar)
        if has_version:
            sidecar.sent_version = sidecar.acked_version = has_version
            sidecar.acked_at = time.time()
        with self.telemetry.span("push", attributes={"modelway.sidecar": sidecar.name}) as span:
            reached = await self._push(sidecar)
            span.set_attributes({"modelway.sidecars.connected": 1, "modelway.sidecars.reached": int(reached)})
        self._on_sync_change()

    def detach(self, sidecar: Sidecar) -> None:
        if sidecar in self.sidecars:
            self.sidecars.discard(sidecar)
            key = sidecar.workload.cache_key()
            left = self._members.pop(key) - 1
            if left:
                self._members[key] = left
            else:
                del self._workload_of[key]
        self._on_sync_change()

    def _needs_push(self, sidecar: Sidecar) -> bool:
        """Records what it should run now; true when that is not what it was last sent."""
        sidecar.compiled = compiled = self.compiled_for(sidecar.workload)
        return compiled.snapshot.version != sidecar.sent_version

    async def _push(self, sidecar: Sidecar) -> bool:
        if not self._needs_push(sidecar):
            return False
        started = self._begin_push(sidecar)
        return started if isinstance(started, bool) else await started

    def _begin_push(self, sidecar: Sidecar, *, count: bool = True) -> bool | Awaitable[bool]:
        """Sends what `_needs_push` found; a bool when done at once, else what to await for it.
        With count=False the caller counts the pushes that succeeded (see `_pushed`)."""
        compiled = sidecar.compiled
        assert compiled is not None
        sidecar.sent_version = compiled.snapshot.version
        sidecar.sent_at = time.monotonic()
        try:
            pending = sidecar.stream.send_snapshot(compiled)
        except (ConnectionError, RuntimeError) as exc:
            log.info("could not push to %s: %s", sidecar.name, exc)
            return False
        if pending is not None:
            return self._finish_push(sidecar, pending, count=count)
        if count:
            self._pushed(1)
        return True

    async def _finish_push(self, sidecar: Sidecar, pending: Awaitable[None], *, count: bool) -> bool:
        try:
            await pending
        except (ConnectionError, RuntimeError) as exc:
            log.info("could not push to %s: %s", sidecar.name, exc)
            return False
        if count:
            self._pushed(1)
        return True

    def _pushed(self, count: int) -> None:
        if count:
            self.pushes += count
            self.telemetry.metrics.pushes.add(count)

    def _forget_unused_versions(self) -> None:
        live = {c.snapshot.version for _, c in self._workloads.values()}
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
        """Per route: how many connected sidecars run its current generation (callers must not modify it)."""
        epoch, counted = self._route_sync
        if epoch != self._sync_epoch:
            counted = self._count_route_sync()
            self._route_sync = (self._sync_epoch, counted)
        return counted

    def _count_route_sync(self) -> dict[Key, RouteSync]:
        # Sidecars of one workload are in few states (what they should run, what they ACKed, whether
        # they refused it): count the sidecars per state, then walk each state's routes once.
        states: dict[tuple[int, str, str], tuple[Compiled, str]] = {}  # -> what they run, one of them by name
        sidecars_in: dict[tuple[int, str, str], int] = {}
        for sidecar in self.sidecars:
            compiled = sidecar.compiled
            if compiled is None:
                continue
            # It refused what it should run now (the controller does not send that version again).
            refused = sidecar.nack_error if sidecar.sent_version == compiled.snapshot.version else ""
            state = (id(compiled), sidecar.acked_version, refused)
            if state not in states:
                states[state] = (compiled, sidecar.name)
            sidecars_in[state] = sidecars_in.get(state, 0) + 1
        counts: dict[Key, list[int]] = {}
        rejections: dict[Key, str] = {}
        for state, (compiled, name) in states.items():
            _, acked_version, refused = state
            n = sidecars_in[state]
            acked = self._by_version.get(acked_version)
            for key, generation in compiled.routes.items():
                entry = counts.setdefault(key, [0, 0, 0])
                entry[1] += n
                if acked is not None and acked.routes.get(key) == generation:
                    entry[0] += n
                elif refused:
                    entry[2] += n
                    rejections.setdefault(key, f"{name}: {refused}")
        return {
            key: RouteSync(synced=s, total=t, rejected=r, rejection=rejections.get(key, ""))
            for key, (s, t, r) in counts.items()
        }
