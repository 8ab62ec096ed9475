"""Incremental Server-Sent Events parsing and encoding (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str | None
    data: str


class SseParser:
    """Feeds on arbitrary byte chunks, returns complete events as they close.

    Follows the WHATWG rules that matter for LLM streams: events end at a
    blank line, `data:` lines join with newlines, one leading space after the
    colon is dropped, comment lines (`:`) are ignored, CRLF is accepted.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[SseEvent]:
        buffer = self._buffer + data
        if b"\r" in buffer:
            # A lone trailing CR may be the first half of a CRLF: keep it for later.
            keep_cr = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep_cr:
                buffer = buffer[:-1] + b"\r"
        *blocks, self._buffer = buffer.split(b"\n\n")
        events = []
        for block in blocks:
            event = _parse_block(block)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[SseEvent]:
        """End of body: a final event without its blank line still counts."""
        rest, self._buffer = self._buffer.rstrip(b"\r\n"), b""
        if not rest:
            return []
        event = _parse_block(rest.replace(b"\r\n", b"\n"))
        return [event] if event is not None else []

    @property
    def pending(self) -> bool:
        return bool(self._buffer.strip())


def _parse_block(block: bytes) -> SseEvent | None:
    if block.startswith(b"data: ") and b"\n" not in block:
        return SseEvent(event=None, data=block[6:].decode("utf-8", "replace"))  # the common case, fast
    event: str | None = None
    data: list[str] = []
    for raw in block.split(b"\n"):
        if not raw or raw.startswith(b":"):
            continue
        name, _, value = raw.decode("utf-8", "replace").partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if event is None and not data:
        return None
    return SseEvent(event=event, data="\n".join(data))


def encode_event(data: str, event: str | None = None) -> bytes:
    if event is None:
        return b"data: " + data.encode() + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data.encode() + b"\n\n"
