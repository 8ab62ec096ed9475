"""Masking one request: every found value becomes a placeholder, the same value the same one.

A `Pseudonymizer` lives as long as one request (all its attempts): the
mapping between placeholders and values is in it and nowhere else (never
logged, never in a span). `redact_chat` returns a rewritten copy of the
internal request (copied only along the paths that changed, so an untouched
request is returned as it is and the original stays intact for a backend
that needs no masking).

What is rewritten: every string value of the request (message contents and
their parts, system prompts, tool results, tool descriptions and schemas,
`stop`, `user`, metadata...), except the few that name things rather than say
them (`role`, `type`, ids, `name`s of tools, `model`...), and the parsed JSON of
tool-call arguments, re-encoded only when something in it changed. What is
not rewritten, because a placeholder would break it or it cannot be edited in
place: those naming fields, object keys, URLs and binary payloads (images,
audio, files), and percent-encoded or data-URL text. Those are read as the
classifier reads them (`proxy.policy.classify.body_text`), and what the rule
would have masked there is reported as `unmasked`: the caller refuses such a
request rather than send a value it promised to mask.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from itertools import accumulate
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson

from proxy.policy.classify import body_text
from proxy.policy.personal_data import Found
from proxy.providers.base import ChatRequest, ChatResponse
from proxy.redaction.restore import StreamRestorer, restore_response
from proxy.redaction.rule import PLACEHOLDER, RedactionRule, label

#: Fields whose string values name or select things: a placeholder there would break the request.
_NAMING = frozenset(
    {
        "role",
        "type",
        "id",
        "tool_call_id",
        "name",
        "model",
        "format",
        "detail",
        "file_id",
        "tool_choice",
        "service_tier",
        "reasoning_effort",
        "modalities",
        "voice",
    }
)
#: Fields holding a URL or a binary payload (image_url.url, input_audio.data, file.file_data).
_PAYLOAD = frozenset({"url", "data", "file_data"})
_ARGUMENTS = "arguments"
_SPECIAL = _NAMING | _PAYLOAD | {_ARGUMENTS}
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")  # "jane%40example.com": read decoded by whoever fetches it
_DATA_SCHEME = re.compile(r"(?i)data:")
_DATA_URL = frozenset(f"{d}{a}{t}{a2}:" for d in "dD" for a in "aA" for t in "tT" for a2 in "aA")

_Path = tuple[str | int, ...]


class Redacted(NamedTuple):
    request: ChatRequest  # the request to send (the same object when nothing was masked)
    counts: Mapping[str, int]  # values masked, by kind (every kind of the rule, 0 included)
    unmasked: Mapping[str, int]  # found where it cannot be masked, by kind: refuse the request if any


class _Collected:
    """One walk's strings: those to rewrite (with where they are), tool-call arguments, and the rest."""

    __slots__ = ("arguments", "keys", "places", "texts", "unread")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.places: list[tuple[_Path, str | int]] = []  # each text's container's path, and its key there
        self.arguments: list[tuple[_Path, str]] = []
        self.unread: list[str] = []
        self.keys: set[Any] = set()  # JSON's are strings; others are dropped when read


class Pseudonymizer:
    """One request's masking and, when the rule says so, the restoring of its answer."""

    __slots__ = ("_by_value", "_next", "_originals", "_rule", "_taken")

    def __init__(self, rule: RedactionRule) -> None:
        self._rule = rule
        self._by_value: dict[str, str] = {}  # value -> placeholder
        self._originals: dict[str, str] = {}  # placeholder -> value
        self._next: dict[str, int] = {}  # kind -> last number given
        self._taken: set[str] = set()  # placeholder-shaped text the request already holds

    @property
    def restores(self) -> bool:
        """Whether answers get the values back (else the app sees the placeholders)."""
        return self._rule.restore and bool(self._originals)

    @property
    def placeholders(self) -> Mapping[str, str]:
        """placeholder -> original value; read-only, for the restorers and the tests only."""
        return MappingProxyType(self._originals)

    # --- masking ---------------------------------------------------------------------------------

    def redact_chat(self, request: ChatRequest) -> Redacted:
        counts = self._rule.counts()
        unread: list[str] = []
        new = self._redact_tree(request, naming=True, counts=counts, unread=unread)
        return Redacted(new, MappingProxyType(counts), MappingProxyType(self._unmasked(unread)))

    def redact_text(self, text: str) -> str:
        """One text (captured content for telemetry, say), with this request's placeholders."""
        spans = self._rule.find(text)
        if not spans:
            return text
        self._note_taken(text)
        return self._replace(text, spans, None)

    def _redact_tree(self, root: Any, *, naming: bool, counts: dict[str, int], unread: list[str]) -> Any:
        walk = _collect(root, naming=naming)
        unread += walk.unread
        unread += walk.keys
        joined = "\n".join(walk.texts)
        self._note_taken(joined)
        for _, raw in walk.arguments:
            self._note_taken(raw)
        changes: dict[_Path, str] = {}
        for path, raw in walk.arguments:
            arguments = self._redact_arguments(raw, counts=counts, unread=unread)
            if arguments is not raw:
                changes[path] = arguments
        masked: dict[int, str] = {}
        for index, spans in _spans_by_text(self._rule, walk.texts, joined).items():
            masked[index] = text = self._replace(walk.texts[index], spans, counts)
            path, key = walk.places[index]
            changes[(*path, key)] = text
        if "%" in joined or _DATA_SCHEME.search(joined):  # what a provider decodes: checked after masking
            for index, text in enumerate(walk.texts):
                if text[:5] in _DATA_URL or ("%" in text and _PERCENT_ESCAPE.search(text)):
                    unread.append(masked.get(index, text))
        return _rebuilt(root, changes) if changes else root

    def _redact_arguments(self, raw: str, *, counts: dict[str, int], unread: list[str]) -> str:
        """Tool-call arguments: their JSON's values are masked (decoded, so escapes cannot hide one)."""
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, (dict, list)):  # not JSON (a model's broken output): masked as text
            spans = self._rule.find(raw)
            return self._replace(raw, spans, counts) if spans else raw
        masked = self._redact_tree(parsed, naming=False, counts=counts, unread=unread)
        return raw if masked is parsed else orjson.dumps(masked).decode()

    def _replace(self, text: str, spans: list[Found], counts: dict[str, int] | None) -> str:
        parts: list[str] = []
        position = 0
        for start, end, kind in spans:
            parts += (text[position:start], self._placeholder(kind, text[start:end]))
            position = end
            if counts is not None:
                counts[kind] = counts.get(kind, 0) + 1
        parts.append(text[position:])
        return "".join(parts)

    def _placeholder(self, kind: str, value: str) -> str:
        placeholder = self._by_value.get(value)
        if placeholder is None:
            number = self._next.get(kind, 0)
            while True:  # never one the request already holds as text: its answer would be "restored"
                number += 1
                placeholder = f"<{label(kind)}_{number}>"
                if placeholder not in self._taken:
                    break
            self._next[kind] = number
            self._by_value[value] = placeholder
            self._originals[placeholder] = value
        return placeholder

    def _note_taken(self, text: str) -> None:
        if "<" in text:
            self._taken.update(PLACEHOLDER.findall(text))

    def _unmasked(self, unread: list[str]) -> dict[str, int]:
        if not unread:
            return {}
        found: dict[str, int] = {}
        for span in self._rule.find(body_text(unread)):
            found[span.kind] = found.get(span.kind, 0) + 1
        return found

    # --- restoring ---------------------------------------------------------------------------------

    def stream_restorer(self) -> StreamRestorer | None:
        """A restorer for one streamed answer, or None when there is nothing to restore (or no restoring)."""
        return StreamRestorer(self._originals) if self.restores else None

    def restore_response(self, response: ChatResponse) -> ChatResponse:
        """A whole answer with the values back (the same object when there is nothing to restore)."""
        return restore_response(response, self._originals) if self.restores else response


