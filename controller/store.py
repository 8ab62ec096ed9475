"""The controller's view of the world: every resource it watches, keyed by kind/namespace/name.

Sources write into it; the compiler reads immutable `Resources` views of it.
No I/O: a change calls `on_change`, which the controller wires to its debouncer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from controller.api import ClusterModelPolicy, ModelPolicy, ModelProvider, ModelRoute, Namespace, Resource, Secret

Key = tuple[str, str, str]  # kind, namespace, name


def key_of(resource: Resource) -> Key:
    return (resource.kind, resource.metadata.namespace, resource.metadata.name)


@dataclass(frozen=True, slots=True)
class Resources:
    """An immutable view, what one compilation runs on."""

    providers: tuple[ModelProvider, ...] = ()
    routes: tuple[ModelRoute, ...] = ()
    secrets: tuple[Secret, ...] = ()
    policies: tuple[ModelPolicy | ClusterModelPolicy, ...] = ()
    namespaces: tuple[Namespace, ...] = ()


class ResourceStore:
    def __init__(self, *, on_change: Callable[[], None] = lambda: None) -> None:
        self._items: dict[Key, Resource] = {}
        # Public so the controller can subscribe after both exist.
        self.on_change = on_change
        self._view: Resources | None = None

    def apply(self, resource: Resource) -> None:
        key = key_of(resource)
        if _same(self._items.get(key), resource):
            return  # e.g. our own status write: a new resourceVersion, nothing else
        self._items[key] = resource
        self._changed()

    def delete(self, kind: str, namespace: str, name: str) -> None:
        if self._items.pop((kind, namespace, name), None) is not None:
            self._changed()

    def replace_kind(self, kind: str, resources: Iterable[Resource]) -> None:
        """A full re-list of one kind: whatever is not in it is gone."""
        fresh = {key_of(r): r for r in resources}
        stale = [k for k in self._items if k[0] == kind and k not in fresh]
        changed = bool(stale) or any(not _same(self._items.get(k), r) for k, r in fresh.items())
        for k in stale:
            del self._items[k]
        self._items.update(fresh)
        if changed:
            self._changed()

    def view(self) -> Resources:
        if self._view is None:
            items = sorted(self._items.items())
            self._view = Resources(
                providers=tuple(r for _, r in items if isinstance(r, ModelProvider)),
                routes=tuple(r for _, r in items if isinstance(r, ModelRoute)),
                secrets=tuple(r for _, r in items if isinstance(r, Secret)),
                policies=tuple(r for _, r in items if isinstance(r, ModelPolicy | ClusterModelPolicy)),
                namespaces=tuple(r for _, r in items if isinstance(r, Namespace)),
            )
        return self._view

    def _changed(self) -> None:
        self._view = None
        self.on_change()


def _same(old: Resource | None, new: Resource) -> bool:
    if old is None:
        return False
    if old.metadata.resource_version == new.metadata.resource_version:
        return old == new
    return old.model_copy(update={"metadata": new.metadata}) == new
