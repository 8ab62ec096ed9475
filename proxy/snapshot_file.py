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
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from proxy.snapshot import Snapshot, parse_snapshot

log = logging.getLogger("modelway.snapshot")

MAX_DEPTH = 100  # a real snapshot nests ~8 levels; PyYAML's composer recurses per level
MAX_NODES = 1_000_000  # nodes after expanding aliases ("billion laughs")


class SnapshotError(Exception):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting before Python's recursion limit does, and alias bombs."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._weights: dict[str, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._count(self._weights.get(event.anchor or "", 1), event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                              event.start_mark)
        before = self._nodes
        self._count(1, event.start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        anchor = getattr(event, "anchor", None)
        if anchor:
            self._weights[anchor] = self._nodes - before
        return node

    def _count(self, weight: int, mark: Any) -> None:
        self._nodes += weight
        if self._nodes > MAX_NODES:
            raise yaml.composer.ComposerError(None, None, f"more than {MAX_NODES} values once aliases are "
                                              "expanded", mark)


_QUOTED = re.compile(r"'[^']{5,}'|\"[^\"]{5,}\"")


def yaml_problem(exc: yaml.YAMLError) -> str:
    """Line, column and problem, never the line's text (it may be an apiKey line)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        # problems quote at most a character or a tag; longer quotes could be file content
        problem = _QUOTED.sub("'…'", exc.problem or exc.context or "syntax error")
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem
    if isinstance(exc, yaml.reader.ReaderError):
        return f"character #x{exc.character:04x} at position {exc.position} is not allowed in YAML" \
            if isinstance(exc.character, int) else "the file is not readable text"
    return f"unreadable YAML ({type(exc).__name__})"


def parse_yaml(text: str) -> Any:
    """YAML (a superset of JSON) with bounded depth and size; raises ValueError with a clean message."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ValueError(yaml_problem(exc)) from None
    except RecursionError:  # a backstop: the depth bound should stop it first
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()


def validation_problems(exc: ValidationError) -> str:
    """Field paths and messages, never the input values."""
    def loc(parts: Iterable[Any]) -> str:
        return ".".join(str(p)[:64] for p in parts) or "(top)"

    return "; ".join(f"{loc(e['loc'])}: {e['msg'][:300]}"
                     for e in exc.errors(include_input=False, include_url=False, include_context=False))


def decode_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None


@dataclass(frozen=True, slots=True)
class Loaded:
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
    except ValidationError as exc:
        raise SnapshotError(f"snapshot {path} is invalid: {validation_problems(exc)}") from None
    return Loaded(snapshot, routes_explicit=isinstance(data.get("routes"), list))


Verdict = Literal["apply", "hold", "refuse"]


def judge_removal(old: Iterable[str], new: Iterable[str], *, explicit_empty: bool) -> tuple[Verdict, list[str]]:
    """What to do with an edit that drops routes: apply it, hold it until the file is stable
    (it drops more than half of them, and at least 2), or refuse it (it drops every one without
    saying so). Returns the verdict and the names removed."""
    old_set, new_set = set(old), set(new)
    removed = sorted(old_set - new_set)
    if not removed:
        return "apply", removed
    if not new_set:
        return ("apply" if explicit_empty else "refuse"), removed
    if len(removed) >= 2 and 2 * len(removed) > len(old_set):
        return "hold", removed
    return "apply", removed


Signature = tuple[int, int, int]  # mtime_ns, size, inode: a rename-over changes the inode


@dataclass(frozen=True, slots=True)
class _Pending:
    signature: Signature
    loaded: Loaded
    removed: list[str]
    seen: float


async def watch_snapshot_file(
    path: Path, *, initial: Snapshot, on_change: Callable[[Snapshot], bool | None], interval: float = 1.0,
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
                    if _apply(on_change, pending.loaded.snapshot, pending.removed, len(applied.routes), path,
                              loud=True):
                        applied = pending.loaded.snapshot
                    pending = None
                continue
            if current == last:
                continue
            renamed = current is not None and last is not None and current[2] != last[2]
            last, pending = current, None
            loaded = await asyncio.to_thread(read_snapshot_file, path)
            verdict, removed = judge_removal((r.name for r in applied.routes), (r.name for r in loaded.snapshot.routes),
                                             explicit_empty=loaded.routes_explicit)
            if verdict == "refuse":
                log.error("snapshot %s has no routes where %d were live (%s); keeping the last good snapshot. "
                          "Write `routes: []` to remove every route on purpose", path, len(applied.routes),
                          _names(removed))
            elif verdict == "hold" and not renamed:
                log.info("snapshot %s would remove %d of %d routes (%s); holding it until the file has not "
                            "changed for %gs", path, len(removed), len(applied.routes), _names(removed),
                            stable_seconds)
                pending = _Pending(current, loaded, removed, time.monotonic())  # type: ignore[arg-type]
            elif _apply(on_change, loaded.snapshot, removed, len(applied.routes), path,
                        loud=verdict == "hold" or (bool(removed) and not loaded.snapshot.routes)):
                applied = loaded.snapshot
        except SnapshotError as exc:
            log.error("%s; keeping the last good snapshot", exc)
        except Exception as exc:  # the watcher outlives anything: log it, watch on
            log.error("snapshot %s could not be reloaded (%s); keeping the last good snapshot", path,
                      type(exc).__name__)
            log.debug("snapshot reload failure", exc_info=True)


def _apply(on_change: Callable[[Snapshot], bool | None], snapshot: Snapshot, removed: list[str], before: int,
           path: Path, *, loud: bool) -> bool:
    if on_change(snapshot) is False:
        return False
    if loud:
        log.warning("snapshot %s from %s is live and removed %d of %d routes: %s", snapshot.version, path,
                    len(removed), before, _names(removed))
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
