"""FileSource: the store filled from a folder of Kubernetes-style YAML/JSON (`modelway dev`).

Every `*.yaml`, `*.yml` and `*.json` below the folder is read (hidden files and
folders are skipped, which also skips a mounted ConfigMap's `..data` copies);
YAML may hold many documents. Kinds ModelProvider, ModelRoute, ModelPolicy,
ClusterModelPolicy, Secret and Namespace are kept, anything else is ignored; a missing namespace is `default`. Secrets may
use `stringData` or base64 `data`, as with kubectl.

A dev tool, so the folder is polled (stat of every file every 0.5 s, no
inotify dependency). A file that fails to read, parse or validate is reported
(file, document, line, field) and its previous good content is kept, so a
half-saved edit never empties the gateway. A deleted file's resources go.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from controller.api import API_VERSION, KINDS, Resource, Secret, parse_resource
from controller.store import Key, ResourceStore, key_of

log = logging.getLogger("modelway.sources.files")

SUFFIXES = (".yaml", ".yml", ".json")
_API_VERSIONS = {"ModelProvider": API_VERSION, "ModelRoute": API_VERSION, "ModelPolicy": API_VERSION,
                 "ClusterModelPolicy": API_VERSION, "Secret": "v1", "Namespace": "v1"}
_CLUSTER_SECRET_LABEL = ("modelway.io/credentials", "true")  # what KubeSource selects Secrets by

Signature = tuple[int, int, int]  # mtime_ns, size, inode: an editor's rename-over changes the inode


class FileError(Exception):
    """One file's problem, worded for the person editing it."""


@dataclass(frozen=True, slots=True)
class _Loaded:
    signature: Signature
    resources: tuple[Resource, ...]


class FileSource:
    def __init__(self, directory: Path, *, poll_interval: float = 0.5) -> None:
        self.directory = Path(directory)
        self._interval = poll_interval
        self._files: dict[Path, _Loaded] = {}
        self._synced = asyncio.Event()
        self._warned_unlabelled: set[Key] = set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def run(self, store: ResourceStore) -> None:
        if not self.directory.is_dir():
            raise FileNotFoundError(f"resource folder {self.directory} does not exist or is not a folder")
        while True:
            self.rescan(store)
            self._synced.set()
            await asyncio.sleep(self._interval)

    def rescan(self, store: ResourceStore) -> None:
        """One poll: re-read changed files and, if anything changed, republish every kind."""
        current = scan_folder(self.directory)
        changed = not self._synced.is_set()
        for gone in self._files.keys() - current.keys():
            log.info("%s was removed; dropping its resources", gone)
            del self._files[gone]
            changed = True
        for path, signature in sorted(current.items()):
            previous = self._files.get(path)
            if previous is not None and previous.signature == signature:
                continue
            try:
                resources = load_file(path)
            except FileError as exc:
                keeping = "keeping its previous content" if previous and previous.resources else "ignoring it"
                log.error("%s; %s until it is fixed", exc, keeping)
                # Remember the signature (no error on every poll), keep the old resources.
                self._files[path] = _Loaded(signature, previous.resources if previous else ())
                continue
            log.info("loaded %d resource(s) from %s", len(resources), path)
            self._files[path] = _Loaded(signature, resources)
            changed = True
        if changed:
            self._publish(store)

    def _publish(self, store: ResourceStore) -> None:
        merged: dict[Key, tuple[Path, Resource]] = {}
        for path, loaded in sorted(self._files.items()):
            for resource in loaded.resources:
                key = key_of(resource)
                if key in merged and merged[key][0] != path:
                    log.warning("%s %s/%s is defined in %s and in %s; using %s", key[0], key[1], key[2],
                                merged[key][0], path, path)
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
            log.warning("Secret %s/%s in %s has no label %s=%s: used here, but in a cluster Modelway "
                        "would not see it", resource.metadata.namespace, resource.metadata.name, path, label, value)


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


def load_file(path: Path) -> tuple[Resource, ...]:
    """Every resource of a kind we handle in one file; FileError names the file, document, line and field."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise FileError(f"cannot read {path}: {exc}") from None
    resources: list[Resource] = []
    for index, line, doc in _documents(path, text):
        where = f"{path} document {index}" + (f" (line {line})" if line else "")
        items = doc.get("items") if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        for item in items or []:
            resource = _resource(item, where)
            if resource is not None:
                resources.append(resource)
    return tuple(resources)


def _documents(path: Path, text: str) -> list[tuple[int, int, Any]]:
    """(1-based index, 1-based line or 0, value) of each non-empty document."""
    try:
        if path.suffix == ".json":
            return [(1, 0, json.loads(text))]
        loader = yaml.SafeLoader("")
        return [(i, node.start_mark.line + 1, loader.construct_document(node))
                for i, node in enumerate(yaml.compose_all(text, Loader=yaml.SafeLoader), start=1)
                if node is not None]
    except (ValueError, yaml.YAMLError) as exc:
        raise FileError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None


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
        for key, value in (doc.get("data") or {}).items():
            try:
                base64.b64decode(str(value), validate=True)
            except binascii.Error:
                raise FileError(f"{what}: data.{key}: not base64 (use stringData for plain text)") from None
    try:
        return parse_resource(doc)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
                             for e in exc.errors(include_input=False))
        raise FileError(f"{what}: {problems}") from None
