"""Status: what the controller concluded, written back onto ModelRoutes and ModelProviders.

The leader (a Lease, see leader.py) writes `Accepted`, `ResolvedRefs` and, for
routes, `Programmed` plus how many sidecars run the route's current generation.
Every replica computes the same thing from its own watch cache; only the
leader writes, so replicas never fight over a field.

- Pure part: `desired_statuses` (judgement + sidecar sync -> conditions),
  `render` (stamps lastTransitionTime, kept while a condition's status holds)
  and `condition_events` (which transitions deserve an Event). No I/O.
- `StatusWriter`: a write pass at most 200 ms after a change (a burst is one
  pass), server-side apply to the status subresource only when something other
  than a timestamp differs from what was last written, and an Event per real
  transition (never for an unchanged condition).
- `ObservedStatuses`: each object's status, uid and resourceVersion as the
  watch last delivered them (the parsed models keep no status). A new leader's
  first pass compares against these instead of reading every object with its
  own GET; its writes carry that resourceVersion, so a status that moved since
  the watch showed it is a 409, and only then is the object read afresh.
- `ConditionLogger`: the same conditions, logged when they change; what
  `modelway dev` runs, where there is no API server to write to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from controller.api import (
    InvalidObject,
    API_VERSION,
    CLUSTER_KINDS,
    ClusterModelPolicy,
    Condition,
    ModelPolicy,
    ModelPolicyStatus,
    ModelProvider,
    ModelProviderStatus,
    ModelRoute,
    ModelRouteStatus,
)
from controller.compile import Judgement, ProviderVerdict, RouteVerdict, Verdict
from controller.core import Controller, RouteSync
from controller.kube.client import FIELD_MANAGER, KubeClient
from controller.kube.errors import KubeApiError, KubeError
from controller.kube.resources import CLUSTER_MODEL_POLICIES, MODEL_POLICIES, MODEL_PROVIDERS, MODEL_ROUTES, ResourceType
from controller.policy import PolicyVerdict
from controller.leader import LeaseElector
from controller.store import Key, Resources, key_of

log = logging.getLogger("modelway.status")

MAX_MESSAGE = 32768  # the CRDs' maxLength for a condition message
NO_SYNC = RouteSync(synced=0, total=0)
_ACTIONS = {"Accepted": "Validate", "ResolvedRefs": "ResolveRefs", "Programmed": "Program",
            "PolicyRestricted": "Restrict"}
_RESOURCES: dict[str, ResourceType] = {"ModelRoute": MODEL_ROUTES, "ModelProvider": MODEL_PROVIDERS,
                                       "ModelPolicy": MODEL_POLICIES, "ClusterModelPolicy": CLUSTER_MODEL_POLICIES}


# --- the pure part ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wanted:
    """One condition as decided, before it gets its timestamps."""

    type: str
    status: Literal["True", "False"]
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class DesiredStatus:
    kind: str
    namespace: str
    name: str
    uid: str
    generation: int
    conditions: tuple[Wanted, ...]
    synced: int | None = None  # routes only: sidecars running the current generation
    total: int | None = None  # routes only: connected sidecars the route applies to

    @property
    def key(self) -> Key:
        return (self.kind, self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class EventSpec:
    type: Literal["Normal", "Warning"]
    reason: str
    note: str
    action: str


def _wanted(type_: str, verdict: Verdict) -> Wanted:
    return Wanted(type_, "True" if verdict.ok else "False", verdict.reason, verdict.message)


def _why(verdict: RouteVerdict) -> str:
    bad = verdict.accepted if not verdict.accepted.ok else verdict.resolved_refs
    return f"{bad.reason}: {bad.message}" if bad.message else bad.reason


_REJECTION_ECHO = 500  # a sidecar's own words, bounded: a condition message is no place for a dump


def programmed(verdict: RouteVerdict, sync: RouteSync) -> tuple[Wanted, int]:
    """The Programmed condition and how many sidecars run the route's *current* generation."""
    served = verdict.served
    if served is None:
        return Wanted("Programmed", "False", "Invalid", f"no sidecar runs this route: {_why(verdict)}"), 0
    if not (verdict.accepted.ok and verdict.resolved_refs.ok):  # a broken edit: the last good version stays
        message = f"sidecars keep generation {served.metadata.generation}: {_why(verdict)}"
        return Wanted("Programmed", "False", "Invalid", message), 0
    counts = f"{sync.synced}/{sync.total} sidecars run generation {verdict.generation}"
    if sync.rejected:
        message = (f"{sync.rejected}/{sync.total} sidecars refused the snapshot with generation "
                   f"{verdict.generation} and keep their last good one; {sync.rejection[:_REJECTION_ECHO]}")
        return Wanted("Programmed", "False", "SidecarRejected", message), sync.synced
    if sync.synced < sync.total:
        return Wanted("Programmed", "False", "Pending", counts), sync.synced
    if sync.total == 0:
        counts += " (no sidecar this route applies to is connected)"
    return Wanted("Programmed", "True", "Programmed", counts), sync.synced


