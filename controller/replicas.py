"""Sidecar sync counts across controller replicas.

Every replica serves sidecar streams, but ACKs arrive at whichever replica a
sidecar is connected to, and only the leader writes status. So each replica
publishes its local per-route counts on a Lease of its own,
`modelway-replica-<identity>` (label `modelway.io/replica-of=modelway-controller`,
annotation `modelway.io/route-sync`: `{"<ns>/<route>": [synced, total, generation]}`),
and the leader adds every other live replica's counts to its own. The same Lease carries the
replica's experiment counts (`modelway.io/experiment-counts`, the ledger of the sidecars
connected to it, see experiment_reports), which the leader's experiment runner sums with its own.

- Pure part: `format_counts` / `parse_counts` (the annotation), `expired`,
  `peer_counts` (which Leases count) and `aggregate` (the sum). No I/O.
- `ReplicaCounts`: publishes this replica's counts (at most every
  `min_interval` when they change, at least every `renew_every` as a heartbeat),
  polls the others' while leader, and deletes its Lease on a clean shutdown.

A peer's counts for another generation than the leader's current one add to
`total` but not `synced`: the leader writes status about the generation it
knows, and a sidecar that ACKed a different one does not run it.

Unlike leader election (which counts how long it has seen a Lease unchanged),
a replica Lease's expiry is judged by the wall clock against the publisher's
renewTime, so replicas need roughly synchronised clocks (a skewed one only
miscounts sidecars for a while; it never makes two leaders).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from controller.compile import Judgement
from controller.core import Controller, RouteSync
from controller.experiment_reports import PeerLedger, parse_published
from controller.kube.client import KubeClient
from controller.kube.errors import KubeApiError, KubeError
from controller.kube.resources import LEASES
from controller.leader import DEFAULT_LEASE_NAME, LeaseElector, micro_time, parse_time
from controller.store import Key

log = logging.getLogger("modelway.replicas")

LABEL = "modelway.io/replica-of"
ANNOTATION = "modelway.io/route-sync"
EXPERIMENTS_ANNOTATION = "modelway.io/experiment-counts"
NAME_PREFIX = "modelway-replica-"
SELECTOR = f"{LABEL}={DEFAULT_LEASE_NAME}"
ROUTE_KIND = "ModelRoute"


class Published(NamedTuple):
    """One route's counts as a replica published them."""

    synced: int
    total: int
    generation: int  # the route's served generation the counts refer to


# --- the pure part ------------------------------------------------------------------


