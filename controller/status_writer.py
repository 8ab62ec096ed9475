"""Status writing: the watch's copy of each status, the leader's writer, and `modelway dev`'s logger.

The conditions themselves are decided in `controller.status` (pure); this module does the I/O.

- `ObservedStatuses`: each object's status, uid and resourceVersion as the
  watch last delivered them (the parsed models keep no status). A new leader's
  first pass compares against these instead of reading every object with its
  own GET; its writes carry that resourceVersion, so a status that moved since
  the watch showed it is a 409, and only then is the object read afresh.
- `StatusWriter`: a write pass at most 200 ms after a change (a burst is one
  pass), server-side apply to the status subresource only when something other
  than a timestamp differs from what was last written, and an Event per real
  transition (never for an unchanged condition).
- `ConditionLogger`: the same conditions, logged when they change; what
  `modelway dev` runs, where there is no API server to write to.

Both take budget spend from a `SpendSource` (controller.spend_reader), which
wakes them only when a policy's spend moved enough to be worth a write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from controller.api import API_VERSION, CLUSTER_KINDS
from controller.compile import Judgement
from controller.core import Controller, RouteSync
from controller.kube.client import FIELD_MANAGER, KubeClient
from controller.kube.errors import KubeApiError, KubeError
from controller.kube.resources import (
    CLUSTER_MODEL_POLICIES,
    MODEL_POLICIES,
    MODEL_PROVIDERS,
    MODEL_ROUTES,
    ResourceType,
)
from controller.leader import LeaseElector
from controller.spend import PolicySpend
from controller.status import (
    DesiredStatus,
    EventSpec,
    Wanted,
    condition_events,
    describe,
    desired_statuses,
    experiment_events,
    render,
    timeless,
)
from controller.store import Key

log = logging.getLogger("modelway.status")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # metav1.Time: seconds


_RESOURCES: dict[str, ResourceType] = {
    "ModelRoute": MODEL_ROUTES,
    "ModelProvider": MODEL_PROVIDERS,
    "ModelPolicy": MODEL_POLICIES,
    "ClusterModelPolicy": CLUSTER_MODEL_POLICIES,
}


# --- what the watch saw -------------------------------------------------------------


def _pack(status: Mapping[str, Any]) -> bytes:
    """A status kept for later as compact JSON: a few hundred bytes instead of a few KB of dicts and
    strings. Thousands are kept (one per object, twice: as watched and as written) and few are read
    again (an object's own on its next write, all of them on a new leader's first pass).

    Copied to a bytes object of its own length: orjson's result keeps the 4 KB buffer it was written
    into (whatever its length), which for 14,000 kept statuses is 50 MB instead of 8."""
    return bytes(memoryview(orjson.dumps(status))) if status else b""


def _unpack(packed: bytes) -> dict[str, Any]:
    value = orjson.loads(packed) if packed else {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class Observed:
    uid: str
    resource_version: str
    packed: bytes  # the status, see _pack

    @property
    def status(self) -> dict[str, Any]:
        """The status as watched (a fresh copy at each read)."""
        return _unpack(self.packed)


class ObservedStatuses:
    """Status, uid and resourceVersion of every object whose status we write, as last listed or watched.

    Fed by the kube source with the objects as the API server sent them; other
    kinds (Secrets above all) are never kept.
    """

    def __init__(self) -> None:
        self._seen: dict[Key, Observed] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def get(self, key: Key) -> Observed | None:
        return self._seen.get(key)

    def replace(self, kind: str, namespace: str | None, items: Sequence[Mapping[str, Any]]) -> None:
        """A fresh list of `kind` in `namespace` (None: all namespaces) replaces what we had of it."""
        if kind not in _RESOURCES:
            return
        for key in [k for k in self._seen if k[0] == kind and (namespace is None or k[1] == namespace)]:
            del self._seen[key]
        for obj in items:
            self._keep(kind, obj)

    def event(self, kind: str, event_type: str, obj: Mapping[str, Any]) -> None:
        if kind not in _RESOURCES or event_type not in ("ADDED", "MODIFIED", "DELETED"):
            return  # a BOOKMARK carries no object
        if event_type == "DELETED":
            self._seen.pop(_key(kind, obj), None)
        else:
            self._keep(kind, obj)

    def _keep(self, kind: str, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        status = obj.get("status")
        self._seen[_key(kind, obj)] = Observed(
            str(meta.get("uid") or ""),
            str(meta.get("resourceVersion") or ""),
            _pack(status) if isinstance(status, Mapping) else b"",
        )


def _key(kind: str, obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    namespace = "" if kind in CLUSTER_KINDS else str(meta.get("namespace") or "default")
    return (kind, namespace, str(meta.get("name") or ""))


# --- writing (the leader) -----------------------------------------------------------


WRITE_CONCURRENCY = 16  # status writes in flight at once during a pass


class SpendSource(Protocol):
    """Each budgeted policy's spend as status should show it (spend_reader.SpendReader, UnsharedSpend)."""

    def spend(self) -> Mapping[Key, PolicySpend]: ...

    def add_listener(self, callback: Callable[[], None]) -> None: ...


