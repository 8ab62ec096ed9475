"""Personal data in prompts: count what looks like it, so a request can be raised to data class `personal`.

A safety net for the honest mistake (an app that forgot to label a request),
not a DLP engine against someone hiding data: ASCII forms only, no names or
addresses, no obfuscation ("john at example dot com", full-width digits).
A false positive pushes traffic to narrower providers, so every kind needs a
checksum or a tight structure, and the values are never kept: `Findings`
holds counts per kind, nothing else.

Kinds, and why each is in:

- `email`: `local@domain.tld`, read from the `@`: a local-part character
  before it, then a domain whose TLD is alphabetic (or IDN `xn--`), so
  `pkg@1.2.3`, `icon@2x.png`, `@decorator`, `user@localhost` and the scp form
  `git@github.com:org/repo` are not counted. Reserved documentation domains
  (example.com) are counted on purpose: a test that writes one means it.
- `phone`: international format only: `+`, a country code not starting with
  0, 8-15 digits in all (E.164 allows at most 15; below 8 is mostly
  `+100`-style deltas; a trunk `(0)` counts as one), up to two of ` .-()`
  between digits (`+1 (415) 555-2671`, `+44 (0)20 7946 0958`). Signed
  decimals (`+48.856614`) are out, and so are national forms without `+`
  (`(415) 555-2671`): they cannot be told from order numbers and counts.
- `payment_card`: 13-19 digits, bare or in groups (4 first, then 3-6 each, one
  kind of separator; a CVV or expiry after the number is tolerated), a known
  IIN range with its lengths (Visa, Mastercard, Amex, Discover, JCB, Diners,
  UnionPay, Maestro, Mir, RuPay) and a valid Luhn sum. Millisecond
  timestamps and snowflake IDs start with 1 and fail the IIN.
- `iban`: country code, 2 check digits, BBAN; bare or spaced every 4; the
  length must be the SWIFT registry's for the country, and ISO 7064 mod 97-10
  must hold. Upper case only, as IBANs are printed.
- `us_ssn`: `AAA-GG-SSSS` with dashes only (bare 9 digits are too common);
  area 000, 666 and 9xx (never issued / ITINs), group 00 and serial 0000
  are out.
- `uk_nino`: two prefix letters (first not D F I Q U V, second not D F I O Q
  U V; BG GB KN NK NT TN ZZ never allocated), six digits, suffix A-D, with
  or without the usual spaces. HMRC's own example `QQ 12 34 56 C` is thus not
  counted.
- `es_dni`: Spanish DNI (8 digits) and NIE (X/Y/Z + 7 digits) with the
  mod-23 check letter.

Deliberately out: Dutch BSN, Polish PESEL, French NIR and similar bare-digit
IDs (an 11-check on 9-11 plain digits hits every other order number), names,
postal addresses, dates of birth, IP addresses (need context, not a pattern).

Cost is linear in the prompt. Every pattern starts with one literal or one
character class, so `re` skips to candidates in C, then a fixed-width
lookbehind checks the candidate opens a token (for e-mail: ends a local
part), so a run of characters is tried once, not once per position.
Repetitions are possessive or bounded, so a failed try cannot re-read what it
consumed. Kinds led by a digit or capital share one alternation (one pass);
the `@`, `+` and `-` led ones run only when that character occurs. What is
left is per finding (a Luhn or mod-97 check in Python): bench/personal_data.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

ALL_KINDS: tuple[str, ...] = ("email", "phone", "payment_card", "iban", "us_ssn", "uk_nino", "es_dni")

# --- patterns led by a literal: (kind, the literal, pattern) ------------------------------------

_EMAIL = (
    r"@(?<=[A-Za-z0-9_%+-]@)"  # a local part ends right here (its start does not matter)
    r"(?![0-9]{1,2}x\.)"  # icon@2x.png
    r"(?:[A-Za-z0-9-]{1,63}+\.){1,126}"  # labels: RFC 1035 sizes bound one try; backtracks by whole labels
    r"(?:[A-Za-z]{2,63}+|xn--[A-Za-z0-9-]{1,59}+)"
    r"(?![\w-]|\.[\w-]|:[\w/~])"  # the whole domain, not git@host:path
)
_PHONE = (
    r"\+(?<![\w+]\+)"  # opens a token: not a+b, not ++
    r"(?=[1-9][0-9 .()-]{7})"  # cheap gate: '+1 +1 +1' fails here
    r"[1-9](?:[0-9]{7,14}+(?!\w|\.[0-9])"  # +14155552671: 8-15 digits, E.164's limit
    r"|(?![0-9]*+\.[0-9]++(?![ .()-]{1,2}[0-9]))"  # +48.856614 is a signed decimal, not a number
    r"(?:[ .()-]{0,2}[0-9]){7,14}+(?![ .()-]{0,2}[0-9]|\w))"  # +1 (415) 555-2671, +44 (0)20 7946 0958
)
_US_SSN = (
    r"-(?<=[0-9]{3}-)(?<![\w.+-][0-9]{3}-)"  # three digits opening a token, then '-'
    r"(?<!000-)(?<!666-)(?<!9[0-9]{2}-)"
    r"(?!00)[0-9]{2}-(?!0000)[0-9]{4}(?![\w-])"
)
_LITERAL_LED: tuple[tuple[str, str, str], ...] = (
    ("email", "@", _EMAIL),
    ("phone", "+", _PHONE),
    ("us_ssn", "-", _US_SSN),
)

# --- checks on a candidate ----------------------------------------------------------------------

# (lowest prefix, highest prefix, lengths): prefixes compare as strings of equal width.
_Ranges = tuple[tuple[str, str, frozenset[int]], ...]
_CARD_RANGES: _Ranges = (
    ("4", "4", frozenset({13, 16, 19})),  # Visa
    ("51", "55", frozenset({16})),
    ("2221", "2720", frozenset({16})),  # Mastercard
    ("34", "34", frozenset({15})),
    ("37", "37", frozenset({15})),  # Amex
    ("6011", "6011", frozenset(range(16, 20))),
    ("644", "649", frozenset(range(16, 20))),
    ("65", "65", frozenset(range(16, 20))),  # Discover
    ("3528", "3589", frozenset(range(16, 20))),  # JCB
    ("300", "305", frozenset(range(14, 20))),
    ("36", "36", frozenset(range(14, 20))),
    ("38", "39", frozenset(range(16, 20))),  # Diners
    ("62", "62", frozenset(range(16, 20))),  # UnionPay
    ("2200", "2204", frozenset(range(16, 20))),  # Mir
    ("60", "60", frozenset({16})),  # RuPay
    ("50", "50", frozenset(range(13, 20))),
    ("56", "58", frozenset(range(13, 20))),
    ("63", "63", frozenset(range(13, 20))),
    ("67", "67", frozenset(range(13, 20))),  # Maestro
)


def _by_first_two(ranges: _Ranges) -> Mapping[str, _Ranges]:
    """The ranges a number can be in, by its first two digits: one dict lookup instead of a walk."""
    found: dict[str, _Ranges] = {}
    for lo, hi, lengths in ranges:
        for n in range(int((lo + "0")[:2]), int((hi + "9")[:2]) + 1):
            found[f"{n:02d}"] = (*found.get(f"{n:02d}", ()), (lo, hi, lengths))
    return MappingProxyType(found)


_CARD_IIN = _by_first_two(_CARD_RANGES)
_LUHN_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")  # digit -> digit sum of 2 x digit

# SWIFT IBAN registry lengths, the countries people actually paste.
_IBAN_LENGTHS: Mapping[str, int] = MappingProxyType(
    {
        "AD": 24,
        "AE": 23,
        "AL": 28,
        "AT": 20,
        "AZ": 28,
        "BA": 20,
        "BE": 16,
        "BG": 22,
        "BH": 22,
        "BR": 29,
        "BY": 28,
        "CH": 21,
        "CR": 22,
        "CY": 28,
        "CZ": 24,
        "DE": 22,
        "DK": 18,
        "DO": 28,
        "EE": 20,
        "EG": 29,
        "ES": 24,
        "FI": 18,
        "FO": 18,
        "FR": 27,
        "GB": 22,
        "GE": 22,
        "GI": 23,
        "GL": 18,
        "GR": 27,
        "GT": 28,
        "HR": 21,
        "HU": 28,
        "IE": 22,
        "IL": 23,
        "IQ": 23,
        "IS": 26,
        "IT": 27,
        "JO": 30,
        "KW": 30,
        "KZ": 20,
        "LB": 28,
        "LC": 32,
        "LI": 21,
        "LT": 20,
        "LU": 20,
        "LV": 21,
        "MC": 27,
        "MD": 24,
        "ME": 22,
        "MK": 19,
        "MR": 27,
        "MT": 31,
        "MU": 30,
        "NL": 18,
        "NO": 15,
        "PK": 24,
        "PL": 28,
        "PS": 29,
        "PT": 25,
        "QA": 29,
        "RO": 24,
        "RS": 22,
        "SA": 24,
        "SC": 31,
        "SE": 24,
        "SI": 19,
        "SK": 24,
        "SM": 27,
        "ST": 25,
        "SV": 28,
        "TL": 23,
        "TN": 24,
        "TR": 26,
        "UA": 29,
        "VA": 22,
        "VG": 24,
        "XK": 20,
    }
)
_IBAN_LETTERS = {ord(c): str(ord(c) - ord("A") + 10) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}  # A=10 .. Z=35
# "A[DELTZ]|B[AEGHRY]|...": the country must be in the table before anything else is read.
_IBAN_COUNTRIES = "|".join(
    f"{first}[{''.join(c[1] for c in _IBAN_LENGTHS if c[0] == first)}]"
    for first in sorted({c[0] for c in _IBAN_LENGTHS})
)

_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"
_NIE_PREFIX = str.maketrans("XYZ", "012", "-")


def _card_ok(candidate: str) -> bool:
    if _card_number_ok(candidate.replace(" ", "").replace("-", "")):
        return True
    groups = candidate.replace("-", " ").split(" ")  # "4111 1111 1111 1111 123": a CVV after the number
    return any(_card_number_ok("".join(groups[:n])) for n in range(len(groups) - 1, 2, -1))


def _card_number_ok(digits: str) -> bool:
    for lo, hi, lengths in _CARD_IIN.get(digits[:2], ()):
        if len(digits) in lengths and lo <= digits[: len(lo)] <= hi:
            break
    else:
        return False
    # Luhn, the digit sums done in C: a digit's byte is 48 + its value.
    raw = digits.encode()
    return (sum(raw[-1::-2] + raw[-2::-2].translate(_LUHN_DOUBLED)) - 48 * len(raw)) % 10 == 0


def _iban_ok(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    length = _IBAN_LENGTHS[compact[:2]]  # the pattern only lets known countries through
    if len(compact) > length and " " in candidate and length % 4 == 0:
        compact = compact[:length]  # a full last group, then a word in capitals: "... 1332 THEN"
    if len(compact) != length or compact[2:4] in ("00", "01", "99"):  # 02-98 are the only check values
        return False
    if not compact[4:].isdigit():
        return int((compact[4:] + compact[:4]).translate(_IBAN_LETTERS)) % 97 == 1
    # Most BBANs are all digits: only the country needs spelling out, without a translate pass.
    country = _IBAN_LETTERS[ord(compact[0])] + _IBAN_LETTERS[ord(compact[1])]
    return int(f"{compact[4:]}{country}{compact[2:4]}") % 97 == 1


def _dni_ok(candidate: str) -> bool:
    if candidate[0] not in "0123456789XYZ" or (candidate[1] == "-" and candidate[0] not in "XYZ"):
        return False  # the shared pattern lets any capital or digit lead; only a NIE starts with X/Y/Z
    number = candidate[:-1].translate(_NIE_PREFIX)
    return _DNI_LETTERS[int(number) % 23] == candidate[-1]


# --- kinds led by a digit or a capital: branches of one alternation, each after the first char ---

# Every branch starts by matching a character (no lookbehind to dispatch on the first one: that
# costs a nested match per branch per candidate); the checks reject a wrong leading character.
_TOKEN_START = r"[0-9A-Z](?<![\w.+-].)"  # the first char, then: it opens a token
_TOKEN_BRANCHES: tuple[tuple[str, str], ...] = (
    # 4 digits, then: 9-15 more, or groups of 3-6 and maybe a short last one (4-4-4-4-3, 4-6-5, ...)
    (
        "payment_card",
        r"[0-9][0-9]{2}(?:[0-9]{10,16}+|(?P<sep>[ -])[0-9]{3,6}+(?:(?P=sep)[0-9]{3,6}+){1,2}+"
        r"(?:(?P=sep)[0-9]{1,3}+(?![0-9]))?+)(?!\w|\.[0-9])",
    ),
    ("es_dni", r"[0-9][0-9]{6}-?[A-Z](?![\w-])"),  # DNI: 8 digits; NIE: X/Y/Z and 7 digits
    ("es_dni", r"-[0-9]{7}-?[A-Z](?![\w-])"),  # NIE: X-1234567-L
    (
        "iban",
        rf"[A-Z](?<={_IBAN_COUNTRIES})[0-9]{{2}}"
        r"(?:[A-Z0-9]{10,30}+|(?:[ ][A-Z0-9]{4}){2,7}+(?:[ ][A-Z0-9]{1,3})?+)(?!\w)",
    ),
    (
        "uk_nino",
        r"[A-CEGHJ-NPR-TW-Z](?<=[A-CEGHJ-PR-TW-Z].)(?<!BG|GB|KN|NK|NT|TN|ZZ)"
        r"[ ]?[0-9]{2}[ ]?[0-9]{2}[ ]?[0-9]{2}[ ]?[A-D](?!\w)",
    ),
)
_CHECKS: Mapping[str, Callable[[str], bool]] = MappingProxyType(
    {"payment_card": _card_ok, "iban": _iban_ok, "es_dni": _dni_ok}
)


class Found(NamedTuple):
    """One finding's place in a text (what `find` gives the redaction; `scan` never builds these)."""

    start: int
    end: int
    kind: str


