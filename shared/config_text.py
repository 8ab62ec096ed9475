"""Reading config files that may hold anything, shared by the sidecar's snapshot file and
`modelway dev`'s folder (pure: text in, data or a clean message out).

Both readers keep their last good content whatever a file holds, so these never let a file
crash them or leak it: YAML is parsed with bounded depth (PyYAML's composer recurses once
per level) and bounded size after alias expansion ("billion laughs"); messages name the
line, column and problem but never the line's text (it may be an `apiKey:` line); the
controller's pydantic problems name fields, never input values. `removal_verdict` is the rule both watchers apply
to an edit that drops most of what a file held (a writer caught mid-write).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal

import yaml

if TYPE_CHECKING:  # the sidecar reads its files with this module and never loads pydantic
    from pydantic import ValidationError

MAX_DEPTH = 100  # a snapshot or a resource nests ~10 levels
MAX_NODES = 1_000_000  # values once aliases are expanded


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting before Python's recursion limit does, and alias bombs."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._weights: dict[str, int] = {}

    def compose_document(self) -> Any:
        self._weights.clear()  # anchors are per document
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # types-PyYAML leaves Parser.peek_event unannotated
        if isinstance(event, yaml.AliasEvent):
            self._count(self._weights.get(event.anchor or "", 1), event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        before = self._nodes
        self._count(1, event.start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        anchor = getattr(event, "anchor", None)
        if anchor:
            self._weights[anchor] = self._nodes - before
        return node

    def _count(self, weight: int, mark: Any) -> None:
        self._nodes += weight
        if self._nodes > MAX_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_NODES} values once aliases are expanded", mark
            )


_QUOTED = re.compile(r"'[^']{5,}'|\"[^\"]{5,}\"")


def yaml_problem(exc: yaml.YAMLError) -> str:
    """Line, column and problem, never the line's text."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        # problems quote at most a character or a tag; longer quotes could be file content
        problem = _QUOTED.sub("'…'", exc.problem or exc.context or "syntax error")
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem
    if isinstance(exc, yaml.reader.ReaderError):
        return (
            f"character #x{exc.character:04x} at position {exc.position} is not allowed in YAML"
            if isinstance(exc.character, int)
            else "the file is not readable text"
        )
    return f"unreadable YAML ({type(exc).__name__})"


def parse_yaml(text: str) -> Any:
    """One YAML (or JSON) document, bounded; ValueError with a clean message."""
    documents = list(parse_yaml_documents(text))
    if len(documents) > 1:
        raise ValueError(f"line {documents[1][0]}: expected one document, found more")
    return documents[0][1] if documents else None


def parse_yaml_documents(text: str) -> Iterator[tuple[int, Any]]:
    """(1-based line, value) of each non-empty document, bounded; ValueError with a clean message."""
    loader = BoundedLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                yield node.start_mark.line + 1, loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ValueError(yaml_problem(exc)) from None
    except RecursionError:  # a backstop: the depth bound should stop it first
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()


def decode_text(raw: bytes) -> str:
    """UTF-8 text, or ValueError naming the line of the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None


def validation_problems(exc: ValidationError) -> str:
    """Every problem as `field.path: message`, never the input values."""

    def loc(parts: Iterable[Any]) -> str:
        return ".".join(str(p)[:64] for p in parts) or "(top)"

    return "; ".join(
        f"{loc(e['loc'])}: {e['msg'].removeprefix('Value error, ')[:300]}"
        for e in exc.errors(include_input=False, include_url=False, include_context=False)
    )


Verdict = Literal["apply", "hold", "refuse"]


def removal_verdict(old: Iterable[str], new: Iterable[str], *, explicit_empty: bool) -> tuple[Verdict, list[str]]:
    """What to do with an edit that drops entries (routes, resources): apply it, hold it until the
    file is stable (it drops more than half of them, and at least 2), or refuse it (it drops every
    one without saying so). Returns the verdict and the names removed."""
    old_set, new_set = set(old), set(new)
    removed = sorted(old_set - new_set)
    if not removed:
        return "apply", removed
    if not new_set:
        return ("apply" if explicit_empty else "refuse"), removed
    if len(removed) >= 2 and 2 * len(removed) > len(old_set):
        return "hold", removed
    return "apply", removed
