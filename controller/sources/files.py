"""FileSource: the store filled from a folder of Kubernetes-style YAML/JSON (`modelway dev`).

Every `*.yaml`, `*.yml` and `*.json` below the folder is read (hidden files and
folders are skipped, which also skips a mounted ConfigMap's `..data` copies);
YAML may hold many documents. Kinds ModelProvider, ModelRoute, ModelPolicy,
ClusterModelPolicy, Secret and Namespace are kept, anything else is ignored; a
missing namespace is `default`. Secrets may use `stringData` or base64 `data`, as with kubectl.

A dev tool, so the folder is polled (stat of every file every 0.5 s, no
inotify dependency). A file that fails to read, parse or validate is reported
(file, document, line, field; never the line's text, which may hold a key) and
its previous good content is kept, so a half-saved edit never empties the
gateway; whatever a file holds, the watcher keeps watching.

An edit that removes more than half of a file's resources (and at least 2) is
held until the file has not changed for `stable_seconds` (~2 polls), or applied
at once when the file was replaced by rename, and then logged as a WARNING
naming what went. A file left with no resources at all is refused unless it
says so: a `kind: List` document with `items: []`. A deleted file's resources
go once it has stayed deleted for `stable_seconds`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from controller.api import API_VERSION, KINDS, Resource, Secret, parse_resource
from controller.store import Key, ResourceStore, key_of
from shared.config_text import decode_text, parse_yaml_documents, removal_verdict, validation_problems

log = logging.getLogger("modelway.sources.files")

SUFFIXES = (".yaml", ".yml", ".json")
_API_VERSIONS = {
    "ModelProvider": API_VERSION,
    "ModelRoute": API_VERSION,
    "ModelPolicy": API_VERSION,
    "ClusterModelPolicy": API_VERSION,
    "Secret": "v1",
    "Namespace": "v1",
}
_CLUSTER_SECRET_LABEL = ("modelway.io/credentials", "true")  # what KubeSource selects Secrets by

Signature = tuple[int, int, int]  # mtime_ns, size, inode: an editor's rename-over changes the inode


class FileError(Exception):
    """One file's problem, worded for the person editing it."""


@dataclass(frozen=True, slots=True)
class _Loaded:
    signature: Signature
    resources: tuple[Resource, ...]


@dataclass(frozen=True, slots=True)
class _Pending:
    signature: Signature | None  # None: the file is gone
    resources: tuple[Resource, ...]
    removed: list[str]
    seen: float