def lease_name(identity: str) -> str:
    """A valid object name (DNS subdomain) for `identity`: default identities carry an `_`."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", identity.lower()).strip("-.")
    return (NAME_PREFIX + cleaned)[:253].rstrip("-.")


def served_generations(judgement: Judgement, keys: Iterable[Key]) -> dict[Key, int]:
    """Route key -> the generation its sidecars are meant to run (the last good one), for `keys`
    (the routes some sidecar runs: a few of thousands, and this runs after every burst of ACKs)."""
    routes = judgement.routes
    out: dict[Key, int] = {}
    for key in keys:
        verdict = routes.get(key)
        if verdict is not None and verdict.served is not None:
            out[key] = verdict.served.metadata.generation
    return out


def format_counts(counts: Mapping[Key, RouteSync], generations: Mapping[Key, int]) -> str:
    """The annotation: compact JSON, only routes some sidecar here runs (keeps it small)."""
    body = {
        f"{key[1]}/{key[2]}": [sync.synced, sync.total, generations[key]]
        for key, sync in counts.items()
        if sync.total > 0 and key in generations
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def parse_counts(text: object) -> dict[Key, Published]:
    """The annotation back; whatever is malformed is skipped, never fatal (another version may write it)."""
    if not isinstance(text, str):
        return {}
    try:
        body = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(body, dict):
        return {}
    out: dict[Key, Published] = {}
    for route, value in body.items():
        namespace, _, name = str(route).partition("/")
        if not (namespace and name) or not isinstance(value, list) or len(value) != 3:
            continue
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            continue
        synced, total, generation = value
        out[(ROUTE_KIND, namespace, name)] = Published(min(synced, total), total, generation)
    return out


def expired(spec: Mapping[str, Any], now: datetime) -> bool:
    """renewTime + leaseDurationSeconds in the past (or either missing)."""
    renewed = parse_time(spec.get("renewTime"))
    seconds = spec.get("leaseDurationSeconds")
    if renewed is None or not isinstance(seconds, int | float):
        return True
    return renewed + timedelta(seconds=float(seconds)) < now


def peer_counts(
    leases: Iterable[Mapping[str, Any]], *, identity: str, now: datetime
) -> dict[str, dict[Key, Published]]:
    """Holder identity -> counts, for every live replica Lease but our own (we know ours fresher)."""
    out: dict[str, dict[Key, Published]] = {}
    for lease in leases:
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        if not holder or holder == identity or expired(spec, now):
            continue
        annotations = (lease.get("metadata") or {}).get("annotations") or {}
        out[holder] = parse_counts(annotations.get(ANNOTATION))
    return out


def aggregate(
    local: Mapping[Key, RouteSync], generations: Mapping[Key, int], peers: Iterable[Mapping[Key, Published]]
) -> dict[Key, RouteSync]:
    """Our counts plus the peers'; a peer's sidecars on another generation count as not synced."""
    sums = {key: [sync.synced, sync.total] for key, sync in local.items()}
    for counts in peers:
        for key, published in counts.items():
            entry = sums.setdefault(key, [0, 0])
            entry[1] += published.total
            if generations.get(key) == published.generation:
                entry[0] += published.synced
    return {key: RouteSync(synced=s, total=t) for key, (s, t) in sums.items()}


def expired_long_ago(spec: Mapping[str, Any], now: datetime) -> bool:
    """Expired for another full duration: the replica crashed; its Lease is litter."""
    seconds = spec.get("leaseDurationSeconds")
    later = now - timedelta(seconds=float(seconds)) if isinstance(seconds, int | float) else now
    return expired(spec, later)


# --- publishing and polling ---------------------------------------------------------


class ReplicaCounts:
    """Publishes this replica's counts; while leader, also reads the others' and sums them.

    Subscribes to the controller's sync changes when built; the StatusWriter
    takes it as its `counts` (`sync_counts`, `add_peers_listener`).
    """

    def __init__(
        self,
        client: KubeClient,
        controller: Controller,
        *,
        namespace: str,
        identity: str,
        elector: LeaseElector,
        lease_duration: float = 15.0,
        renew_every: float = 5.0,
        min_interval: float = 1.0,
        poll_every: float = 1.0,
    ) -> None:
        if not renew_every < lease_duration:
            raise ValueError("renew_every must be shorter than lease_duration")
        self._client = client
        self.namespace, self.identity, self.name = namespace, identity, lease_name(identity)
        self._elector = elector
        self._controller = controller
        self._duration_seconds = max(1, round(lease_duration))  # the API takes whole seconds
        self._renew_every = renew_every
        self._min_interval = min_interval
        self._poll_every = poll_every
        self._peers_listeners: list[Callable[[], None]] = []
        self._lease: dict[str, Any] | None = None  # our Lease as last written (its resourceVersion)
        self._dirty = asyncio.Event()
        self._poll_now = asyncio.Event()
        self._peers: dict[str, dict[Key, Published]] = {}
        self._experiment_text: Callable[[], str] | None = None
        self._peer_experiments: dict[str, PeerLedger] = {}
        self._experiment_texts: dict[str, tuple[object, PeerLedger]] = {}  # holder -> (annotation, parsed)
        self._problems: dict[str, str] = {}  # loop -> last error, so a streak is logged once
        elector.add_listener(self._on_leadership)
        controller.subscribe(on_sync_change=self.notify)

    # --- what others call ---------------------------------------------------------

    def notify(self) -> None:
        """The Controller's sync change: our counts may have changed, publish soon."""
        self._dirty.set()

    def add_peers_listener(self, callback: Callable[[], None]) -> None:
        """`callback()` when another replica's published counts change (while we lead)."""
        self._peers_listeners.append(callback)

    def share_experiments(self, published: Callable[[], str]) -> None:
        """Publish this replica's experiment ledger too (`published()`, see ReportLedger.published);
        call `notify()` when it moves."""
        self._experiment_text = published

    def experiment_counts(self) -> list[PeerLedger]:
        """Every live peer's experiment ledger (while we lead; else none)."""
        return list(self._peer_experiments.values())

    def sync_counts(self) -> dict[Key, RouteSync]:
        """What the StatusWriter writes: local counts plus every live peer's."""
        local = self._controller.route_sync()
        if not self._peers:
            return local
        peers = self._peers.values()
        keys = local.keys() | {key for counts in peers for key in counts}
        return aggregate(local, served_generations(self._controller.judgement, keys), peers)

    def _on_leadership(self, leading: bool) -> None:
        if leading:
            self._poll_now.set()  # read the peers at once, before the writer's first pass if we can
        else:
            self._peers = {}  # stale by the time we lead again
            self._peer_experiments = {}

    # --- the loops ----------------------------------------------------------------

    async def run(self) -> None:
        """Publish and (while leader) poll until cancelled; then delete our Lease."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._publish_loop())
                group.create_task(self._poll_loop())
        finally:
            try:  # bounded: shutdown must not hang on an unreachable API server
                async with asyncio.timeout(2.0):
                    await self._client.delete(LEASES, self.name, namespace=self.namespace)
                log.info("replica counts: deleted Lease %s/%s", self.namespace, self.name)
            except (KubeError, TimeoutError) as exc:
                if not (isinstance(exc, KubeApiError) and exc.status == 404):
                    log.warning(
                        "replica counts: could not delete Lease %s/%s (%s); it expires in %d s",
                        self.namespace,
                        self.name,
                        exc,
                        self._duration_seconds,
                    )

    async def _publish_loop(self) -> None:
        published: tuple[str, str] | None = None
        written_at = -float("inf")
        while True:
            checked_at = time.monotonic()
            text = self._local_text()
            if text != published or checked_at - written_at >= self._renew_every:
                try:
                    await self.publish(text)
                except Exception as exc:  # a bug, too, must not end publishing for good
                    self._problem("publish", exc)
                else:
                    self._problem("publish", None)
                    published, written_at = text, checked_at
            # Sleep until a change or the next heartbeat (a failed write: retry after min_interval) ...
            heartbeat = self._min_interval if published != text else written_at + self._renew_every - time.monotonic()
            try:
                async with asyncio.timeout(max(0.0, heartbeat)):
                    await self._dirty.wait()
            except TimeoutError:
                pass
            # ... and look at the counts at most every min_interval: a burst of ACKs is one look, one write.
            await asyncio.sleep(max(0.05, checked_at + self._min_interval - time.monotonic()))
            self._dirty.clear()  # after the sleep: whatever arrived meanwhile rides along

    def _local_text(self) -> tuple[str, str]:
        counts = self._controller.route_sync()
        experiments = self._experiment_text() if self._experiment_text is not None else ""
        return format_counts(counts, served_generations(self._controller.judgement, counts)), experiments

    async def publish(self, text: str | tuple[str, str]) -> None:
        """Create or renew our Lease with `text` as the counts annotation (and the experiment counts)."""
        text, experiments = (text, "") if isinstance(text, str) else text
        annotations = {ANNOTATION: text} | ({EXPERIMENTS_ANNOTATION: experiments} if experiments else {})
        now = micro_time(datetime.now(UTC))
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": self._duration_seconds, "renewTime": now}
        for _ in range(2):  # a second go after a conflict or a vanished Lease
            lease = self._lease
            if lease is None:
                lease = await self._client.get_lease(self.name, namespace=self.namespace)
            try:
                if lease is None:
                    # The generic create: create_lease() sets no labels or annotations.
                    body = {
                        "apiVersion": LEASES.api_version,
                        "kind": LEASES.kind,
                        "metadata": {
                            "name": self.name,
                            "namespace": self.namespace,
                            "labels": {LABEL: DEFAULT_LEASE_NAME},
                            "annotations": annotations,
                        },
                        "spec": spec | {"acquireTime": now},
                    }
                    self._lease = await self._client.create(LEASES, body, namespace=self.namespace)
                else:
                    meta = dict(lease.get("metadata") or {})
                    meta["labels"] = {**(meta.get("labels") or {}), LABEL: DEFAULT_LEASE_NAME}
                    meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
                    body = {**lease, "metadata": meta, "spec": {**(lease.get("spec") or {}), **spec}}
                    self._lease = await self._client.update_lease(body)
                return
            except KubeApiError as exc:
                self._lease = None
                if exc.status not in (404, 409):  # 404: the leader cleared it; 409: stale resourceVersion
                    raise
        raise KubeApiError(
            409,
            "Conflict",
            "the replica Lease kept changing under us",
            method="PUT",
            path=LEASES.path(namespace=self.namespace, name=self.name),
        )

    async def _poll_loop(self) -> None:
        while True:
            if self._elector.is_leader:
                try:
                    await self.poll()
                except Exception as exc:  # a bug, too, must not end polling for good
                    self._problem("poll", exc)
                else:
                    self._problem("poll", None)
            try:  # poll_every while leader; otherwise wait for the elector's "you lead"
                async with asyncio.timeout(self._poll_every if self._elector.is_leader else None):
                    await self._poll_now.wait()
            except TimeoutError:
                pass
            self._poll_now.clear()

    async def poll(self) -> None:
        """Read the replica Leases; wake the status writer when a peer's counts changed."""
        leases = (await self._client.list(LEASES, namespace=self.namespace, label_selector=SELECTOR)).items
        now = datetime.now(UTC)
        peers = peer_counts(leases, identity=self.identity, now=now)
        if not self._elector.is_leader:
            return  # lost the Lease while listing: leave _peers cleared
        self._peer_experiments = self._experiment_ledgers(leases, peers)
        if peers != self._peers:
            self._peers = peers
            for callback in self._peers_listeners:
                callback()
        for lease in leases:  # a crashed replica's Lease is never deleted by its owner
            meta, spec = lease.get("metadata") or {}, lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity and expired_long_ago(spec, now):
                try:
                    await self._client.delete(LEASES, str(meta.get("name")), namespace=self.namespace)
                    log.info("replica counts: deleted the expired Lease %s/%s", self.namespace, meta.get("name"))
                except KubeApiError as exc:
                    if exc.status != 404:
                        raise

    def _experiment_ledgers(
        self, leases: Iterable[Mapping[str, Any]], peers: Mapping[str, Any]
    ) -> dict[str, PeerLedger]:
        """The live peers' experiment ledgers; one unchanged since the last poll is not parsed again."""
        out: dict[str, PeerLedger] = {}
        for lease in leases:
            holder = str((lease.get("spec") or {}).get("holderIdentity") or "")
            if holder not in peers:
                continue
            text = ((lease.get("metadata") or {}).get("annotations") or {}).get(EXPERIMENTS_ANNOTATION)
            before = self._experiment_texts.get(holder)
            ledger = before[1] if before is not None and before[0] == text else parse_published(text)
            self._experiment_texts[holder] = (text, ledger)
            out[holder] = ledger
        for gone in set(self._experiment_texts) - set(out):
            del self._experiment_texts[gone]
        return out

    def _problem(self, loop: str, exc: Exception | None) -> None:
        """Each distinct problem once per streak, not every retry."""
        before = self._problems.get(loop, "")
        problem = "" if exc is None else str(exc) or type(exc).__name__
        if exc is not None and not isinstance(exc, KubeError):
            log.error("replica counts: %s failed; retrying", loop, exc_info=exc)
        elif problem and problem != before:
            log.warning("replica counts: %s on Lease namespace %s: %s; retrying", loop, self.namespace, problem)
        elif before and not problem:
            log.info("replica counts: %s works again", loop)
        self._problems[loop] = problem
