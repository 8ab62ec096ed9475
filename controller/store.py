"""The controller's view of the world: every resource it watches, keyed by kind/namespace/name.

Sources write into it; the compiler reads immutable `Resources` views of it.
No I/O: a change calls each subscriber (the controller's debouncer subscribes when it is built).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from controller.api import (
    ClusterModelPolicy,
    InvalidObject,
    ModelPolicy,
    ModelProvider,
    ModelRoute,
    Namespace,
    Resource,
    Secret,
)

Key = tuple[str, str, str]  # kind, namespace, name


def key_of(resource: Resource | InvalidObject) -> Key:
    return (resource.kind, resource.metadata.namespace, resource.metadata.name)


@dataclass(frozen=True, slots=True)
class Resources:
    """An immutable view, what one compilation runs on."""

    providers: tuple[ModelProvider, ...] = ()
    routes: tuple[ModelRoute, ...] = ()
    secrets: tuple[Secret, ...] = ()
    policies: tuple[ModelPolicy | ClusterModelPolicy, ...] = ()
    namespaces: tuple[Namespace, ...] = ()
    # Objects whose current version is invalid; the last valid version, if any, is in the tuples above.
    invalid: tuple[InvalidObject, ...] = ()
    # Every object above by key, the invalid version where there is one (a copy: cheap next to a key per object).
    by_key: Mapping[Key, Resource | InvalidObject] = field(default_factory=dict, compare=False)


class ResourceStore:
    def __init__(self, *, on_change: Callable[[], None] | None = None) -> None:
        self._items: dict[Key, Resource] = {}
        self._invalid: dict[Key, InvalidObject] = {}
        self._listeners: list[Callable[[], None]] = [on_change] if on_change is not None else []
        self._view: Resources | None = None

    def subscribe(self, on_change: Callable[[], None]) -> None:
        """`on_change()` after every change, synchronously: it must be cheap (e.g. set an Event)."""
        self._listeners.append(on_change)

    def apply(self, resource: Resource) -> Resource:
        """Returns the object the store keeps: the one it had when `resource` differs from it in nothing
        the controller reads (e.g. our own status write: a new resourceVersion, nothing else), so a
        source that keeps objects of its own keeps the same ones instead of a second copy of each."""
        key = key_of(resource)
        was_invalid = self._invalid.pop(key, None) is not None
        old = self._items.get(key)
        if old is not None and _same(old, resource):
            if was_invalid:
                self._changed()
            return old
        self._items[key] = resource
        self._changed()
        return resource

    def mark_invalid(self, invalid: InvalidObject) -> None:
        """The object's current version is invalid: its last valid version (if any) stays."""
        key = key_of(invalid)
        if self._invalid.get(key) == invalid:
            return
        self._invalid[key] = invalid
        self._changed()

    def delete(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        had_valid = self._items.pop(key, None) is not None
        if (self._invalid.pop(key, None) is not None) or had_valid:
            self._changed()

    def replace_kind(
        self, kind: str, resources: Iterable[Resource], invalid: Iterable[InvalidObject] = ()
    ) -> dict[Key, Resource]:
        """A full re-list of one kind: whatever is not in it is gone. `resources` holds, for an
        object whose listed version is invalid, its last valid version when there is one.
        Returns the objects the store keeps of the kind (see `apply`)."""
        fresh: dict[Key, Resource] = {}
        changed = False
        for resource in resources:
            key = key_of(resource)
            old = self._items.get(key)
            if old is not None and _same(old, resource):
                fresh[key] = old  # the same object as before: what was judged of it still holds
            else:
                fresh[key], changed = resource, True
        fresh_invalid = {key_of(i): i for i in invalid}
        stale = [k for k in self._items if k[0] == kind and k not in fresh]
        stale_invalid = [k for k in self._invalid if k[0] == kind and k not in fresh_invalid]
        changed = (
            changed
            or bool(stale)
            or bool(stale_invalid)
            or any(self._invalid.get(k) != i for k, i in fresh_invalid.items())
        )
        for k in stale:
            del self._items[k]
        for k in stale_invalid:
            del self._invalid[k]
        self._items.update(fresh)
        self._invalid.update(fresh_invalid)
        if changed:
            self._changed()
        return fresh

    def view(self) -> Resources:
        if self._view is None:
            items = sorted(self._items.items())
            self._view = Resources(
                providers=tuple(r for _, r in items if isinstance(r, ModelProvider)),
                routes=tuple(r for _, r in items if isinstance(r, ModelRoute)),
                secrets=tuple(r for _, r in items if isinstance(r, Secret)),
                policies=tuple(r for _, r in items if isinstance(r, ModelPolicy | ClusterModelPolicy)),
                namespaces=tuple(r for _, r in items if isinstance(r, Namespace)),
                invalid=tuple(i for _, i in sorted(self._invalid.items())),
                by_key={**self._items, **self._invalid},
            )
        return self._view

    def _changed(self) -> None:
        self._view = None
        for listener in self._listeners:
            listener()


def _same(old: Resource | None, new: Resource) -> bool:
    """Equal but for the resourceVersion (what our own status write changes). Labels and annotations
    count: a Namespace's select cluster policies and set its data class."""
    if old is None:
        return False
    if old.metadata.resource_version == new.metadata.resource_version:
        return old == new
    metadata = old.metadata.model_copy(update={"resource_version": new.metadata.resource_version})
    return old.model_copy(update={"metadata": metadata}) == new