class FileSource:
    def __init__(self, directory: Path, *, poll_interval: float = 0.5, stable_seconds: float = 1.0) -> None:
        self.directory = Path(directory)
        self._interval = poll_interval
        self._stable = stable_seconds
        self._files: dict[Path, _Loaded] = {}
        self._pending: dict[Path, _Pending] = {}
        self._scanned = False
        self._synced = asyncio.Event()
        self._warned_unlabelled: set[Key] = set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def run(self, store: ResourceStore) -> None:
        if not self.directory.is_dir():
            raise FileNotFoundError(f"resource folder {self.directory} does not exist or is not a folder")
        while True:
            try:
                self.rescan(store)
            except Exception:  # never stop watching: the next poll tries again
                log.exception("reading %s failed; retrying", self.directory)
            self._synced.set()
            await asyncio.sleep(self._interval)

    def rescan(self, store: ResourceStore) -> None:
        """One poll: re-read changed files and, if anything changed, republish every kind."""
        current = scan_folder(self.directory)
        first = not self._scanned  # the first view is taken whole: nothing to compare it with
        now = time.monotonic()
        changed = first
        for gone in sorted(self._files.keys() - current.keys()):
            changed |= self._file_gone(gone, now, first)
        for path, signature in sorted(current.items()):
            changed |= self._file_seen(path, signature, now, first)
        self._scanned = True
        if changed:
            self._publish(store)

    def _file_gone(self, path: Path, now: float, first: bool) -> bool:
        resources = self._files[path].resources
        if resources and not first and self._stable > 0:  # an editor's save may unlink before it writes
            pending = self._pending.get(path)
            if pending is None or pending.signature is not None:
                self._pending[path] = _Pending(None, (), _labels(resources), now)
                return False
            if now - pending.seen < self._stable:
                return False
            log.warning(
                "%s was removed; dropped its %d resource(s): %s", path, len(resources), _names(_labels(resources))
            )
        else:
            log.info("%s was removed", path)
        del self._files[path]
        self._pending.pop(path, None)
        return True

    def _file_seen(self, path: Path, signature: Signature, now: float, first: bool) -> bool:
        previous = self._files.get(path)
        pending = self._pending.pop(path, None)
        if pending is not None and pending.signature == signature:
            if now - pending.seen < self._stable:
                self._pending[path] = pending
                return False
            log.warning(
                "%s is live and removed %d of %d resource(s): %s",
                path,
                len(pending.removed),
                len(previous.resources) if previous else 0,
                _names(pending.removed),
            )
            self._files[path] = _Loaded(signature, pending.resources)
            return True
        if previous is not None and previous.signature == signature:
            return False
        old = previous.resources if previous else ()
        try:
            resources, explicit_empty = read_file(path)
        except FileError as exc:
            keeping = "keeping its previous content" if old else "ignoring it"
            log.error("%s; %s until it is fixed", exc, keeping)
            # Remember the signature (no error on every poll), keep the old resources.
            self._files[path] = _Loaded(signature, old)
            return False
        verdict, removed = removal_verdict(_labels(old), _labels(resources), explicit_empty=explicit_empty)
        renamed = previous is not None and previous.signature[2] != signature[2]
        if verdict == "refuse" and not first:
            log.error(
                "%s now holds no resources where it had %d (%s); keeping them. Delete the file, or write "
                "`kind: List` with `items: []`, to remove them on purpose",
                path,
                len(old),
                _names(removed),
            )
            self._files[path] = _Loaded(signature, old)
            return False
        if verdict == "hold" and not renamed and not first and self._stable > 0:
            log.info(
                "%s would remove %d of %d resource(s) (%s); holding it until the file has not changed for %gs",
                path,
                len(removed),
                len(old),
                _names(removed),
                self._stable,
            )
            self._pending[path] = _Pending(signature, resources, removed, now)
            return False
        if removed and (verdict == "hold" or not resources):
            log.warning(
                "%s is live and removed %d of %d resource(s): %s", path, len(removed), len(old), _names(removed)
            )
        log.info("loaded %d resource(s) from %s", len(resources), path)
        self._files[path] = _Loaded(signature, resources)
        return True

    def _publish(self, store: ResourceStore) -> None:
        merged: dict[Key, tuple[Path, Resource]] = {}
        for path, loaded in sorted(self._files.items()):
            for resource in loaded.resources:
                key = key_of(resource)
                if key in merged and merged[key][0] != path:
                    log.warning(
                        "%s %s/%s is defined in %s and in %s; using %s",
                        key[0],
                        key[1],
                        key[2],
                        merged[key][0],
                        path,
                        path,
                    )
                merged[key] = (path, resource)
                self._warn_unlabelled(resource, path)
        for kind in KINDS:  # one replace per kind: the store never holds half a kind
            store.replace_kind(kind, [r for (k, _, _), (_, r) in merged.items() if k == kind])

    def _warn_unlabelled(self, resource: Resource, path: Path) -> None:
        if not isinstance(resource, Secret) or key_of(resource) in self._warned_unlabelled:
            return
        label, value = _CLUSTER_SECRET_LABEL
        if resource.metadata.labels.get(label) != value:
            self._warned_unlabelled.add(key_of(resource))
            log.warning(
                "Secret %s/%s in %s has no label %s=%s: used here, but in a cluster Modelway would not see it",
                resource.metadata.namespace,
                resource.metadata.name,
                path,
                label,
                value,
            )