def policy_restricted(restrictions: Sequence[str]) -> tuple[Wanted, ...]:
    """PolicyRestricted, present only while policies take backends (or the whole route) from some of the
    route's workloads: informational, so it never turns False (which would read as a problem)."""
    if not restrictions:
        return ()
    return (Wanted("PolicyRestricted", "True", "BackendsRestricted",
                   "for the workloads they bind: " + "; ".join(restrictions)),)


def route_status(key: Key, verdict: RouteVerdict, sync: RouteSync, *, uid: str = "",
                 restrictions: Sequence[str] = ()) -> DesiredStatus:
    program, synced = programmed(verdict, sync)
    conditions = (_wanted("Accepted", verdict.accepted), _wanted("ResolvedRefs", verdict.resolved_refs), program,
                  *policy_restricted(restrictions))
    return DesiredStatus(key[0], key[1], key[2], uid, verdict.generation, conditions, synced=synced, total=sync.total)


def provider_status(key: Key, verdict: ProviderVerdict, *, generation: int, uid: str = "") -> DesiredStatus:
    conditions = (_wanted("Accepted", verdict.accepted), _wanted("ResolvedRefs", verdict.resolved_refs))
    return DesiredStatus(key[0], key[1], key[2], uid, generation, conditions)


def policy_status(key: Key, verdict: PolicyVerdict, *, uid: str = "") -> DesiredStatus:
    conditions = (_wanted("Accepted", verdict.accepted), _wanted("ResolvedRefs", verdict.resolved_refs))
    return DesiredStatus(key[0], key[1], key[2], uid, verdict.generation, conditions)


def desired_statuses(judgement: Judgement, sync: Mapping[Key, RouteSync],
                     resources: Resources, *, memo: dict[object, Any] | None = None) -> dict[Key, DesiredStatus]:
    """Per object the judgement covers and the store still holds (a deleted one gets nothing).

    `memo` (a dict the caller keeps between calls) saves rebuilding what has not changed: an object's
    status is reused while its verdict and object are the very same and its counts are equal (the
    controller keeps the verdicts of unchanged namespaces), which matters with thousands of objects."""
    memo = {} if memo is None else memo
    present: Mapping[Key, Any] = resources.by_key  # the current version, where it is invalid
    if not present:  # a view made by hand
        present = {key_of(r): r for r in (*resources.routes, *resources.providers, *resources.policies,
                                          *resources.invalid)}
    out: dict[Key, DesiredStatus] = {}
    for key, route_verdict in judgement.routes.items():
        if (obj := present.get(key)) is not None:
            counts, restrictions = sync.get(key, NO_SYNC), judgement.restrictions.get(key, ())
            before = memo.get(key)
            if (before is not None and before[0] is route_verdict and before[1] is obj and before[2] == counts
                    and before[3] == restrictions):
                out[key] = before[4]
                continue
            out[key] = route_status(key, route_verdict, counts, uid=obj.metadata.uid, restrictions=restrictions)
            memo[key] = (route_verdict, obj, counts, restrictions, out[key])
    for key, policy_verdict in judgement.policy_verdicts.items():
        if (obj := present.get(key)) is not None:
            out[key] = policy_status(key, policy_verdict, uid=obj.metadata.uid)
    for key, provider_verdict in judgement.providers.items():
        if (obj := present.get(key)) is not None:
            before = memo.get(key)
            if before is not None and before[0] is provider_verdict and before[1] is obj:
                out[key] = before[2]
                continue
            out[key] = provider_status(key, provider_verdict, generation=obj.metadata.generation,
                                       uid=obj.metadata.uid)
            memo[key] = (provider_verdict, obj, out[key])
    for gone in [k for k in memo if k not in out]:
        del memo[gone]
    return out


