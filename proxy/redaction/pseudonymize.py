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
from collections.abc import Iterator, Mapping
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
_DATA_URL = frozenset(f"{d}{a}{t}{a2}:" for d in "dD" for a in "aA" for t in "tT" for a2 in "aA")

_Path = tuple[str | int, ...]


class Redacted(NamedTuple):
    request: ChatRequest  # the request to send (the same object when nothing was masked)
    counts: Mapping[str, int]  # values masked, by kind (every kind of the rule, 0 included)
    unmasked: Mapping[str, int]  # found where it cannot be masked, by kind: refuse the request if any


class _Collected:
    """One walk's strings: those to rewrite (with where they are), tool-call arguments, and the rest."""

    __slots__ = ("arguments", "keys", "paths", "texts", "unread")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.paths: list[_Path] = []
        self.arguments: list[tuple[_Path, str]] = []
        self.unread: list[str] = []
        self.keys: set[str] = set()


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
        self._note_taken("\n".join(walk.texts))
        for _, raw in walk.arguments:
            self._note_taken(raw)
        changes: dict[_Path, str] = {}
        for path, raw in walk.arguments:
            masked = self._redact_arguments(raw, counts=counts, unread=unread)
            if masked is not raw:
                changes[path] = masked
        for index, spans in _spans_by_text(self._rule, walk.texts).items():
            changes[walk.paths[index]] = self._replace(walk.texts[index], spans, counts)
        for index, text in enumerate(walk.texts):  # what a provider decodes: checked after masking
            if text[:5] in _DATA_URL or "%" in text:
                unread.append(changes.get(walk.paths[index], text))
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
    """Every string under `root`, sorted into: to rewrite, tool-call arguments, not rewritable."""
    walk = _Collected()
    stack: list[tuple[Any, _Path, bool]] = [(root, (), False)]  # (node, path, whether it names things)
    while stack:
        node, path, names = stack.pop()
        items: Iterator[tuple[str | int, Any]]
        if type(node) is dict:
            walk.keys.update(key for key in node if type(key) is str)
            items = iter(node.items())
        elif type(node) is list:
            items = enumerate(node)
        else:
            continue
        for key, value in items:
            field = key if type(key) is str else None
            value_names = names if field is None else naming and field in _NAMING
            if type(value) is str:
                if value_names or (field is None and names) or (naming and field in _PAYLOAD):
                    walk.unread.append(value)
                elif naming and field == _ARGUMENTS:
                    walk.arguments.append(((*path, key), value))
                else:
                    walk.texts.append(value)
                    walk.paths.append((*path, key))
            elif type(value) is dict or type(value) is list:
                stack.append((value, (*path, key), value_names))
    return walk


def _spans_by_text(rule: RedactionRule, texts: list[str]) -> dict[int, list[Found]]:
    """The spans in each text, found in one pass over the texts joined by newlines.

    One pass instead of one per string: the detector's per-call cost dominates on many short strings.
    No built-in pattern matches across a newline; a custom one might, and then the texts it spans
    are searched again one by one."""
    if not texts:
        return {}
    starts: list[int] = []
    position = 0
    for text in texts:
        starts.append(position)
        position += len(text) + 1
    by_text: dict[int, list[Found]] = {}
    again: set[int] = set()
    for span in rule.find("\n".join(texts)):
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
