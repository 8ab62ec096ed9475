"""The lean Redis client's wire format: commands encoded, replies parsed from any split of their bytes."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.limits.resp import _INCOMPLETE, Address, NoScript, ProtocolError, ReplyError, encode, parse

REPLIES: list[tuple[bytes, Any]] = [
    (b":42\r\n", 42),
    (b":-7\r\n", -7),
    (b"+OK\r\n", "OK"),
    (b"$5\r\nhello\r\n", b"hello"),
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b"*-1\r\n", None),
    (b"*0\r\n", []),
    # the reserve script's shape: ok, then per counter ok/remaining/reset/retry
    (b"*5\r\n:1\r\n:1\r\n:9990\r\n:6000\r\n:0\r\n", [1, 1, 9990, 6000, 0]),
    (b"*2\r\n*2\r\n:1\r\n$2\r\nab\r\n$4\r\na\r\nb\r\n", [[1, b"ab"], b"a\r\nb"]),
]


@pytest.mark.parametrize(("wire", "value"), REPLIES)
def test_a_reply_parses_whole_and_is_incomplete_at_every_shorter_split(wire: bytes, value: Any) -> None:
    assert parse(wire, 0) == (value, len(wire))
    assert parse(b"junk" + wire + b":1\r\n", 4) == (value, 4 + len(wire))  # from an offset, leaving what follows
    for cut in range(len(wire)):
        assert parse(wire[:cut], 0) == (_INCOMPLETE, 0), f"a reply cut at byte {cut} was taken as whole"


def test_error_replies_are_values_the_caller_raises() -> None:
    error, _ = parse(b"-ERR wrong number of arguments\r\n", 0)
    assert type(error) is ReplyError and "wrong number" in str(error)
    missing, _ = parse(b"-NOSCRIPT No matching script. Please use EVAL.\r\n", 0)
    assert isinstance(missing, NoScript)


@pytest.mark.parametrize(
    "wire",
    [b"?what\r\n", b":12x\r\n", b"$abc\r\n", b"$999999999\r\n", b"*99999999\r\n", b"*1\r\n!x\r\n"],
    ids=["unknown type", "bad integer", "bad length", "huge bulk", "huge array", "bad item"],
)
def test_bytes_that_are_not_resp_are_a_protocol_error(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(wire, 0)


def test_commands_are_arrays_of_bulk_strings() -> None:
    assert encode(("EVALSHA", "ab12", 2, "k1", "k2", 1.5, b"\x00\r\n")) == (
        b"*7\r\n$7\r\nEVALSHA\r\n$4\r\nab12\r\n$1\r\n2\r\n$2\r\nk1\r\n$2\r\nk2\r\n$3\r\n1.5\r\n$3\r\n\x00\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://10.0.0.5", Address(host="10.0.0.5")),
        ("redis://:p%40ss@redis.modelway:6380/2", Address(host="redis.modelway", port=6380, password="p@ss", db=2)),
        ("rediss://app:pw@cache:6379", Address(host="cache", tls=True, username="app", password="pw")),
        ("unix://:pw@/run/redis.sock?db=4", Address(path="/run/redis.sock", password="pw", db=4)),
    ],
)
def test_urls(url: str, address: Address) -> None:
    assert Address.from_url(url) == address


def test_other_schemes_are_refused_without_echoing_the_url() -> None:
    with pytest.raises(ValueError) as caught:
        Address.from_url("redis+sentinel://:secret@host:26379/main")
    assert "secret" not in str(caught.value)