class ExperimentSource(Protocol):
    """controller.experiment_runner.ExperimentRunner, as status writing sees it."""

    def statuses(self) -> Mapping[Key, tuple[str, tuple[dict[str, Any], ...]]]: ...

    def add_listener(self, callback: Callable[[], None]) -> None: ...


class SyncCounts(Protocol):
    """Sidecar counts from more than this replica (replicas.ReplicaCounts)."""

    def sync_counts(self) -> Mapping[Key, RouteSync]: ...

    def add_peers_listener(self, callback: Callable[[], None]) -> None: ...


class StatusWriter:
    """Keeps status in step with the controller's judgement; writes only while `elector` leads.

    Subscribes to the controller when built. `counts`: every replica's sidecar
    counts (see replicas.py), woken when a peer's move; without it, the
    controller's own `route_sync()`. `statuses`, the watch's copy of each
    object's status: without it, first sight of an object is a GET.
    """

    def __init__(
        self,
        client: KubeClient,
        controller: Controller,
        *,
        elector: LeaseElector,
        delay: float = 0.2,
        sync_delay: float = 1.0,
        retry_cap: float = 30.0,
        counts: SyncCounts | None = None,
        statuses: ObservedStatuses | None = None,
        spend: SpendSource | None = None,
        experiments: ExperimentSource | None = None,
    ) -> None:
        self._client = client
        self._spend = spend
        self._experiments = experiments
        self._statuses = statuses
        self._controller = controller
        self._sync_counts = counts.sync_counts if counts is not None else controller.route_sync
        self._elector = elector
        self._delay = delay
        # ACKs arrive in bursts (one per sidecar after every push): counting them into status
        # once a second is plenty, and keeps status work off the loop while a push goes out.
        self._sync_delay = sync_delay
        self._judged = False
        self._retry_cap = retry_cap
        self._retries = 0
        self._retry_timer: asyncio.TimerHandle | None = None
        # key -> (uid, the status last written or, on first sight, read or watched; packed, see _pack).
        self._written: dict[Key, tuple[str, bytes]] = {}
        # key -> the desired status known to be on the object: an unchanged one costs a compare.
        self._settled: dict[Key, DesiredStatus] = {}
        self._desired_memo: dict[object, Any] = {}  # see desired_statuses
        self._wake = asyncio.Event()
        self.passes = 0
        elector.add_listener(self._on_leadership)
        controller.subscribe(on_recompute=self.on_recompute, on_sync_change=self.on_sync_change)
        if counts is not None:
            counts.add_peers_listener(self.on_sync_change)  # another replica's counts moved: write again
        if spend is not None:
            spend.add_listener(self.on_sync_change)  # spend moved enough to show: write it
        if experiments is not None:
            experiments.add_listener(self.on_sync_change)  # an experiment's numbers or state moved

    # The Controller's callbacks: cheap, synchronous, on the loop.
    def on_recompute(self, judgement: Judgement) -> None:
        self._judged = True
        self._wake.set()

    def on_sync_change(self) -> None:
        self._wake.set()

    def _on_leadership(self, leading: bool) -> None:
        # Another leader may have written meanwhile: read every object afresh before writing again.
        self._written.clear()
        self._settled.clear()
        if leading:
            self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                # Coalesce: whatever else arrives now rides along.
                await asyncio.sleep(self._delay if self._judged else self._sync_delay)
                self._wake.clear()
                self._judged = False
                if not self._elector.is_leader:
                    continue
                try:
                    failures = await self.write_pass()
                except Exception:  # a bug must not end status writing for good: log it, try again later
                    log.exception("status write pass failed")
                    failures = 1
                self._schedule_retry(failures)
        finally:
            if self._retry_timer is not None:
                self._retry_timer.cancel()

    def _schedule_retry(self, failures: int) -> None:
        """Failed writes are retried by a later pass, with backoff, even if nothing else changes."""
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        if not failures:
            self._retries = 0
            return
        delay = min(self._retry_cap, 2.0**self._retries)
        self._retries += 1
        self._retry_timer = asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def write_pass(self) -> int:
        """Writes what differs; returns how many objects could not be written."""
        self.passes += 1
        controller = self._controller
        sync = self._sync_counts()
        desired = desired_statuses(
            controller.judgement,
            sync,
            controller.store.view(),
            memo=self._desired_memo,
            spend=self._spend.spend() if self._spend is not None else None,
            experiments=self._experiments.statuses() if self._experiments is not None else None,
        )
        for gone in set(self._written) - set(desired):
            del self._written[gone]
            self._settled.pop(gone, None)
        settled = self._settled
        stale = [key for key, want in desired.items() if want is not settled.get(key) and want != settled.get(key)]
        stale.sort()

        async def write(key: Key) -> int:
            try:
                if await self._write(desired[key]):
                    self._settled[key] = desired[key]
                return 0
            except KubeError as exc:
                log.warning("status of %s %s/%s not written (retrying): %s", *key, exc)
                return 1

        # A few objects at a time: a first pass over thousands of objects (a write and maybe an Event
        # each) would otherwise take one round trip after another for minutes. Each of the few takes
        # the next object as soon as its last is done: no batch waits for its slowest write.
        pending = iter(stale)

        async def writer() -> int:
            failures = 0
            for key in pending:
                if not self._elector.is_leader:
                    break  # lost the Lease mid-pass: the new leader carries on
                failures += await write(key)
            return failures

        return sum(await asyncio.gather(*(writer() for _ in range(min(WRITE_CONCURRENCY, len(stale))))))

    async def _write(self, desired: DesiredStatus) -> bool:
        """True when the object now carries this status (written, or already there)."""
        rt = _RESOURCES[desired.kind]
        cached = self._written.get(desired.key)
        precondition: str | None = None  # the resourceVersion a status taken from the watch was seen at
        if cached is None or cached[0] != desired.uid:
            # First sight since start (or since leading): keep the times the object already carries.
            seen = self._statuses.get(desired.key) if self._statuses is not None else None
            if seen is not None and seen.uid == desired.uid and seen.resource_version:
                cached, precondition = (desired.uid, seen.packed), seen.resource_version
            elif (cached := await self._read(rt, desired)) is None:
                return False
        previous = _unpack(cached[1])
        body = render(desired, previous, _now())
        if timeless(body) == timeless(previous):
            # Trusting the watch here is safe enough: a former leader stops writing at its renew_deadline,
            # we lead only after a whole lease duration, so our watch had seconds to show its last write.
            self._written[desired.key] = cached
            return True
        try:
            await self._apply(rt, desired, body, precondition)
        except KubeApiError as exc:
            if exc.status == 404:
                self._written.pop(desired.key, None)
                return False
            if exc.status != 409 or precondition is None:
                raise
            # The object moved since the watch showed it (another writer, or our watch lags): read it once.
            if (fresh := await self._read(rt, desired)) is None:
                return False
            previous = _unpack(fresh[1])
            body = render(desired, previous, _now())
            if timeless(body) == timeless(previous):
                self._written[desired.key] = fresh
                return True
            await self._apply(rt, desired, body, None)
        self._written[desired.key] = (desired.uid, _pack(body))
        events = condition_events(previous, desired.conditions, generation=desired.generation, sidecars=desired.total)
        for event in events + experiment_events(previous, desired.experiments):
            await self._event(desired, event)
        return True

    async def _read(self, rt: ResourceType, desired: DesiredStatus) -> tuple[str, bytes] | None:
        """(uid, status) from a GET; None if the object is gone or is another object of the same name."""
        try:
            obj = await self._client.get(rt, desired.name, namespace=desired.namespace)
        except KubeApiError as exc:
            if exc.status == 404:
                return None  # deleted meanwhile
            raise
        if desired.uid and (obj.get("metadata") or {}).get("uid") != desired.uid:
            return None  # re-created under the same name; our watch has not caught up yet
        cached = (desired.uid, _pack(obj.get("status") or {}))
        self._written[desired.key] = cached
        return cached

    async def _apply(
        self, rt: ResourceType, desired: DesiredStatus, status: dict[str, Any], resource_version: str | None
    ) -> None:
        if resource_version is None:
            await self._client.patch_status(rt, desired.name, status, namespace=desired.namespace)
            return
        # Server-side apply honours metadata.resourceVersion as a precondition: 409 if the object changed.
        metadata = {"name": desired.name, "resourceVersion": resource_version} | (
            {"namespace": desired.namespace} if desired.namespace else {}
        )
        body = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": metadata, "status": status}
        await self._client.patch(
            rt,
            desired.name,
            body,
            namespace=desired.namespace,
            patch_type="apply",
            subresource="status",
            field_manager=FIELD_MANAGER,
            force=True,
        )

    async def _event(self, desired: DesiredStatus, event: EventSpec) -> None:
        regarding = (
            {"apiVersion": API_VERSION, "kind": desired.kind, "name": desired.name}
            | ({"namespace": desired.namespace} if desired.namespace else {})
            | ({"uid": desired.uid} if desired.uid else {})
        )
        try:
            await self._client.create_event(
                regarding=regarding,
                reason=event.reason,
                note=event.note,
                action=event.action,
                type=event.type,
                reporting_instance=self._elector.identity,
            )
        except KubeError as exc:  # Events are best effort: the status itself is written
            log.info("no Event for %s %s/%s: %s", desired.kind, desired.namespace, desired.name, exc)


