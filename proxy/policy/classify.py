"""A request's data class: what the app says, never below its workload's floor, raised by what it holds.

Pure: no I/O. The floor (`Policy.default_class`) comes from the controller,
which took it from the workload's annotations and its policies; the app can
only ask for more protection (the `x-modelway-data-class` header), never less.
When the workload's policy asks for it, the request is scanned for personal
data (every string it will send, not only the prompt), and a hit raises the
class to `personal`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import msgspec

from proxy.errors import bad_request
from proxy.snapshot import DATA_CLASS_HEADER, DATA_CLASS_RANK, DATA_CLASSES, DataClass, Policy

if TYPE_CHECKING:
    from proxy.policy.personal_data import PersonalDataDetector

_RANK = DATA_CLASS_RANK
PERSONAL: DataClass = "personal"


class Classification(msgspec.Struct, frozen=True):
    data_class: DataClass
    # Why the class is above what the app asked for (empty when it is not), for the audit log.
    raised_because: str = ""
    # What the personal-data scan found: how many of each kind, for the metrics; never the values.
    found: Mapping[str, int] = msgspec.field(default_factory=dict)


class Classifier:
    """Built once per snapshot; `classify` is what a request pays."""

    def __init__(self, *, policy: Policy) -> None:
        self._floor: DataClass = policy.default_class
        self._detector: PersonalDataDetector | None = None
        if policy.detect_personal_data:  # its patterns are loaded by the snapshots that scan, at build time
            from proxy.policy.personal_data import PersonalDataDetector

            self._detector = PersonalDataDetector()
        self._unchanged = Classification(self._floor)

    def classify(self, *, header: str | None, texts: Callable[[], Iterable[str]]) -> Classification:
        """`texts` is only called when a scan is due, so requests without one never walk the prompt."""
        asked: DataClass = self._floor
        raised = ""
        if header is not None:
            value = header.strip().lower()
            if value not in _RANK:
                raise bad_request(
                    f"header {DATA_CLASS_HEADER} must be one of {', '.join(DATA_CLASSES)}; got {header!r}",
                    code="invalid_data_class",
                )
            if _RANK[value] >= _RANK[self._floor]:
                asked = value  # type: ignore[assignment]  # checked against DATA_CLASSES above
            else:
                raised = (
                    f"the workload's default is {self._floor} (the app asked for {value}; "
                    "a request may not go below its workload's default)"
                )
        if self._detector is not None and _RANK[asked] < _RANK[PERSONAL]:
            findings = self._detector.scan(texts())
            if findings:
                kinds = ", ".join(sorted(findings.counts))  # kinds only: what was found is never logged
                return Classification(PERSONAL, f"personal data detected ({kinds})", findings.counts)
        if not raised and asked == self._floor:
            return self._unchanged
        return Classification(asked, raised)


def chat_texts(request: Any) -> Iterator[str]:
    """The text a provider can read in a chat request, as one string, whatever the request's shape.

    `request` is the internal form, which every translator builds its provider's body from; the
    same-API pass-through sends the app's own body, which the request path scans as well
    (`proxy.request.passthrough.sendable_texts`).
    """
    yield body_text(request)


def embedding_texts(body: Any) -> Iterator[str]:
    """The text of an embeddings request, as one string; token-id inputs are numbers, not text."""
    yield body_text(body)


# Walking the whole body, not a list of known fields: APIs grow fields (tool schemas, metadata,
# file parts...) faster than a list is kept up, and every string in the body is sent, so every
# string is read, and every key (property names, metadata). Skipped is only what the detector
# cannot read as text: numbers (token ids, vectors) and base64 (images, PDFs, audio: their
# pixels and pages are not read; their names are). Decoded as a provider decodes them: text
# files in data URLs, and percent-encoding (an address in an image URL's query).

#: A list that starts with one of these may be all numbers (token ids, a vector): one C loop tells.
_NUMBERS = frozenset({int, float, bool})
#: Shorter strings are scanned as they are, whatever they look like.
_BLOB_MIN = 1024
#: Base64 (standard or URL-safe) does not hold an '@', a space or a '.'; a run of it is binary.
_BASE64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_="
#: Binary data mixes cases and digits within a few characters; a long run of digits and '+'
#: (phone numbers back to back) or of capitals and digits (IBANs) is text, even without spaces.
_MIXED = re.compile(r"(?=.*[a-z])(?=.*[A-Z])(?=.*[0-9])", re.DOTALL)
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
#: The scheme, as it may be spelt (RFC 3986: any case).
_DATA = frozenset(f"{d}{a}{t}{a2}:" for d in "dD" for a in "aA" for t in "tT" for a2 in "aA")
#: Data URL media types a provider reads as text once decoded (RFC 2397: none means text/plain).
_TEXT_MEDIA = re.compile(
    r"(?:text/.*|application/(?:json|xml|yaml|x-yaml|csv|x-ndjson|javascript|sql)"
    r"|[^;]*\+(?:json|xml)|)",
    re.IGNORECASE,
)


def body_text(body: Any) -> str:
    """Every string in `body` (values, and keys once each; any depth, any shape), joined by newlines.

    One scan of the joined text finds exactly what a scan of each string would: no pattern of the
    detector matches across a newline, and a newline bounds a token as the end of a string does.
    One scan instead of hundreds saves the detector's per-call cost, which dominates on the many
    short strings of tool schemas. Never raises: any JSON shape (and any Python one) is walked.
    """
    strings: list[str] = []
    keys: set[Any] = set()  # each once: "type" or "description" a thousand times is one text
    add, keep = strings.append, keys.update
    stack: list[Any] = [body]
    push, pop = stack.append, stack.pop
    while stack:
        node = pop()
        kind = type(node)
        if kind is dict:
            keep(node)  # JSON keys are strings (others are dropped at the join)
            values: Any = node.values()
        elif kind is list:
            if node and type(node[0]) in _NUMBERS and _numbers_only(node):
                continue
            values = node
        else:
            values = (node,)
        for value in values:
            kind = type(value)
            if kind is str:
                # the cheap tests first: most strings are short, plain words
                add(_readable(value) if len(value) >= _BLOB_MIN or "%" in value or ":" in value else value)
            elif kind is dict or kind is list:
                push(value)
            elif value is None or kind is int or kind is float or kind is bool:
                continue
            elif isinstance(value, str):  # subclasses, from Python callers: read as plain strings
                add(_readable(str(value)))
            elif isinstance(value, Mapping):
                push(dict(value))
            elif isinstance(value, (list, tuple)):
                push(list(value))
    strings += keys if all(type(key) is str for key in keys) else (k for k in keys if type(k) is str)
    return "\n".join(strings)


def _numbers_only(items: list[Any]) -> bool:
    """Token ids, vectors: a list of numbers is skipped in one C loop (sum stops at a non-number)."""
    try:
        sum(items)
    except (TypeError, OverflowError):
        return False
    return True


def _readable(text: str) -> str:
    """What a provider can read of a string: data URLs and percent-encoding decoded, base64 dropped."""
    if text[:5] in _DATA:
        head, comma, data = text.partition(",")
        if comma:
            return f"{_unquoted(head)}\n{_data_url_body(head, data)}"
    if len(text) >= _BLOB_MIN and _is_base64(text[:256]) and _MIXED.match(text[:256]) and _is_base64(text):
        return ""  # audio or a file as bare base64: binary (prose fails the first test, at once)
    return _unquoted(text)


def _unquoted(text: str) -> str:
    """`jane%40example.com` in a URL's query is read (and logged) by whoever fetches it."""
    return unquote(text) if "%" in text and _ESCAPE.search(text) else text


def _data_url_body(head: str, data: str) -> str:
    """The readable part of a data URL's data: `head` is `data:<media type>[;param]*`."""
    params = head[5:].split(";")
    if "base64" not in (param.strip().lower() for param in params[1:]):
        return _unquoted(data)  # data:text/plain,Hello%20world: percent-encoded text
    # Base64 is binary to the detector; anything else in it is read as it is.
    readable = "" if _is_base64(data) else data
    if _TEXT_MEDIA.fullmatch(params[0].strip()):  # a text file: the provider decodes and reads it
        with contextlib.suppress(ValueError, binascii.Error):  # not base64: `readable` has it as it is
            readable += "\n" + base64.b64decode(data).decode("utf-8", "replace")
    # An image, a PDF, audio: only their names (in `head`) are text.
    return readable


def _is_base64(text: str) -> bool:
    return text.isascii() and not text.encode("ascii").translate(None, _BASE64_CHARS)
