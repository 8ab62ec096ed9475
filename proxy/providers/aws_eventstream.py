"""The AWS event-stream binary framing (`application/vnd.amazon.eventstream`), decoded incrementally.

Bedrock's streaming answers (ConverseStream, InvokeModelWithResponseStream) are a sequence of
binary messages, each:

    total length (u32 BE) | headers length (u32 BE) | prelude CRC32 (of the 8 bytes before it)
    | headers | payload | message CRC32 (of every byte before it, prelude included)

and each header `name length (u8) | name | value type (u8) | value`, where a value is a fixed
width number, or 2-byte length + bytes/UTF-8 string (types 6 and 7), or a UUID (16 bytes).

The stream is untrusted input, so: both CRCs are checked (zlib.crc32, in C), a declared length
past the limit or one too small for the framing is refused as soon as its prelude arrives
(nothing waits for gigabytes that will never come), and bytes left over at the end are a cut
stream. Every such case raises `UpstreamProtocolError` (a bad answer: 502), never a hang.
Pure, no I/O.
"""

from __future__ import annotations

import struct
import uuid
import zlib

import msgspec

from proxy.providers.base import UpstreamProtocolError

PRELUDE_BYTES = 12  # total length, headers length, prelude CRC
MESSAGE_CRC_BYTES = 4
MIN_MESSAGE_BYTES = PRELUDE_BYTES + MESSAGE_CRC_BYTES
#: The format's own ceiling for one message and for its headers (the AWS SDKs refuse larger).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_HEADERS_BYTES = 128 * 1024

_PRELUDE = struct.Struct(">III")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")

HeaderValue = bool | int | bytes | str | uuid.UUID

# value type -> fixed width (bytes) of its value, and the struct format reading it
_FIXED: dict[int, tuple[int, str]] = {2: (1, ">b"), 3: (2, ">h"), 4: (4, ">i"), 5: (8, ">q"), 8: (8, ">q")}
_BYTES, _STRING, _UUID = 6, 7, 9
_CACHED_HEADER_BLOCKS = 32


class EventStreamError(UpstreamProtocolError):
    """The bytes break the event-stream framing: a bad CRC, an impossible length, a cut message."""


class EventMessage(msgspec.Struct, frozen=True):
    headers: dict[str, HeaderValue]
    payload: bytes

    def header(self, name: str) -> str | None:
        """A string header (`:event-type`, `:message-type`, ...), None when absent or not a string."""
        value = self.headers.get(name)
        return value if isinstance(value, str) else None


