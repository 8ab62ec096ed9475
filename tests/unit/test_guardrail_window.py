"""The sliding window streamed answers are checked in, and the StreamGuard that holds chunks back
for it: pure, no sockets (the guardrails' verdicts come from a stub)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy.errors import ApiError
from proxy.guardrails.window import Window
from proxy.request.guarded import StreamGuard
from proxy.request.relay import StreamStopped
from proxy.snapshot import Guardrail

# --- the window ------------------------------------------------------------------------------------


def test_a_check_is_due_after_check_chars_new_characters():
    window = Window(check_chars=10, window_chars=4)
    assert not window.add("abc ")
    assert not window.add("def ")
    assert window.add("ghi ")
    assert window.text() == "abc def ghi "


def test_a_sentence_end_makes_a_check_due_sooner_but_not_for_a_few_characters():
    window = Window(check_chars=40, window_chars=8)
    assert not window.add("Hi.")  # 3 characters: under a quarter of 40
    assert window.add(" All is well.")  # 16: past a quarter, and a sentence ended


def test_each_check_sees_the_tail_of_what_was_allowed_then_the_new_text():
    window = Window(check_chars=6, window_chars=4)
    window.add("abcdef")
    window.allow()
    assert window.checked == "cdef" and not window.pending
    window.add("ghijkl")
    assert window.text() == "cdefghijkl"
    window.allow("GHIJKL")  # a replacement is what the next window sees
    assert window.checked == "IJKL"


def test_a_window_of_zero_sees_only_the_new_text():
    window = Window(check_chars=3, window_chars=0)
    window.add("abc")
    window.allow()
    window.add("def")
    assert window.text() == "def"


# --- the stream guard ------------------------------------------------------------------------------


def chunk(text: str = "", finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}]}


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)


class StubCheck:
    """Denies a window holding `deny`; replaces `swap` pairs; records every window it saw."""

    def __init__(self, deny: str = "\0", swap: tuple[str, str] = ("\0", "\0")) -> None:
        self.deny, self.swap = deny, swap
        self.windows: list[tuple[str, str]] = []

    async def replaced_or_cut(self, guardrails: Any, window: Window) -> str:
        self.windows.append((window.checked, window.new))
        if self.deny in window.text():
            raise ApiError(422, "denied", "guardrail_denied", "guardrail_denied")
        return window.new.replace(*self.swap)


def guard(check: StubCheck, *, every: int = 16, tail: int = 8) -> StreamGuard:
    guardrail = Guardrail(name="g", url="http://g/check", stream_check_chars=every, stream_window_chars=tail)
    return StreamGuard(check, [guardrail])  # type: ignore[arg-type]  # the stub stands in for the check


WORDS = [f"word{i} " for i in range(20)]


def run(stream_guard: StreamGuard, reads: list[list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], Exception | None]:
    async def main() -> tuple[list[dict[str, Any]], Exception | None]:
        out: list[dict[str, Any]] = []
        try:
            for read in reads:
                out += await stream_guard.feed(read)
            out += await stream_guard.finish()
        except StreamStopped as stopped:
            out += stopped.chunks
            return out, stopped
        return out, None

    return asyncio.run(main())


@pytest.mark.parametrize("per_read", [1, 3, 20])
def test_an_allowed_stream_comes_out_whole_in_order_however_it_was_read(per_read):
    check = StubCheck()
    chunks = [chunk(w) for w in WORDS] + [chunk(finish="stop")]
    reads = [chunks[i : i + per_read] for i in range(0, len(chunks), per_read)]
    out, error = run(guard(check), reads)
    assert error is None
    assert out == chunks  # the same chunks, in order, the finish chunk last
    assert len(check.windows) >= 7  # checked every ~16 characters, never the whole answer at once
    assert all(len(checked) <= 8 for checked, _ in check.windows)


def test_what_is_held_back_is_only_the_unchecked_window():
    check = StubCheck()
    stream_guard = guard(check, every=16)

    async def main() -> list[int]:
        held = []
        for w in WORDS:
            await stream_guard.feed([chunk(w)])
            held.append(len(stream_guard._held))
        return held

    assert max(asyncio.run(main())) <= 3  # 16 characters are at most three 6-character words


def test_a_deny_stops_the_stream_after_the_text_allowed_before_its_window():
    check = StubCheck(deny="word9")
    out, error = run(guard(check, tail=0), [[chunk(w) for w in WORDS]])  # all in one read
    assert isinstance(error, StreamStopped) and error.error.status == 422
    got = text_of(out)
    assert "word9" not in got
    assert got == "".join(WORDS)[: len(got)]
    checked, new = check.windows[-1]
    assert "word9" in new and got.endswith(checked)  # the app got everything up to the denied window
    assert len(got) >= len("".join(WORDS[:8]))


def test_a_replace_changes_the_held_text_and_keeps_the_rest():
    check = StubCheck(swap=("word5", "[x]"))
    out, error = run(guard(check), [[chunk(w)] for w in WORDS] + [[chunk(finish="stop")]])
    assert error is None
    assert text_of(out) == "".join(WORDS).replace("word5", "[x]")
    assert out[-1]["choices"][0]["finish_reason"] == "stop"


def test_chunks_before_any_text_pass_at_once():
    role = {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
    out, error = run(guard(StubCheck()), [[role]])
    assert out == [role] and error is None
