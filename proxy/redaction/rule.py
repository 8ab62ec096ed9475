"""What a policy masks, compiled once per snapshot: the kinds, the custom patterns, the placeholders' shape.

`RedactionRule` is built when a snapshot is loaded (never per request); its
`find` is pure and shared by every request's `Pseudonymizer`. The built-in
kinds are the personal-data detector's own (`proxy.policy.personal_data`):
the same patterns and checks that raise a request's class decide what is
masked, so the two never disagree on what counts as an e-mail or a card.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from proxy.policy.personal_data import ALL_KINDS, Found, PersonalDataDetector

#: Any text shaped like a placeholder: `<EMAIL_1>`, `<PAYMENT_CARD_12>`, `<EMPLOYEE_ID_3>`.
#: Placeholders hold one `<` (their first character) and end at their only `>`, so no placeholder
#: is a prefix of another (`<EMAIL_1>` / `<EMAIL_10>`), and a text's possible start of one is the
#: tail from its last `<` on.
PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_[1-9][0-9]*>")

#: A custom pattern's name: it becomes the placeholder's label (`employee_id` -> `<EMPLOYEE_ID_1>`).
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def label(kind: str) -> str:
    """The placeholder label of a kind: `payment_card` -> `PAYMENT_CARD`."""
    return kind.upper()


class RedactionRule:
    """One policy's masking: which built-in kinds, which named custom patterns, and whether answers are restored.

    `kinds=None` masks every built-in kind; `kinds=()` none (custom patterns only).
    `custom` maps a name to a regular expression (Python `re` syntax) whose every match is masked.
    `restore=False` leaves the placeholders in the answer (for apps that must not see the values).
    """

    __slots__ = ("_custom", "_detector", "custom_names", "kinds", "restore")

    def __init__(
        self, *, kinds: Iterable[str] | None = None, custom: Mapping[str, str] | None = None, restore: bool = True
    ) -> None:
        wanted = tuple(ALL_KINDS if kinds is None else kinds)
        self._detector = PersonalDataDetector(kinds=wanted) if wanted else None
        self.kinds: tuple[str, ...] = self._detector.kinds if self._detector else ()
        compiled: list[tuple[str, re.Pattern[str]]] = []
        for name, source in (custom or {}).items():
            if not _NAME.fullmatch(name):
                raise ValueError(f"custom pattern name {name!r} must match {_NAME.pattern} (it names the placeholder)")
            if name in ALL_KINDS:
                raise ValueError(f"custom pattern name {name!r} is a built-in kind; choose another name")
            try:
                pattern = re.compile(source)
            except re.error as exc:
                raise ValueError(f"custom pattern {name!r} is not a valid regular expression: {exc}") from None
            if pattern.match("") is not None:
                raise ValueError(f"custom pattern {name!r} matches the empty string; it must match something")
            compiled.append((name, pattern))
        self._custom = tuple(compiled)
        self.custom_names: tuple[str, ...] = tuple(name for name, _ in compiled)
        self.restore = restore

    @property
    def masks_anything(self) -> bool:
        return bool(self.kinds or self._custom)

    def find(self, text: str) -> list[Found]:
        """The spans to mask in `text`, in order, none overlapping (the earliest, then the longest, wins)."""
        found = self._detector.find(text) if self._detector is not None else []
        if self._custom:
            for name, pattern in self._custom:
                found.extend(Found(m.start(), m.end(), name) for m in pattern.finditer(text) if m.end() > m.start())
        if len(found) < 2:
            return found
        found.sort(key=_earliest_longest)
        kept: list[Found] = []
        end = -1
        for span in found:
            if span.start >= end:
                kept.append(span)
                end = span.end
        return kept

    def counts(self) -> dict[str, int]:
        """A zero count for every kind this rule masks (so metrics can say 0 as well as n)."""
        return dict.fromkeys((*self.kinds, *self.custom_names), 0)


def _earliest_longest(span: Found) -> tuple[int, int]:
    return span.start, -span.end
