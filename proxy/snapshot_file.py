"""A snapshot from a YAML or JSON file, reloaded when the file changes."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import ValidationError

from proxy.snapshot import Snapshot, parse_snapshot

log = logging.getLogger("modelway.snapshot")


class SnapshotError(Exception):
    pass


def load_snapshot_file(path: Path) -> Snapshot:
    """Reads and validates; errors name the file and the field, never a credential."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise SnapshotError(f"snapshot {path} is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SnapshotError(f"snapshot {path} must be a mapping with 'providers' and 'routes'")
    try:
        return parse_snapshot(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors(include_input=False)
        )
        raise SnapshotError(f"snapshot {path} is invalid: {problems}") from None


async def watch_snapshot_file(
    path: Path, *, on_change: Callable[[Snapshot], None], interval: float = 1.0
) -> None:
    """Polls the file's mtime/size (cheap, works on ConfigMap symlink swaps); keeps the last good one."""
    last = _signature(path)
    while True:
        await asyncio.sleep(interval)
        current = _signature(path)
        if current == last:
            continue
        last = current
        try:
            snapshot = await asyncio.to_thread(load_snapshot_file, path)
        except SnapshotError as exc:
            log.error("%s; keeping the last good snapshot", exc)
            continue
        on_change(snapshot)


def _signature(path: Path) -> tuple[float, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime, stat.st_size)
