"""The AWS event-stream decoder: whole messages out of bytes split anywhere, and every broken frame a
bad answer (UpstreamProtocolError, so 502 and the next backend) at once, never a wait or a crash."""

from __future__ import annotations

import struct
import zlib

import pytest

from proxy.providers.aws_eventstream import EventStreamDecoder, EventStreamError, encode_message
from proxy.providers.base import UpstreamProtocolError

EVENT = {":message-type": "event", ":event-type": "contentBlockDelta", ":content-type": "application/json"}
PAYLOADS = [b'{"contentBlockIndex":0,"delta":{"text":"Hel"},"p":"abcd"}', b"", b'{"delta":{"text":"lo \xc3\xa9"}}']
STREAM = b"".join(encode_message(EVENT, p) for p in PAYLOADS)


def _decode_in(parts: list[bytes], *, limit: int = 1 << 20) -> list[tuple[dict[str, object], bytes]]:
    decoder = EventStreamDecoder(max_message_bytes=limit)
    out = [(m.headers, m.payload) for part in parts for m in decoder.feed(part)]
    decoder.close()
    return out


def test_every_split_point_gives_the_same_messages() -> None:
    expected = [(EVENT, p) for p in PAYLOADS]
    for cut in range(len(STREAM) + 1):
        assert _decode_in([STREAM[:cut], STREAM[cut:]]) == expected, cut
    for first in range(0, len(STREAM), 7):  # two cuts
        for second in range(first, len(STREAM), 11):
            assert _decode_in([STREAM[:first], STREAM[first:second], STREAM[second:]]) == expected


def test_byte_by_byte() -> None:
    assert _decode_in([STREAM[i : i + 1] for i in range(len(STREAM))]) == [(EVENT, p) for p in PAYLOADS]


def test_a_message_is_handed_on_as_soon_as_its_last_byte_arrives() -> None:
    decoder = EventStreamDecoder()
    one = encode_message(EVENT, PAYLOADS[0])
    assert decoder.feed(one[:-1]) == []
    (message,) = decoder.feed(one[-1:])
    assert message.header(":event-type") == "contentBlockDelta" and message.payload == PAYLOADS[0]


def test_header_value_types() -> None:
    # bool true/false, byte, short, int, long, bytes, string, timestamp, uuid: as the format defines them
    block = b"".join(
        [
            b"\x01a\x00",
            b"\x01b\x01",
            b"\x01c\x02\xff",
            b"\x01d\x03\x01\x00",
            b"\x01e\x04\x00\x00\x01\x00",
            b"\x01f\x05" + struct.pack(">q", -5),
            b"\x01g\x06\x00\x02\x00\x01",
            b"\x01h\x07\x00\x02hi",
            b"\x01i\x08" + struct.pack(">q", 1700000000000),
            b"\x01j\x09" + bytes(range(16)),
        ]
    )
    total = 12 + len(block) + 4
    prelude = struct.pack(">II", total, len(block))
    frame = prelude + struct.pack(">I", zlib.crc32(prelude)) + block
    frame += struct.pack(">I", zlib.crc32(frame))
    (message,) = EventStreamDecoder().feed(frame)
    headers = message.headers
    assert (headers["a"], headers["b"], headers["c"], headers["d"], headers["e"]) == (True, False, -1, 256, 256)
    assert (headers["f"], headers["g"], headers["h"], headers["i"]) == (-5, b"\x00\x01", "hi", 1700000000000)
    assert str(headers["j"]) == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    assert message.header("c") is None  # not a string
    assert message.payload == b""


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


@pytest.mark.parametrize("at", [0, 3, 5, 8, 11], ids=lambda at: f"prelude byte {at}")
def test_a_corrupt_prelude_is_refused_before_its_body_is_awaited(at: int) -> None:
    decoder = EventStreamDecoder()
    with pytest.raises(EventStreamError, match="prelude CRC"):
        decoder.feed(_flip(STREAM, at)[:12])  # the prelude alone: no waiting for the declared length


@pytest.mark.parametrize("where", ["headers", "payload", "message crc"])
def test_a_corrupt_message_is_refused(where: str) -> None:
    one = encode_message(EVENT, PAYLOADS[0])
    at = {"headers": 14, "payload": len(one) - 10, "message crc": len(one) - 1}[where]
    with pytest.raises(EventStreamError, match="message CRC"):
        EventStreamDecoder().feed(_flip(one, at))


def test_a_huge_declared_length_fails_at_once() -> None:
    prelude = struct.pack(">II", 0xFFFFFFF0, 0)
    prelude += struct.pack(">I", zlib.crc32(prelude))
    with pytest.raises(EventStreamError, match="over the limit"):
        EventStreamDecoder(max_message_bytes=1 << 20).feed(prelude)


def test_the_limit_is_the_callers() -> None:
    big = encode_message(EVENT, b"x" * 5000)
    assert len(EventStreamDecoder(max_message_bytes=len(big)).feed(big)) == 1
    with pytest.raises(EventStreamError, match="over the limit"):
        EventStreamDecoder(max_message_bytes=len(big) - 1).feed(big[:12])


@pytest.mark.parametrize(("total", "headers"), [(15, 0), (0, 0), (20, 5), (100, 200)])
def test_impossible_lengths_are_refused(total: int, headers: int) -> None:
    prelude = struct.pack(">II", total, headers)
    prelude += struct.pack(">I", zlib.crc32(prelude))
    with pytest.raises(EventStreamError, match="impossible lengths"):
        EventStreamDecoder().feed(prelude + b"\x00" * 200)


def test_headers_running_past_their_length_are_refused() -> None:
    block = b"\x05:type\x07\x00\x50abc"  # a string declared 80 bytes long, in a 12-byte header block
    total = 12 + len(block) + 4
    prelude = struct.pack(">II", total, len(block))
    frame = prelude + struct.pack(">I", zlib.crc32(prelude)) + block
    frame += struct.pack(">I", zlib.crc32(frame))
    with pytest.raises(EventStreamError, match="headers run past"):
        EventStreamDecoder().feed(frame)


def test_an_unknown_header_type_is_refused() -> None:
    block = b"\x01x\x0a"
    total = 12 + len(block) + 4
    prelude = struct.pack(">II", total, len(block))
    frame = prelude + struct.pack(">I", zlib.crc32(prelude)) + block
    frame += struct.pack(">I", zlib.crc32(frame))
    with pytest.raises(EventStreamError, match="unknown value type"):
        EventStreamDecoder().feed(frame)


@pytest.mark.parametrize("cut", [1, 11, 12, 30, -1])
def test_a_stream_cut_inside_a_message_fails_at_close(cut: int) -> None:
    decoder = EventStreamDecoder()
    one = encode_message(EVENT, PAYLOADS[0])
    decoder.feed(one + one[:cut])
    with pytest.raises(EventStreamError, match="ended inside a message"):
        decoder.close()


def test_errors_are_bad_answers() -> None:
    assert issubclass(EventStreamError, UpstreamProtocolError)


def test_botocore_reads_what_encode_message_writes() -> None:
    """The fake Bedrock's framing checked with the AWS SDK's own parser (botocore.eventstream)."""
    eventstream = pytest.importorskip("botocore.eventstream")
    buffer = eventstream.EventStreamBuffer()
    buffer.add_data(STREAM)
    messages = list(buffer)
    assert [m.payload for m in messages] == PAYLOADS
    assert messages[0].headers == EVENT