def _collect(root: Any, *, naming: bool) -> _Collected:
    """Every string under `root`, sorted into: to rewrite, tool-call arguments, not rewritable.

    The hot loop of masking (an agent's request holds thousands of short strings): one type test
    and one set lookup per value, and a string's place kept as (its container's path, its key)."""
    walk = _Collected()
    texts, places, unread, arguments = walk.texts, walk.places, walk.unread, walk.arguments
    special = _SPECIAL if naming else frozenset()
    naming_keys = _NAMING if naming else frozenset()
    stack: list[tuple[Any, _Path, bool]] = [(root, (), False)]  # (container, path, whether it names things)
    while stack:
        node, path, names = stack.pop()
        if type(node) is dict:
            walk.keys.update(node)
            for key, value in node.items():
                kind = type(value)
                if kind is str:
                    if key not in special:
                        texts.append(value)
                        places.append((path, key))
                    elif key == _ARGUMENTS:
                        arguments.append(((*path, key), value))
                    else:
                        unread.append(value)
                elif kind is dict or kind is list:
                    stack.append((value, (*path, key), key in naming_keys))
        elif type(node) is list:
            for position, value in enumerate(node):
                kind = type(value)
                if kind is str:
                    if names:
                        unread.append(value)
                    else:
                        texts.append(value)
                        places.append((path, position))
                elif kind is dict or kind is list:
                    stack.append((value, (*path, position), names))
    return walk


def _spans_by_text(rule: RedactionRule, texts: list[str], joined: str) -> dict[int, list[Found]]:
    """The spans in each text, found in one pass over `joined` (the texts joined by newlines).

    One pass instead of one per string: the detector's per-call cost dominates on many short strings.
    No built-in pattern matches across a newline; a custom one might, and then the texts it spans
    are searched again one by one."""
    found = rule.find(joined)
    if not found:
        return {}
    starts = [total + index for index, total in enumerate(accumulate(map(len, texts), initial=0))]
    by_text: dict[int, list[Found]] = {}
    again: set[int] = set()
    for span in found:
        index = bisect.bisect_right(starts, span.start) - 1
        offset = starts[index]
        if span.end > offset + len(texts[index]):  # across texts: search those texts one by one
            again.update(range(index, bisect.bisect_left(starts, span.end)))
            continue
        by_text.setdefault(index, []).append(Found(span.start - offset, span.end - offset, span.kind))
    for index in again:
        by_text.pop(index, None)
        if spans := rule.find(texts[index]):
            by_text[index] = spans
    return by_text


def _rebuilt(root: Any, changes: dict[_Path, str]) -> Any:
    """`root` with the strings at `changes`' paths replaced, copying only the containers on those paths."""
    copies: dict[_Path, Any] = {(): _copy(root)}
    for path, text in changes.items():
        node = copies[()]
        for depth in range(1, len(path)):
            prefix = path[:depth]
            child = copies.get(prefix)
            if child is None:
                child = copies[prefix] = _copy(node[path[depth - 1]])
                node[path[depth - 1]] = child
            node = child
        node[path[-1]] = text
    return copies[()]


def _copy(node: Any) -> Any:
    return dict(node) if type(node) is dict else list(node)