# --- logging (files mode) -----------------------------------------------------------


class ConditionLogger:
    """`modelway dev`: no status subresource to write, so conditions are logged when they change."""

    def __init__(
        self,
        controller: Controller,
        *,
        delay: float = 0.2,
        spend: SpendSource | None = None,
        experiments: ExperimentSource | None = None,
    ) -> None:
        self._controller = controller
        self._spend = spend
        self._experiments = experiments
        for source in (spend, experiments):
            if source is not None:
                source.add_listener(self.on_sync_change)
        self._delay = delay
        self._scheduled = False
        self._logged: dict[Key, tuple[Wanted, ...]] = {}
        self._experiment_logged: dict[Key, str | None] = {}
        controller.subscribe(on_recompute=self.on_recompute, on_sync_change=self.on_sync_change)

    def on_recompute(self, judgement: Judgement) -> None:
        self._schedule()

    def on_sync_change(self) -> None:
        self._schedule()

    def _schedule(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        asyncio.get_running_loop().call_later(self._delay, self.flush)  # a burst logs once

    def flush(self) -> None:
        self._scheduled = False
        controller = self._controller
        spend = self._spend.spend() if self._spend is not None else None
        experiments = self._experiments.statuses() if self._experiments is not None else None
        desired = desired_statuses(
            controller.judgement, controller.route_sync(), controller.store.view(), spend=spend, experiments=experiments
        )
        for key in sorted(desired):
            status = desired[key]
            if status.experiment is not None and self._experiment_logged.get(key) != status.experiment:
                log.info("%s %s/%s: experiment %s", status.kind, status.namespace, status.name, status.experiment)
            self._experiment_logged[key] = status.experiment
            before = {c.type: c for c in self._logged.get(key, ())}
            for condition in status.conditions:
                if before.get(condition.type) != condition:
                    level = logging.INFO if condition.status == "True" else logging.WARNING
                    log.log(level, "%s", describe(status, condition))
        self._logged = {key: status.conditions for key, status in desired.items()}
