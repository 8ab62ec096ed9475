"""A watch response as a stream of events.

The API server writes one JSON object per line and keeps the response open;
objects can be large (a Secret up to 1 MiB), larger than aiohttp's readline
limit, so we split the byte stream ourselves. An ERROR event carries a Status:
410 means our resourceVersion is too old and the caller must re-list.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from controller.kube.errors import KubeApiError, KubeError

ADDED, MODIFIED, DELETED, BOOKMARK, ERROR = "ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED or BOOKMARK (ERROR events are raised)
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        return str((self.object.get("metadata") or {}).get("resourceVersion") or "")


async def iter_events(content: aiohttp.StreamReader, *, path: str = "") -> AsyncIterator[WatchEvent]:
    buffer = bytearray()
    async for chunk in content.iter_any():
        scanned = len(buffer)  # only the new bytes can hold the next newline
        buffer += chunk
        while (end := buffer.find(b"\n", scanned)) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            scanned = 0
            if line.strip():
                yield _decode(line, path)
    if buffer.strip():  # a last line without its newline
        yield _decode(bytes(buffer), path)


def _decode(line: bytes, path: str) -> WatchEvent:
    try:
        raw = json.loads(line)
        kind, obj = str(raw["type"]), raw["object"]
    except (ValueError, KeyError, TypeError):
        raise KubeError(f"watch {path}: malformed event line ({len(line)} bytes)") from None
    if kind == ERROR:
        code = obj.get("code", 500) if isinstance(obj, dict) else 500
        raise KubeApiError.from_status(int(code), obj, method="WATCH", path=path)
    if not isinstance(obj, dict):
        raise KubeError(f"watch {path}: {kind} event without an object")
    return WatchEvent(kind, obj)
