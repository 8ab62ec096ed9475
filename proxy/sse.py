"""Incremental Server-Sent Events parsing and encoding (pure, no I/O)."""

from __future__ import annotations

import msgspec

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024

# Two line ends in a row (a blank line) contain one of these; without any, no event can have ended.
_BOUNDARY_HINTS = (b"\n\n", b"\r\r", b"\n\r")


class SseEvent(msgspec.Struct, frozen=True):
    event: str | None
    data: str


class SseEventTooLarge(ValueError):
    """An event (or the unfinished rest of one) is longer than the parser's limit."""


class SseParser:
    """Feeds on arbitrary byte chunks, returns complete events as they close.

    Follows the WHATWG rules that matter for LLM streams: events end at a
    blank line, `data:` lines join with newlines, one leading space after the
    colon is dropped, comment lines (`:`) are ignored, CRLF is accepted.

    A stream is untrusted input: an event longer than `max_event_bytes` (or an
    unfinished one that grows past it) raises SseEventTooLarge. An unfinished
    event's pieces are kept in a list and joined only once a blank line may
    have arrived, so an event fed in many small pieces costs linear time.
    """

    __slots__ = ("_buffer", "_max", "_pieces", "_size")

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._buffer = b""
        self._pieces: list[bytes] = []  # the unfinished event's later pieces, after _buffer
        self._size = 0  # len(_buffer) + the pieces' lengths
        self._max = max_event_bytes

    def feed(self, data: bytes) -> list[SseEvent]:
        events = []
        for block in self._blocks(data):
            event = parse_block(block)
            if event is not None:
                events.append(event)
        return events

    def _blocks(self, data: bytes) -> list[bytes]:
        """The complete event blocks so far; the incomplete rest waits for more data."""
        if self._buffer:
            # Only when a blank line may have come is the unfinished event joined and split again.
            seam = (self._pieces[-1] if self._pieces else self._buffer)[-2:] + data[:2]  # across the seam
            if not any(hint in data or hint in seam for hint in _BOUNDARY_HINTS):
                self._size += len(data)
                if self._size > self._max:
                    self._too_large()
                self._pieces.append(data)
                return []
            if self._pieces:
                buffer = b"".join((self._buffer, *self._pieces, data))
                self._pieces.clear()
            else:
                buffer = self._buffer + data
        else:
            buffer = data
        if b"\r" in buffer:
            # A lone trailing CR may be the first half of a CRLF: keep it for later.
            keep_cr = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep_cr:
                buffer = buffer[:-1] + b"\r"
        *blocks, rest = buffer.split(b"\n\n")
        self._buffer, self._size = rest, len(rest)
        if self._size > self._max:
            self._too_large()
        if len(buffer) > self._max:  # (else no block can be)
            for block in blocks:
                if len(block) > self._max:
                    self._too_large()
        return blocks

    def _too_large(self) -> None:
        self._buffer, self._size = b"", 0
        self._pieces.clear()
        raise SseEventTooLarge(f"a stream event is longer than {self._max} bytes")

    def feed_data(self, data: bytes) -> list[bytes]:
        """Like `feed`, for streams whose events are told apart by their data alone (OpenAI's):
        each event's data as bytes, with no per-event object and no decode."""
        datas = []
        for event in self._blocks(data):
            if event.startswith(b"data: ") and b"\n" not in event:
                datas.append(event[6:])
            elif (parsed := parse_block(event)) is not None:
                datas.append(parsed.data.encode())
        return datas

    def feed_blocks(self, data: bytes) -> list[bytes]:
        """Like `feed`, for a relay that sends events on as they came: each complete event's own
        bytes (line ends made LF, without the blank line that ended it); `parse_block` reads one."""
        return self._blocks(data)

    def close_block(self) -> bytes:
        """End of body, for `feed_blocks`: a final event without its blank line (b"" when none)."""
        rest = b"".join((self._buffer, *self._pieces)).rstrip(b"\r\n")
        self._buffer, self._size = b"", 0
        self._pieces.clear()
        return rest.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    def close(self) -> list[SseEvent]:
        """End of body: a final event without its blank line still counts."""
        rest = b"".join((self._buffer, *self._pieces)).rstrip(b"\r\n")
        self._buffer, self._size = b"", 0
        self._pieces.clear()
        if not rest:
            return []
        event = parse_block(rest.replace(b"\r\n", b"\n"))
        return [event] if event is not None else []

    @property
    def pending(self) -> bool:
        return bool(self._buffer.strip()) or any(piece.strip() for piece in self._pieces)


def parse_block(block: bytes) -> SseEvent | None:
    """One event's bytes (LF line ends, no blank line) read by the SSE rules; None when it holds neither
    an event name nor data (comments only)."""
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
