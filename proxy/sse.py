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
        events = []
        for block in self._blocks(data):
            event = _parse_block(block)
            if event is not None:
                events.append(event)
        return events

    def _blocks(self, data: bytes) -> list[bytes]:
        """The complete event blocks so far; the incomplete rest waits for more data."""
        buffer = self._buffer + data if self._buffer else data
        if b"\r" in buffer:
            # A lone trailing CR may be the first half of a CRLF: keep it for later.
            keep_cr = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep_cr:
                buffer = buffer[:-1] + b"\r"
        *blocks, self._buffer = buffer.split(b"\n\n")
        return blocks

    def feed_data(self, data: bytes) -> list[bytes]:
        """Like `feed`, for streams whose events are told apart by their data alone (OpenAI's):
        each event's data as bytes, with no per-event object and no decode."""
        datas = []
        for event in self._blocks(data):
            if event.startswith(b"data: ") and b"\n" not in event:
                datas.append(event[6:])
            elif (parsed := _parse_block(event)) is not None:
                datas.append(parsed.data.encode())
        return datas

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


def encode_event(data: str | bytes, event: str | None = None) -> bytes:
    """One event; `data` must be a single line (JSON is)."""
    payload = data.encode() if isinstance(data, str) else data
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"