class EventStreamDecoder:
    """Feed bytes in any split; get each message once its last byte has arrived."""

    def __init__(self, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._max = max(MIN_MESSAGE_BYTES, min(max_message_bytes, MAX_MESSAGE_BYTES))
        self._buffer = bytearray()
        self._expected = 0  # total length of the message being read, once its prelude checked out
        self._seen: dict[bytes, dict[str, HeaderValue]] = {}

    def feed(self, data: bytes) -> list[EventMessage]:
        self._buffer += data
        messages = []
        while True:
            if not self._expected:
                if len(self._buffer) < PRELUDE_BYTES:
                    break
                self._expected = self._prelude()
            if len(self._buffer) < self._expected:
                break
            messages.append(self._message(self._expected))
            del self._buffer[: self._expected]  # (bytearray drops its head without copying the rest)
            self._expected = 0
        return messages

    def close(self) -> None:
        """The body ended: anything buffered is a message cut short."""
        if self._buffer:
            raise EventStreamError(f"event stream ended inside a message ({len(self._buffer)} bytes left over)")

    def _prelude(self) -> int:
        total, headers, crc = _PRELUDE.unpack_from(self._buffer)
        if zlib.crc32(self._buffer[:8]) != crc:
            raise EventStreamError("event stream prelude CRC does not match")
        if total < MIN_MESSAGE_BYTES or headers > total - MIN_MESSAGE_BYTES or headers > MAX_HEADERS_BYTES:
            raise EventStreamError(f"event stream message declares impossible lengths ({total}, headers {headers})")
        if total > self._max:
            raise EventStreamError(f"event stream message of {total} bytes is over the limit of {self._max}")
        return int(total)

    def _headers_of(self, block: bytes) -> dict[str, HeaderValue]:
        # A stream repeats a few header blocks (one per event type): each is parsed once. The cache
        # is the decoder's own (one stream) and bounded; the dicts handed out are copies.
        cached = self._seen.get(block)
        if cached is None:
            cached = _headers(memoryview(block))
            if len(self._seen) < _CACHED_HEADER_BLOCKS:
                self._seen[block] = cached
        return dict(cached)

    def _message(self, total: int) -> EventMessage:
        view = memoryview(self._buffer)[:total]
        try:
            (crc,) = _U32.unpack_from(view, total - MESSAGE_CRC_BYTES)
            if zlib.crc32(view[: total - MESSAGE_CRC_BYTES]) != crc:
                raise EventStreamError("event stream message CRC does not match")
            (headers_length,) = _U32.unpack_from(view, 4)
            end = PRELUDE_BYTES + headers_length
            headers = self._headers_of(bytes(view[PRELUDE_BYTES:end]))
            return EventMessage(headers=headers, payload=bytes(view[end : total - MESSAGE_CRC_BYTES]))
        finally:
            view.release()  # the bytearray cannot be resized while a view of it is alive


def _headers(data: memoryview) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    at, end = 0, len(data)
    try:
        while at < end:
            size = data[at]
            name = bytes(data[at + 1 : at + 1 + size]).decode()
            at += 1 + size
            kind = data[at]
            at += 1
            value: HeaderValue
            if kind in (0, 1):
                value = kind == 0
            elif kind in _FIXED:
                width, fmt = _FIXED[kind]
                if at + width > end:
                    raise IndexError
                (value,) = struct.unpack_from(fmt, data, at)
                at += width
            elif kind in (_BYTES, _STRING):
                (length,) = _U16.unpack_from(data, at)
                raw = bytes(data[at + 2 : at + 2 + length])
                if len(raw) != length:
                    raise IndexError
                value = raw.decode() if kind == _STRING else raw
                at += 2 + length
            elif kind == _UUID:
                if at + 16 > end:
                    raise IndexError
                value = uuid.UUID(bytes=bytes(data[at : at + 16]))
                at += 16
            else:
                raise EventStreamError(f"event stream header {name!r} has unknown value type {kind}")
            headers[name] = value
    except (IndexError, struct.error):
        raise EventStreamError("event stream headers run past their declared length") from None
    except UnicodeDecodeError:
        raise EventStreamError("event stream header is not UTF-8") from None
    return headers


# --- encoding: what the fakes and tests send ------------------------------------------------


def encode_message(headers: dict[str, str | bytes | bool | int], payload: bytes) -> bytes:
    """One message with real CRCs. Strings are type 7, bytes type 6, bools 0/1, ints type 4 (int32)."""
    block = bytearray()
    for name, value in headers.items():
        raw_name = name.encode()
        block += bytes([len(raw_name)]) + raw_name
        if isinstance(value, bool):
            block.append(0 if value else 1)
        elif isinstance(value, int):
            block.append(4)
            block += struct.pack(">i", value)
        else:
            raw = value.encode() if isinstance(value, str) else value
            block.append(_STRING if isinstance(value, str) else _BYTES)
            block += _U16.pack(len(raw)) + raw
    total = PRELUDE_BYTES + len(block) + len(payload) + MESSAGE_CRC_BYTES
    prelude = struct.pack(">II", total, len(block))
    prelude += _U32.pack(zlib.crc32(prelude))
    message = prelude + bytes(block) + payload
    return message + _U32.pack(zlib.crc32(message))
