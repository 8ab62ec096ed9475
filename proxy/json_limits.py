"""How deep the JSON the sidecar takes from apps may nest.

orjson reads 1024 levels but writes only 254, and every request body is
written again on its way to a provider (a few levels deeper after
translation), so a body nested 255-1024 levels would parse and then fail. The
sidecar refuses bodies nested deeper than `MAX_DEPTH` up front instead:
deeper than any real request (JSON schemas of tools nest a dozen levels),
with room below the writer's limit for what translation adds.

The exact check is one extra `orjson.dumps` of the parsed body (about 5% of
parsing it, ~1 us for a small body); small bodies with fewer `[` and `{` than
`MAX_DEPTH` skip even that.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_DEPTH = 128


def _writer_depth() -> int:
    """The deepest nesting orjson.dumps writes (254 in orjson 3.x), probed rather than assumed."""
    low, high = 1, 4096  # writes `low` levels; `high` is past the limit
    while high - low > 1:
        middle = (low + high) // 2
        value: Any = []
        for _ in range(middle - 1):
            value = [value]
        try:
            orjson.dumps(value)
            low = middle
        except orjson.JSONEncodeError:
            high = middle
    return low


WRITER_DEPTH = _writer_depth()


def _chain(levels: int) -> tuple[list[Any], list[Any]]:
    """`levels` nested one-element arrays: (outermost, innermost)."""
    inner: list[Any] = [None]
    outer = inner
    for _ in range(levels - 1):
        outer = [outer]
    return outer, inner


# Built once: wrapping a value in it puts orjson's own depth limit exactly at MAX_DEPTH.
_OUTER, _SLOT = _chain(WRITER_DEPTH - MAX_DEPTH)
# Below this size two `bytes.count` scans are cheaper than the exact check.
_SCAN_BELOW = 8192


def nests_deeper(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when `value` (as orjson.loads returns it) nests more than `limit` levels.

    The value is written by orjson inside enough one-element arrays that orjson's depth
    limit falls at `limit`: one C-speed pass (~5% of parsing it), no Python walk."""
    outer, slot = (_OUTER, _SLOT) if limit == MAX_DEPTH else _chain(WRITER_DEPTH - limit)
    slot[0] = value
    try:
        orjson.dumps(outer)
    except orjson.JSONEncodeError:  # from loads' output only depth can fail: keys are str, floats finite
        return True
    finally:
        slot[0] = None
    return False


def too_deep(raw: bytes | str, value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when `value`, parsed from `raw`, nests more than `limit` levels."""
    if len(raw) < _SCAN_BELOW:
        # A body cannot nest deeper than it has openers; most small bodies have few.
        openers = raw.count("[") + raw.count("{") if isinstance(raw, str) else raw.count(b"[") + raw.count(b"{")
        if openers <= limit:
            return False
    return nests_deeper(value, limit)


def loads_bounded(text: str | bytes, limit: int = MAX_DEPTH) -> Any:
    """JSON embedded in a request (tool arguments, tool results): ValueError when it is not JSON
    or nests deeper than `limit` (stdlib json would raise RecursionError on deep input)."""
    value = orjson.loads(text)
    if too_deep(text, value, limit):
        raise ValueError(f"nested more than {limit} levels deep")
    return value


def is_depth_error(exc: ValueError) -> bool:
    """orjson.loads' error for input nested past its reading limit (1024)."""
    return str(exc).startswith("depth limit")
