"""A snapshot from a YAML or JSON file, reloaded when the file changes.

Whatever the file holds (bad UTF-8, YAML nested 100k deep, a half-written edit), the
watcher logs it and keeps the last good snapshot: it never stops watching. An edit that
drops most routes is held until the file stops changing, so a writer caught mid-write
does not empty the gateway; dropping every route needs an explicit `routes: []`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from proxy.snapshot import Snapshot, parse_snapshot, problem_text
from shared.config_text import decode_text, parse_yaml, removal_verdict

log = logging.getLogger("modelway.snapshot")


class SnapshotError(Exception):
    pass


class Loaded(msgspec.Struct, frozen=True):
    snapshot: Snapshot
    routes_explicit: bool  # the file has a `routes:` list (so `routes: []` means "no routes", on purpose)


def read_snapshot_file(path: Path) -> Loaded:
    """Reads and validates; every failure is a SnapshotError naming the file, line or field."""
    try:
        return _read(path)
    except SnapshotError:
        raise
    except Exception as exc:  # anything a file can hold ends as a clean error, not a traceback
        raise SnapshotError(f"snapshot {path} could not be loaded ({type(exc).__name__})") from None


def load_snapshot_file(path: Path) -> Snapshot:
    return read_snapshot_file(path).snapshot


def _read(path: Path) -> Loaded:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SnapshotError(f"cannot read snapshot {path}: {exc.strerror}") from None
    try:
        data = parse_yaml(decode_text(raw))
    except ValueError as exc:
        raise SnapshotError(f"snapshot {path} is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SnapshotError(f"snapshot {path} must be a mapping with 'providers' and 'routes'")
    try:
        snapshot = parse_snapshot(data)
    except msgspec.ValidationError as exc:
        raise SnapshotError(f"snapshot {path} is invalid: {problem_text(exc)}") from None
    return Loaded(snapshot, routes_explicit=isinstance(data.get("routes"), list))


Signature = tuple[int, int, int]  # mtime_ns, size, inode: a rename-over changes the inode


class _Pending(msgspec.Struct, frozen=True):
    signature: Signature
    loaded: Loaded
    removed: list[str]
    seen: float


async def watch_snapshot_file(
    path: Path,
    *,
    initial: Snapshot,
    on_change: Callable[[Snapshot], bool | None],
    interval: float = 1.0,
    stable_seconds: float = 2.0,
) -> None:
    """Polls the file's mtime/size/inode (cheap, works on ConfigMap symlink swaps); keeps the last good one.

    Never returns: every failure is logged and the next change is read again."""
    applied = initial
    last = _signature(path)
    pending: _Pending | None = None
    while True:
        await asyncio.sleep(interval)
        try:
            current = _signature(path)
            if pending is not None and current == pending.signature:
                if time.monotonic() - pending.seen >= stable_seconds:
                    if _apply(
                        on_change, pending.loaded.snapshot, pending.removed, len(applied.routes), path, loud=True
                    ):
                        applied = pending.loaded.snapshot
                    pending = None
                continue
            if current == last:
                continue
            renamed = current is not None and last is not None and current[2] != last[2]
            last, pending = current, None
            loaded = await asyncio.to_thread(read_snapshot_file, path)
            verdict, removed = removal_verdict(
                (r.name for r in applied.routes),
                (r.name for r in loaded.snapshot.routes),
                explicit_empty=loaded.routes_explicit,
            )
            if verdict == "refuse":
                log.error(
                    "snapshot %s has no routes where %d were live (%s); keeping the last good snapshot. "
                    "Write `routes: []` to remove every route on purpose",
                    path,
                    len(applied.routes),
                    _names(removed),
                )
            elif verdict == "hold" and not renamed:
                log.info(
                    "snapshot %s would remove %d of %d routes (%s); holding it until the file has not changed for %gs",
                    path,
                    len(removed),
                    len(applied.routes),
                    _names(removed),
                    stable_seconds,
                )
                pending = _Pending(current, loaded, removed, time.monotonic())  # type: ignore[arg-type]
            elif _apply(
                on_change,
                loaded.snapshot,
                removed,
                len(applied.routes),
                path,
                loud=verdict == "hold" or (bool(removed) and not loaded.snapshot.routes),
            ):
                applied = loaded.snapshot
        except SnapshotError as exc:
            log.error("%s; keeping the last good snapshot", exc)
        except Exception as exc:  # the watcher outlives anything: log it, watch on
            log.error(
                "snapshot %s could not be reloaded (%s); keeping the last good snapshot", path, type(exc).__name__
            )
            log.debug("snapshot reload failure", exc_info=True)


def _apply(
    on_change: Callable[[Snapshot], bool | None],
    snapshot: Snapshot,
    removed: list[str],
    before: int,
    path: Path,
    *,
    loud: bool,
) -> bool:
    if on_change(snapshot) is False:
        return False
    if loud:
        log.warning(
            "snapshot %s from %s is live and removed %d of %d routes: %s",
            snapshot.version,
            path,
            len(removed),
            before,
            _names(removed),
        )
    elif removed:
        log.info("snapshot %s removed route(s) %s", snapshot.version, _names(removed))
    return True


def _names(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _signature(path: Path) -> Signature | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)
