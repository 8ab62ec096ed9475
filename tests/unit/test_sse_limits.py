"""SseParser against hostile streams: events past the limit are refused, and a long unfinished
event costs linear time however small the pieces it comes in."""

from __future__ import annotations

import time

import pytest

from proxy.sse import SseEventTooLarge, SseParser


def test_an_unfinished_event_past_the_limit_is_refused() -> None:
    parser = SseParser(max_event_bytes=1000)
    parser.feed(b"data: " + b"a" * 900)
    with pytest.raises(SseEventTooLarge, match="longer than 1000 bytes"):
        parser.feed(b"a" * 200)


def test_a_whole_event_past_the_limit_is_refused_even_in_one_piece() -> None:
    with pytest.raises(SseEventTooLarge):
        SseParser(max_event_bytes=1000).feed(b"data: " + b"a" * 2000 + b"\n\ndata: x\n\n")


def test_events_up_to_the_limit_pass_and_the_limit_is_per_event() -> None:
    parser = SseParser(max_event_bytes=1000)
    event = b"data: " + b"a" * 990 + b"\n\n"
    events = [e for _ in range(100) for e in parser.feed(event)]
    assert len(events) == 100 and all(len(e.data) == 990 for e in events)


@pytest.mark.parametrize("split", [b"\n\n", b"\r\n\r\n", b"\r\r", b"\n\r\n"])
def test_a_boundary_split_across_pieces_is_found(split: bytes) -> None:
    stream = b"data: " + b"x" * 50 + split + b"data: y" + split
    for size in (1, 2, 3):
        parser = SseParser(max_event_bytes=100)
        events = [e for i in range(0, len(stream), size) for e in parser.feed(stream[i : i + size])]
        events += parser.close()  # a trailing CR may still be half a CRLF until the body ends
        assert [e.data for e in events] == ["x" * 50, "y"], (split, size)


def _feed_seconds(size: int) -> float:
    piece = b"a" * 16
    parser = SseParser(max_event_bytes=2 * 1024 * 1024)
    parser.feed(b"data: ")
    started = time.perf_counter()
    for _ in range(size // len(piece)):
        parser.feed(piece)
    [event] = parser.feed(b"\n\n")
    seconds = time.perf_counter() - started
    assert len(event.data) == size
    return seconds


def test_a_long_event_fed_byte_by_byte_costs_linear_time() -> None:
    """The parser used to concatenate its buffer with every piece: 1 MB fed in 16-byte pieces took
    seconds; now pieces are kept until a blank line may have come. Four times the bytes must cost
    about four times the time (quadratic would be sixteen), whatever the machine's speed."""
    quarter = min(_feed_seconds(256 * 1024) for _ in range(3))
    whole = min(_feed_seconds(1024 * 1024) for _ in range(3))
    assert whole < 8 * quarter, (quarter, whole)


def test_close_returns_an_unfinished_event_kept_in_pieces() -> None:
    parser = SseParser()
    for piece in (b"data: ab", b"c", b"d"):
        assert parser.feed(piece) == []
    assert parser.pending
    assert [e.data for e in parser.close()] == ["abcd"]