def scan_folder(directory: Path) -> dict[Path, Signature]:
    found: dict[Path, Signature] = {}
    for root, dirs, files in os.walk(directory):  # symlinked folders are not followed: no loops
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") or not name.endswith(SUFFIXES):
                continue
            path = Path(root) / name
            try:
                st = path.stat()  # follows a file symlink (ConfigMap mounts are symlinks)
            except OSError:
                continue  # a dangling symlink, or deleted since the walk
            found[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return found


def check_folder(directory: Path) -> list[str]:
    """One line per file that would not load: what `modelway dev` refuses to start with."""
    problems = []
    for path in sorted(scan_folder(directory)):
        try:
            read_file(path)
        except FileError as exc:
            problems.append(str(exc))
    return problems


def load_file(path: Path) -> tuple[Resource, ...]:
    """Every resource of a kind we handle in one file; FileError names the file, document, line and field."""
    return read_file(path)[0]


def read_file(path: Path) -> tuple[tuple[Resource, ...], bool]:
    """The file's resources, and whether it says on purpose that it has none (`kind: List`, `items: []`).
    Whatever the file holds, the only exception is a FileError."""
    try:
        return _read_file(path)
    except FileError:
        raise
    except Exception as exc:
        raise FileError(f"{path} could not be loaded ({type(exc).__name__})") from None


def _read_file(path: Path) -> tuple[tuple[Resource, ...], bool]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = decode_text(raw)
    except ValueError as exc:
        raise FileError(f"{path} {exc}") from None
    resources: list[Resource] = []
    explicit_empty = False
    for index, line, doc in _documents(path, text):
        where = f"{path} document {index}" + (f" (line {line})" if line else "")
        if isinstance(doc, dict) and doc.get("kind") == "List":
            items = doc.get("items")
            if items is None:
                items = []
            if not isinstance(items, list):
                raise FileError(f"{where}, List: items: must be a list, not {type(items).__name__}")
            explicit_empty |= items == []
        else:
            items = [doc]
        for item in items:
            resource = _resource(item, where)
            if resource is not None:
                resources.append(resource)
    return tuple(resources), explicit_empty and not resources


def _documents(path: Path, text: str) -> list[tuple[int, int, Any]]:
    """(1-based index, 1-based line or 0, value) of each non-empty document."""
    if path.suffix == ".json":
        try:
            return [(1, 0, json.loads(text))]
        except json.JSONDecodeError as exc:
            raise FileError(f"{path} is not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        except RecursionError:
            raise FileError(f"{path} is not valid JSON: nested too deeply") from None
    try:
        return [(index, line, doc) for index, (line, doc) in enumerate(parse_yaml_documents(text), start=1)]
    except ValueError as exc:
        raise FileError(f"{path} is not valid YAML: {exc}") from None


def _resource(doc: Any, where: str) -> Resource | None:
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise FileError(f"{where}: expected a Kubernetes object (a mapping), got {type(doc).__name__}")
    kind = doc.get("kind")
    if kind not in KINDS:
        log.debug("%s: kind %r is not one Modelway reads; ignored", where, kind)
        return None
    meta = doc.get("metadata")
    what = f"{where}, {kind} {meta.get('name', '?') if isinstance(meta, dict) else '?'}"
    expected = _API_VERSIONS[kind]
    if doc.get("apiVersion", expected) != expected:
        raise FileError(f"{what}: apiVersion: must be {expected}, not {doc['apiVersion']!r}")
    if kind == "Secret":
        for field in ("data", "stringData"):
            if not isinstance(doc.get(field) or {}, dict):
                raise FileError(f"{what}: {field}: must be a mapping of key to value, not {type(doc[field]).__name__}")
        for key, value in (doc.get("data") or {}).items():
            try:
                base64.b64decode(str(value), validate=True)
            except binascii.Error:
                raise FileError(f"{what}: data.{key}: not base64 (use stringData for plain text)") from None
    try:
        return parse_resource(doc)
    except ValidationError as exc:
        raise FileError(f"{what}: {validation_problems(exc)}") from None


def _labels(resources: Iterable[Resource]) -> list[str]:
    return [
        f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
        for kind, namespace, name in map(key_of, resources)
    ]


def _names(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