# The literal-led patterns match from their literal on: where the value really starts.
_LOCAL_PART = re.compile(r"[A-Za-z0-9._%+-]{1,64}\Z")  # RFC 5321's 64 characters at most
_SSN_LEAD = 3  # the pattern starts at the '-' after the area number


def _email_start(text: str, at: int) -> int:
    local = _LOCAL_PART.search(text, max(0, at - 64), at)
    if local is None:  # unreachable: the pattern's lookbehind saw a local-part character
        return at
    start = local.start()
    while text[start] == ".":  # a local part does not start with a dot ("...jane@x.co": "jane")
        start += 1
    return start


def _card_length(candidate: str) -> int:
    """How much of a matched card candidate is the number: a CVV or expiry after it is not."""
    if _card_number_ok(candidate.replace(" ", "").replace("-", "")):
        return len(candidate)
    groups = candidate.replace("-", " ").split(" ")
    for n in range(len(groups) - 1, 2, -1):  # as `_card_ok`: the longest run of groups that is a number
        if _card_number_ok("".join(groups[:n])):
            return sum(len(group) for group in groups[:n]) + n - 1
    return len(candidate)


def _iban_length(candidate: str) -> int:
    """How much of a matched IBAN candidate is the IBAN: a word in capitals after a full last group is not."""
    length = _IBAN_LENGTHS[candidate[:2]]
    seen = 0
    for position, char in enumerate(candidate):
        if char != " ":
            seen += 1
            if seen == length:
                return position + 1
    return len(candidate)


