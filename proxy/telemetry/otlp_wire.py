"""Protobuf's wire format, written and read by hand (pure: no I/O): the primitives the OTLP span
(``proxy.telemetry.otlp_encode``) and metric (``proxy.telemetry.otlp_metrics``) writers share, and the
flat reader of a collector's reply."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

# ---------------------------------------------------------------------------
# protobuf encoding
#
# Each message is built as a list of byte chunks joined once; a nested message
# is "tag, varint(len), body". Tags are (field_number << 3) | wire_type, with
# wire types 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.

VARINT1 = tuple(bytes((i,)) for i in range(128))
pack_double = struct.Struct("<d").pack
pack_fixed32 = struct.Struct("<I").pack
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
UINT64_MASK = (1 << 64) - 1


def varint(n: int) -> bytes:
    if n < 0x80:
        return VARINT1[n]
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def delimited(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field: tag, length, body."""
    n = len(body)
    return tag + (VARINT1[n] if n < 0x80 else varint(n)) + body


def lp(body: bytes) -> bytes:
    """Length prefix + body (the tag is added by the caller)."""
    n = len(body)
    return (VARINT1[n] if n < 0x80 else varint(n)) + body


def int64(value: int) -> bytes:
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"integer {value} does not fit in int64")
    return varint(value & UINT64_MASK)


def any_value(value: Any) -> bytes:
    """The body of an AnyValue: string 1, bool 2, int 3, double 4, array 5, kvlist 6, bytes 7."""
    t = type(value)
    if t is str:
        return delimited(b"\x0a", value.encode(errors="replace"))
    if t is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if t is int:
        return b"\x18" + int64(value)
    if t is float:
        return b"\x21" + pack_double(value)
    if t is tuple or t is list:  # ArrayValue.values (1)
        return delimited(b"\x2a", b"".join([b"\x0a" + lp(any_value(v)) for v in value]))
    # Subclasses and containers, in the order the SDK's encoder tests them.
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return delimited(b"\x0a", str(value).encode(errors="replace"))
    if isinstance(value, int):
        return b"\x18" + int64(int(value))
    if isinstance(value, float):
        return b"\x21" + pack_double(float(value))
    if isinstance(value, bytes):
        return delimited(b"\x3a", bytes(value))
    if isinstance(value, Sequence):
        return delimited(b"\x2a", b"".join([b"\x0a" + lp(any_value(v)) for v in value]))
    if isinstance(value, Mapping):
        return delimited(b"\x32", b"".join([b"\x0a" + lp(key_value(str(k), v)) for k, v in value.items()]))
    raise TypeError(f"invalid attribute value type {type(value).__name__}")


def key_value(key: str, value: Any) -> bytes:
    """The body of a KeyValue: key 1, value 2 (always present, as in the SDK's encoder)."""
    return (delimited(b"\x0a", key.encode(errors="replace")) if key else b"") + delimited(b"\x12", any_value(value))


# ---------------------------------------------------------------------------
# reading (the collector's partial-success reply)


def decode_fields(data: bytes) -> dict[int, int | bytes]:
    """A flat decode of one protobuf message: field number -> last value (varint or bytes)."""
    out: dict[int, int | bytes] = {}
    i, n = 0, len(data)
    while i < n:
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            out[number], i = read_varint(data, i)
        elif wire == 2:
            length, i = read_varint(data, i)
            if i + length > n:
                raise ValueError("truncated")
            out[number], i = data[i : i + length], i + length
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wire}")
    return out


def read_varint(data: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
