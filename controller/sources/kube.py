"""KubeSource: the store kept in step with the API server by list + watch.

For each kind (ModelProvider, ModelRoute, ModelPolicy, Secret) and each watched
namespace (or all at once), and for the cluster-scoped ClusterModelPolicy and
Namespace (whose labels select cluster policies and whose
`modelway.io/data-class` annotation sets a default): list, hand the whole kind to `store.replace_kind`, then watch
from the list's resourceVersion with bookmarks, applying every event. A 410
Gone (as an HTTP status or an ERROR event) means our version was compacted
away: re-list. Connection trouble: resume the watch from the last version
seen, after an exponential backoff with jitter (capped at 30 s); each distinct
problem is logged once per streak of failures, and the recovery once.

Which Secrets: only those labelled `modelway.io/credentials=true`. Watching
every Secret in the cluster would put every credential of every workload in
the controller's memory (and need `list secrets` cluster-wide for all of
them); a label selector keeps the watch cheap and the blast radius small, and
makes "this Secret is for Modelway" an explicit act. A ModelProvider whose
`credentialsRef` names an unlabelled Secret reports SecretNotFound saying so.
Label it with:  kubectl label secret <name> modelway.io/credentials=true

An object that fails validation (what the CRD schema cannot check, e.g. a
regex that does not compile or a URL with port 99999) is logged once with its
name and the problem. A ModelProvider, ModelRoute or policy is then kept as an
InvalidObject beside its last valid version: that version keeps serving and
the status says what is wrong. Any other kind is treated as absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from controller.api import CLUSTER_KINDS, InvalidObject, Resource, parse_object, problems
from controller.kube import (
    CLUSTER_MODEL_POLICIES,
    MODEL_POLICIES,
    MODEL_PROVIDERS,
    MODEL_ROUTES,
    NAMESPACES,
    SECRETS,
    KubeClient,
    KubeError,
    ResourceGone,
    ResourceType,
)
from controller.kube.watch import ADDED, DELETED, MODIFIED
from controller.store import Key, ResourceStore, key_of

if TYPE_CHECKING:
    from controller.status_writer import ObservedStatuses

log = logging.getLogger("modelway.sources.kube")

SECRET_LABEL = "modelway.io/credentials"
SECRET_SELECTOR = f"{SECRET_LABEL}=true"


@dataclass(frozen=True, slots=True)
class WatchedKind:
    kind: str
    resource: ResourceType
    label_selector: str | None = None


WATCHED_KINDS = (
    WatchedKind("ModelProvider", MODEL_PROVIDERS),
    WatchedKind("ModelRoute", MODEL_ROUTES),
    WatchedKind("ModelPolicy", MODEL_POLICIES),
    WatchedKind("ClusterModelPolicy", CLUSTER_MODEL_POLICIES),
    WatchedKind("Secret", SECRETS, SECRET_SELECTOR),
    WatchedKind("Namespace", NAMESPACES),
)


class KubeSource:
    def __init__(
        self,
        client: KubeClient,
        *,
        namespaces: Sequence[str] | None = None,
        watch_timeout: int = 300,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        statuses: ObservedStatuses | None = None,
    ) -> None:
        self._client = client
        self.statuses = statuses  # the status writer's copy of what the parsed models drop
        self._scopes: tuple[str | None, ...] = tuple(dict.fromkeys(namespaces)) if namespaces else (None,)
        self._watch_timeout = watch_timeout
        self._backoff = (backoff_base, backoff_cap)
        # Per kind, everything every scope of it currently holds: a re-list of one
        # namespace must hand replace_kind the other namespaces' objects too.
        self._objects: dict[str, dict[Key, Resource]] = {k.kind: {} for k in WATCHED_KINDS}
        # Objects whose current version is invalid (their last valid one stays in _objects).
        self._invalid: dict[str, dict[Key, InvalidObject]] = {k.kind: {} for k in WATCHED_KINDS}
        self._unsynced = {(k.kind, scope) for k in WATCHED_KINDS for scope in self._scopes_of(k)}
        self._synced = asyncio.Event()
        self._reported_invalid: dict[Key, str] = {}  # key -> resourceVersion logged, to log each once

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def _scopes_of(self, kind: WatchedKind) -> tuple[str | None, ...]:
        return self._scopes if kind.resource.namespaced else (None,)

    async def run(self, store: ResourceStore) -> None:
        async with asyncio.TaskGroup() as tasks:
            for kind in WATCHED_KINDS:
                for scope in self._scopes_of(kind):
                    tasks.create_task(self._reflect(kind, scope, store), name=f"kube-watch-{kind.kind}-{scope}")

    async def _reflect(self, kind: WatchedKind, namespace: str | None, store: ResourceStore) -> None:
        what = f"{kind.resource.plural} in {f'namespace {namespace}' if namespace else 'all namespaces'}"
        trouble = _Trouble(what, *self._backoff)
        version: str | None = None
        loop = asyncio.get_running_loop()
        while True:
            just_listed = False
            try:
                if version is None:
                    version = await self._list(kind, namespace, store)
                    self._mark_synced(kind.kind, namespace)
                    trouble.ok()
                    just_listed = True
                started, events = loop.time(), 0
                watch = self._client.watch(
                    kind.resource,
                    namespace=namespace,
                    resource_version=version,
                    label_selector=kind.label_selector,
                    timeout_seconds=self._watch_timeout,
                )
                async with contextlib.aclosing(watch) as stream:
                    async for event in stream:
                        events += 1
                        just_listed = False
                        trouble.ok()
                        version = event.resource_version or version  # bookmarks too: resume from the newest
                        self._feed_statuses(kind.kind, namespace, event=(event.type, event.object))
                        self._on_event(kind.kind, event.type, event.object, store)
                if events == 0 and loop.time() - started < 1.0:  # a server ending watches at once: don't spin
                    raise KubeError(f"watch of {what} ended at once without events")
            except ResourceGone:
                log.info(
                    "%s: resourceVersion %s has expired (compaction or an API server restart); re-listing",
                    what,
                    version,
                )
                version = None
                if just_listed:  # Gone at once after a fresh list: don't hammer the server with lists
                    await asyncio.sleep(trouble.failed(f"watch of {what} expired right after a list"))
            except KubeError as exc:
                await asyncio.sleep(trouble.failed(str(exc)))
            except Exception as exc:  # a bug here must not stop the watch for good
                if trouble.is_new(repr(exc)):
                    log.exception("%s: unexpected error; retrying with backoff", what)
                await asyncio.sleep(trouble.failed(repr(exc), logged=True))

    async def _list(self, kind: WatchedKind, namespace: str | None, store: ResourceStore) -> str:
        """Lists `kind` into the store; returns the list's resourceVersion. Page by page: each page's
        objects as sent (with their managedFields, several times the size of the parsed models) are
        parsed and dropped before the next page comes, so memory never holds thousands of them."""
        parsed: list[Resource | InvalidObject | None] = []
        seen: list[dict[str, Any]] = []  # what ObservedStatuses keeps of each object
        version = ""
        pages = self._client.list_pages(kind.resource, namespace=namespace, label_selector=kind.label_selector)
        async with contextlib.aclosing(pages):
            async for page in pages:
                version = version or page.resource_version
                if self.statuses is not None:
                    seen.extend(_status_part(item) for item in page.items)
                parsed.extend(self._parse(kind.kind, item) for item in page.items)
        self._feed_statuses(kind.kind, namespace, listed=seen)
        self._replace(kind.kind, namespace, parsed, store)
        return version

    def _replace(
        self, kind: str, namespace: str | None, items: Iterable[Resource | InvalidObject | None], store: ResourceStore
    ) -> None:
        objects, invalid = self._objects[kind], self._invalid[kind]
        in_scope = [k for k in objects.keys() | invalid.keys() if namespace is None or k[1] == namespace]
        previous = {k: objects.pop(k) for k in in_scope if k in objects}
        for key in in_scope:
            invalid.pop(key, None)
        for parsed in items:
            if isinstance(parsed, InvalidObject):
                key = key_of(parsed)
                invalid[key] = parsed
                if key in previous:  # the last valid version keeps serving
                    objects[key] = previous[key]
            elif parsed is not None:
                objects[key_of(parsed)] = parsed
        objects.update(store.replace_kind(kind, list(objects.values()), list(invalid.values())))

    def _on_event(self, kind: str, event_type: str, obj: dict[str, Any], store: ResourceStore) -> None:
        if event_type not in (ADDED, MODIFIED, DELETED):
            return  # BOOKMARK: only its resourceVersion matters
        meta = obj.get("metadata") or {}
        key = (kind, _namespace_of(kind, meta), str(meta.get("name") or ""))
        if event_type == DELETED:
            self._reported_invalid.pop(key, None)
            self._invalid[kind].pop(key, None)
            self._objects[kind].pop(key, None)
            store.delete(*key)
            return
        parsed = self._parse(kind, obj)
        if isinstance(parsed, InvalidObject):
            self._invalid[kind][key] = parsed
            store.mark_invalid(parsed)
        elif parsed is None:  # no longer valid, of a kind without status: absent
            if self._objects[kind].pop(key, None) is not None:
                store.delete(*key)
        else:
            self._invalid[kind].pop(key, None)
            self._objects[kind][key] = store.apply(parsed)  # one copy: the store may keep the object it had

    def _parse(self, kind: str, obj: dict[str, Any]) -> Resource | InvalidObject | None:
        obj.setdefault("kind", kind)
        try:
            parsed = parse_object(obj)
        except (ValidationError, ValueError) as exc:
            self._report_invalid(kind, obj, _problems(exc))
            return None
        if isinstance(parsed, InvalidObject):
            self._report_invalid(kind, obj, f"{parsed.reason}: {parsed.message}")
        return parsed

    def _report_invalid(self, kind: str, obj: dict[str, Any], why: str) -> None:
        meta = obj.get("metadata") or {}
        key = (kind, _namespace_of(kind, meta), str(meta.get("name") or ""))
        version = str(meta.get("resourceVersion") or "")
        if self._reported_invalid.get(key) != version:
            self._reported_invalid[key] = version
            log.error("%s %s/%s is invalid: %s", kind, key[1], key[2], why)

    def _feed_statuses(
        self,
        kind: str,
        namespace: str | None,
        *,
        listed: Sequence[dict[str, Any]] | None = None,
        event: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        """Status, uid and resourceVersion as sent, before parsing drops status: a new leader compares
        against these instead of reading every object again. Before the store hears, so a pass it
        triggers finds them."""
        if self.statuses is None:
            return
        if listed is not None:
            self.statuses.replace(kind, namespace, listed)
        if event is not None:
            self.statuses.event(kind, *event)

    def _mark_synced(self, kind: str, namespace: str | None) -> None:
        self._unsynced.discard((kind, namespace))
        if not self._unsynced and not self._synced.is_set():
            log.info("synced: %s", ", ".join(f"{len(v)} {k}" for k, v in self._objects.items()))
            self._synced.set()


def _status_part(obj: dict[str, Any]) -> dict[str, Any]:
    """What `ObservedStatuses` reads of an object: its names, uid, resourceVersion and status."""
    meta = obj.get("metadata") or {}
    names = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta}
    return {"metadata": names, "status": obj.get("status")}


def _namespace_of(kind: str, meta: dict[str, Any]) -> str:
    return "" if kind in CLUSTER_KINDS else str(meta.get("namespace") or "default")


def _problems(exc: Exception) -> str:
    return problems(exc) if isinstance(exc, ValidationError) else str(exc)


class _Trouble:
    """A streak of failures: the backoff to wait, and each distinct problem logged once."""

    def __init__(self, what: str, base: float, cap: float) -> None:
        self.what, self._base, self._cap = what, base, cap
        self._attempts = 0
        self._seen: set[str] = set()

    def is_new(self, problem: str) -> bool:
        return problem not in self._seen

    def failed(self, problem: str, *, logged: bool = False) -> float:
        self._attempts += 1
        if problem not in self._seen:
            self._seen.add(problem)
            if not logged:
                log.warning("%s: %s; retrying with backoff", self.what, problem)
        delay = min(self._cap, self._base * 2 ** (self._attempts - 1))
        return random.uniform(delay / 2, delay)  # jitter: replicas must not stampede a restarted API server

    def ok(self) -> None:
        if self._attempts:
            log.info("%s: working again after %d failed attempts", self.what, self._attempts)
            self._attempts = 0
            self._seen.clear()