_LENGTHS: Mapping[str, Callable[[str], int]] = MappingProxyType({"payment_card": _card_length, "iban": _iban_length})


@dataclass(frozen=True, slots=True)
class Findings:
    """How many of each kind were found; only kinds found appear. Never the values."""

    counts: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def __bool__(self) -> bool:
        return bool(self.counts)


class PersonalDataDetector:
    """Compiled once (per snapshot, say); `scan` is pure and safe to share between requests."""

    def __init__(self, *, kinds: Iterable[str] | None = None) -> None:
        wanted = set(ALL_KINDS if kinds is None else kinds)
        if unknown := wanted - set(ALL_KINDS):
            raise ValueError(f"unknown personal data kinds {sorted(unknown)}; known: {', '.join(ALL_KINDS)}")
        self._kinds = tuple(kind for kind in ALL_KINDS if kind in wanted)
        self._literal_led = tuple(
            (kind, literal, re.compile(pattern)) for kind, literal, pattern in _LITERAL_LED if kind in wanted
        )
        branches = [(kind, body) for kind, body in _TOKEN_BRANCHES if kind in wanted]
        self._token_led: re.Pattern[str] | None = None
        self._branches: dict[int, tuple[str, Callable[[str], bool] | None]] = {}
        if branches:
            # An empty group closes each branch, so `match.lastindex` tells which branch matched.
            alternation = "|".join(f"{body}(?P<k{i}>)" for i, (_, body) in enumerate(branches))
            self._token_led = re.compile(f"{_TOKEN_START}(?:{alternation})")
            self._branches = {
                self._token_led.groupindex[f"k{i}"]: (kind, _CHECKS.get(kind)) for i, (kind, _) in enumerate(branches)
            }

    @property
    def kinds(self) -> tuple[str, ...]:
        return self._kinds

    def scan(self, texts: Iterable[str]) -> Findings:
        if isinstance(texts, str):  # iterating a str would scan it one character at a time
            raise TypeError("scan() takes an iterable of texts, not one str")
        counts = dict.fromkeys(self._kinds, 0)
        for text in texts:
            for kind, literal, pattern in self._literal_led:
                if literal in text:  # C-speed skip for the common case
                    counts[kind] += len(pattern.findall(text))  # the list is dropped at once
            if self._token_led is not None:
                for match in self._token_led.finditer(text):
                    kind, check = self._branches[match.lastindex or 0]
                    if check is None or check(match.group()):
                        counts[kind] += 1
        return Findings(counts=MappingProxyType({kind: n for kind, n in counts.items() if n}))

    def find(self, text: str) -> list[Found]:
        """Where each finding is in `text`, in order of start: what redaction replaces.

        The same patterns and checks as `scan`, which stays as it was (counting, never
        building a match object per literal-led finding): this is paid only when a policy masks.
        Spans may overlap only across kinds (a caller keeps the first)."""
        found: list[Found] = []
        add = found.append
        for kind, literal, pattern in self._literal_led:
            if literal in text:
                for match in pattern.finditer(text):
                    start, end = match.span()
                    if kind == "email":
                        start = _email_start(text, start)
                    elif kind == "us_ssn":
                        start -= _SSN_LEAD
                    add(Found(start, end, kind))
        if self._token_led is not None:
            for match in self._token_led.finditer(text):
                kind, check = self._branches[match.lastindex or 0]
                value = match.group()
                if check is None or check(value):
                    start = match.start()
                    length = _LENGTHS.get(kind)
                    add(Found(start, start + (length(value) if length else len(value)), kind))
        found.sort()
        return found