def _conditions_of(status: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    items = (status or {}).get("conditions") or []
    return {str(c.get("type")): c for c in items if isinstance(c, Mapping)}


def render(desired: DesiredStatus, previous: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    """The status to apply: lastTransitionTime moves only when a condition's status does."""
    before = _conditions_of(previous)
    conditions = []
    for wanted in desired.conditions:
        old = before.get(wanted.type)
        since = str(old["lastTransitionTime"]) if (
            old is not None and old.get("status") == wanted.status and old.get("lastTransitionTime")) else now
        conditions.append(Condition(type=wanted.type, status=wanted.status, reason=wanted.reason,
                                    message=wanted.message[:MAX_MESSAGE], observed_generation=desired.generation,
                                    last_transition_time=since))
    if desired.kind == "ModelRoute":
        status: ModelRouteStatus | ModelProviderStatus | ModelPolicyStatus = ModelRouteStatus(
            observed_generation=desired.generation, synced_sidecars=desired.synced or 0,
            total_sidecars=desired.total or 0, conditions=tuple(conditions))
    elif desired.kind == "ModelProvider":
        status = ModelProviderStatus(observed_generation=desired.generation, conditions=tuple(conditions))
    else:
        status = ModelPolicyStatus(observed_generation=desired.generation, conditions=tuple(conditions))
    return status.model_dump(by_alias=True, mode="json")


def timeless(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """A status without its timestamps, for "is there anything to write?"."""
    body = {k: v for k, v in (status or {}).items() if k != "conditions"}
    body["conditions"] = sorted(({k: v for k, v in c.items() if k != "lastTransitionTime"}
                                 for c in _conditions_of(status).values()), key=lambda c: str(c.get("type")))
    return body


def condition_events(previous: Mapping[str, Any] | None, wanted: Sequence[Wanted], *,
                     generation: int | None = None) -> list[EventSpec]:
    """Events for transitions: Normal when a condition turns True, Warning when it turns False.

    A condition that stays False for a different reason is a new problem and warns again;
    one whose status and reason hold (a message with new counts, say) is no news. A route's
    new `generation` reaching all its sidecars is news even when Programmed was True before.
    """
    before = _conditions_of(previous)
    events = []
    for condition in wanted:
        old = before.get(condition.type)
        if old is not None and old.get("status") == condition.status and (
                condition.status == "True" or old.get("reason") == condition.reason):
            if not (condition.type == "Programmed" and condition.status == "True" and generation is not None
                    and old.get("observedGeneration") != generation):
                continue
        kind: Literal["Normal", "Warning"] = "Normal" if condition.status == "True" else "Warning"
        note = condition.message or f"{condition.type} is {condition.status}"
        events.append(EventSpec(kind, condition.reason, note, _ACTIONS.get(condition.type, "Reconcile")))
    return events


def describe(desired: DesiredStatus, condition: Wanted) -> str:
    """One log line: "ModelRoute default/chat: ResolvedRefs=False BackendNotFound: ..."."""
    where = f"{desired.namespace}/{desired.name}" if desired.namespace else desired.name
    text = f"{desired.kind} {where}: {condition.type}={condition.status} {condition.reason}"
    return f"{text}: {condition.message}" if condition.message else text


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # metav1.Time: seconds


# --- what the watch saw -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observed:
    uid: str
    resource_version: str
    status: Mapping[str, Any]


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
        self._seen[_key(kind, obj)] = Observed(str(meta.get("uid") or ""), str(meta.get("resourceVersion") or ""),
                                               dict(status) if isinstance(status, Mapping) else {})


def _key(kind: str, obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    namespace = "" if kind in CLUSTER_KINDS else str(meta.get("namespace") or "default")
    return (kind, namespace, str(meta.get("name") or ""))


# --- writing (the leader) -----------------------------------------------------------


WRITE_CONCURRENCY = 16  # status writes in flight at once during a pass


class StatusWriter:
    """Keeps status in step with the controller's judgement; writes only while `elector` leads.

    `controller` may be set after construction (`writer.controller = c`): the
    Controller takes the writer's callbacks when it is built. `sync_counts`
    gives the sidecar counts to write (every replica's, see replicas.py);
    by default the controller's own `route_sync()`. `statuses`, the watch's
    copy of each object's status: without it, first sight of an object is a GET.
    """

    def __init__(self, client: KubeClient, controller: Controller | None, *, elector: LeaseElector,
                 delay: float = 0.2, sync_delay: float = 1.0, retry_cap: float = 30.0,
                 sync_counts: Callable[[], Mapping[Key, RouteSync]] | None = None,
                 statuses: ObservedStatuses | None = None) -> None:
        self._client = client
        self._statuses = statuses
        self.controller = controller
        self._sync_counts = sync_counts
        self._elector = elector
        self._delay = delay
        # ACKs arrive in bursts (one per sidecar after every push): counting them into status
        # once a second is plenty, and keeps status work off the loop while a push goes out.
        self._sync_delay = sync_delay
        self._judged = False
        self._retry_cap = retry_cap
        self._retries = 0
        self._retry_timer: asyncio.TimerHandle | None = None
        # key -> (uid, the status last written or, on first sight, read or watched).
        self._written: dict[Key, tuple[str, dict[str, Any]]] = {}
        # key -> the desired status known to be on the object: an unchanged one costs a compare.
        self._settled: dict[Key, DesiredStatus] = {}
        self._desired_memo: dict[object, Any] = {}  # see desired_statuses
        self._wake = asyncio.Event()
        self.passes = 0
        elector.add_listener(self._on_leadership)

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
                if self.controller is None or not self._elector.is_leader:
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
        delay = min(self._retry_cap, 2.0 ** self._retries)
        self._retries += 1
        self._retry_timer = asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def write_pass(self) -> int:
        """Writes what differs; returns how many objects could not be written."""
        assert self.controller is not None
        self.passes += 1
        controller = self.controller
        sync = self._sync_counts() if self._sync_counts is not None else controller.route_sync()
        desired = desired_statuses(controller.judgement, sync, controller.store.view(), memo=self._desired_memo)
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

        failures = 0
        # A few objects at a time: a first pass over thousands of objects (a read, a write and
        # Events each) would otherwise take one round trip after another for minutes.
        for start in range(0, len(stale), WRITE_CONCURRENCY):
            if not self._elector.is_leader:
                break  # lost the Lease mid-pass: the new leader carries on
            failures += sum(await asyncio.gather(*(write(k) for k in stale[start:start + WRITE_CONCURRENCY])))
        return failures

    async def _write(self, desired: DesiredStatus) -> bool:
        """True when the object now carries this status (written, or already there)."""
        rt = _RESOURCES[desired.kind]
        cached = self._written.get(desired.key)
        precondition: str | None = None  # the resourceVersion a status taken from the watch was seen at
        if cached is None or cached[0] != desired.uid:
            # First sight since start (or since leading): keep the times the object already carries.
            seen = self._statuses.get(desired.key) if self._statuses is not None else None
            if seen is not None and seen.uid == desired.uid and seen.resource_version:
                cached, precondition = (desired.uid, dict(seen.status)), seen.resource_version
            elif (cached := await self._read(rt, desired)) is None:
                return False
        previous = cached[1]
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
            previous = fresh[1]
            body = render(desired, previous, _now())
            if timeless(body) == timeless(previous):
                self._written[desired.key] = fresh
                return True
            await self._apply(rt, desired, body, None)
        self._written[desired.key] = (desired.uid, body)
        for event in condition_events(previous, desired.conditions, generation=desired.generation):
            await self._event(desired, event)
        return True

    async def _read(self, rt: ResourceType, desired: DesiredStatus) -> tuple[str, dict[str, Any]] | None:
        """(uid, status) from a GET; None if the object is gone or is another object of the same name."""
        try:
            obj = await self._client.get(rt, desired.name, namespace=desired.namespace)
        except KubeApiError as exc:
            if exc.status == 404:
                return None  # deleted meanwhile
            raise
        if desired.uid and (obj.get("metadata") or {}).get("uid") != desired.uid:
            return None  # re-created under the same name; our watch has not caught up yet
        cached = (desired.uid, dict(obj.get("status") or {}))
        self._written[desired.key] = cached
        return cached

    async def _apply(self, rt: ResourceType, desired: DesiredStatus, status: dict[str, Any],
                     resource_version: str | None) -> None:
        if resource_version is None:
            await self._client.patch_status(rt, desired.name, status, namespace=desired.namespace)
            return
        # Server-side apply honours metadata.resourceVersion as a precondition: 409 if the object changed.
        metadata = {"name": desired.name, "resourceVersion": resource_version} | (
            {"namespace": desired.namespace} if desired.namespace else {})
        body = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": metadata, "status": status}
        await self._client.patch(rt, desired.name, body, namespace=desired.namespace, patch_type="apply",
                                 subresource="status", field_manager=FIELD_MANAGER, force=True)

    async def _event(self, desired: DesiredStatus, event: EventSpec) -> None:
        regarding = {"apiVersion": API_VERSION, "kind": desired.kind, "name": desired.name} | (
            {"namespace": desired.namespace} if desired.namespace else {}) | ({"uid": desired.uid} if desired.uid else {})
        try:
            await self._client.create_event(regarding=regarding, reason=event.reason, note=event.note,
                                            action=event.action, type=event.type,
                                            reporting_instance=self._elector.identity)
        except KubeError as exc:  # Events are best effort: the status itself is written
            log.info("no Event for %s %s/%s: %s", desired.kind, desired.namespace, desired.name, exc)


# --- logging (files mode) -----------------------------------------------------------


class ConditionLogger:
    """`modelway dev`: no status subresource to write, so conditions are logged when they change."""

    def __init__(self, controller: Controller | None = None, *, delay: float = 0.2) -> None:
        self.controller = controller
        self._delay = delay
        self._scheduled = False
        self._logged: dict[Key, tuple[Wanted, ...]] = {}

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
        if self.controller is None:
            return
        controller = self.controller
        desired = desired_statuses(controller.judgement, controller.route_sync(), controller.store.view())
        for key in sorted(desired):
            status = desired[key]
            before = {c.type: c for c in self._logged.get(key, ())}
            for condition in status.conditions:
                if before.get(condition.type) != condition:
                    level = logging.INFO if condition.status == "True" else logging.WARNING
                    log.log(level, "%s", describe(status, condition))
        self._logged = {key: status.conditions for key, status in desired.items()}
