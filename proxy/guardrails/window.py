"""The sliding window a streamed answer is checked in: pure, no I/O.

A stream is never held whole: new text is held back from the app until a check allows it, and a
check is due once `check_chars` new characters arrived, or sooner at the end of a sentence (once a
quarter of them did), or at the stream's end. What the guardrail sees is the window: the last
`window_chars` characters it already allowed (so a phrase split between two checks is seen whole)
followed by the new ones. What the app holds at any time is exactly the text allowed so far.
"""

from __future__ import annotations

_SENTENCE_ENDS = (".", "!", "?", "\n", "\u3002", "\uff01", "\uff1f")  # and the CJK full stop, ! and ?


class Window:
    __slots__ = ("_allowed_tail", "_check_chars", "_new", "_new_chars", "_window_chars")

    def __init__(self, *, check_chars: int, window_chars: int) -> None:
        self._check_chars = max(1, check_chars)
        self._window_chars = max(0, window_chars)
        self._allowed_tail = ""  # the end of the text already allowed, at most window_chars
        self._new: list[str] = []  # held back, not yet checked
        self._new_chars = 0

    def add(self, text: str) -> bool:
        """Holds `text` back; whether a check is due now."""
        if text:
            self._new.append(text)
            self._new_chars += len(text)
        if self._new_chars >= self._check_chars:
            return True
        return self._new_chars * 4 >= self._check_chars and text.rstrip(" \t").endswith(_SENTENCE_ENDS)

    @property
    def pending(self) -> bool:
        """Whether text is held back unchecked."""
        return self._new_chars > 0

    @property
    def checked(self) -> str:
        """The already-allowed part of the window (what the app has already got the end of)."""
        return self._allowed_tail

    @property
    def new(self) -> str:
        return "".join(self._new)

    def text(self) -> str:
        """What the guardrail is asked about: the allowed tail, then the new text."""
        return self._allowed_tail + self.new

    def allow(self, new: str | None = None) -> None:
        """The new text (or what a guardrail replaced it with) is allowed and goes out."""
        allowed = self.new if new is None else new
        tail = self._allowed_tail + allowed
        self._allowed_tail = tail[-self._window_chars :] if self._window_chars else ""
        self._new.clear()
        self._new_chars = 0
