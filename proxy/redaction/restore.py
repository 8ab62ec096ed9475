"""Putting the values back into an answer: whole, or streamed delta by delta.

A placeholder may arrive split anywhere across a stream's deltas (`<EM`,
`AIL_1`, `>`): a `TextRestorer` (one per choice and field) holds back only
the tail that is still a proper prefix of one of this request's placeholders,
which is always the tail from the last `<` (a placeholder holds one `<`, its
first character) or nothing. Every other character leaves with the delta it
came in; the held tail leaves with the next delta, or when the field ends:
another field of the same choice gets text (OpenAI streams one field at a
time, and front ends close a block when the next opens), the choice finishes,
or the stream ends (`flush`).

Placeholder-shaped text that is not one of this request's placeholders
(`<EMAIL_9>` when the request had one e-mail) is left as it is; the
pseudonymizer never hands out a placeholder that the request itself held as
text, so an echo of the app's own text is never "restored".

In tool-call arguments (JSON text) a value goes back JSON-escaped (quotes,
backslashes, control characters), so arguments that parsed with the
placeholder in a string still parse, with the exact value in that string.
One level of escaping: a value inside a JSON document nested as a string in
the arguments keeps the outer JSON valid, its inner document as the model
wrote it. Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from proxy.errors import ApiError
from proxy.frontends.base import StreamEncoder
from proxy.providers.base import ChatChunk, ChatResponse
from proxy.redaction.rule import PLACEHOLDER

#: The text fields of a choice's delta (or message) that can carry a placeholder the model repeats.
TEXT_FIELDS: tuple[str, ...] = ("content", "refusal", "reasoning_content", "reasoning")
_CHUNK_TEMPLATE_KEYS = ("id", "object", "created", "model", "system_fingerprint")

_Key = str | int  # a text field's name, or a tool call's index


def _swapper(values: Mapping[str, str]) -> Callable[[re.Match[str]], str]:
    get = values.get

    def swap(match: re.Match[str]) -> str:
        placeholder = match.group()
        return get(placeholder, placeholder)

    return swap


def json_escaped(value: str) -> str:
    """`value` as the inside of a JSON string."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


class TextRestorer:
    """One field of one streamed choice: deltas in, the same text with the values back out."""

    __slots__ = ("_held", "_longest", "_prefixes", "_swap")

    def __init__(self, *, swap: Callable[[re.Match[str]], str], prefixes: frozenset[str], longest: int) -> None:
        self._swap = swap
        self._prefixes = prefixes
        self._longest = longest
        self._held = ""

    @property
    def held(self) -> str:
        return self._held

    def feed(self, delta: str) -> str:
        text = self._held + delta if self._held else delta
        cut = text.rfind("<")
        if cut < 0:  # the common delta: no '<' in it, nothing held (what is held starts with '<')
            self._held = ""
            return text
        if len(text) - cut < self._longest and text[cut:] in self._prefixes:
            self._held = text[cut:]
            text = text[:cut]
        else:
            self._held = ""
        return PLACEHOLDER.sub(self._swap, text) if ">" in text else text

    def flush(self) -> str:
        """What is held: the start of a placeholder that never ended, as the model wrote it."""
        held, self._held = self._held, ""
        return held


class StreamRestorer:
    """One streamed answer: internal chunks in, chunks with the values back out (then `flush`).

    A chunk that changes is a new plain dict (never a mutated one: an OpenAI-shaped provider's
    chunk carries its own bytes, which the front end would otherwise send); one that does not
    is returned as it is."""

    __slots__ = ("_fields", "_holding", "_json", "_longest", "_originals", "_plain", "_prefixes", "_template")

    def __init__(self, originals: Mapping[str, str]) -> None:
        self._originals = dict(originals)
        # Built on the first '<' (most answers never hold one): what the field restorers share.
        self._plain: Callable[[re.Match[str]], str] | None = None
        self._json: Callable[[re.Match[str]], str] | None = None
        self._prefixes: frozenset[str] = frozenset()
        self._longest = 0
        self._fields: dict[tuple[int, _Key], TextRestorer] = {}
        self._holding: dict[int, dict[_Key, TextRestorer]] = {}  # choice -> its fields that hold text
        self._template: dict[str, Any] | None = None

    def chunk(self, chunk: ChatChunk) -> ChatChunk:
        if not self._holding:
            raw = getattr(chunk, "raw", None)  # an OpenAI-shaped provider's event, as it came
            if raw is not None and b"<" not in raw and b"\\u003" not in raw:
                return chunk  # no '<' in it, not even escaped: no placeholder can start here
        if self._template is None:
            self._template = {key: chunk[key] for key in _CHUNK_TEMPLATE_KEYS if key in chunk}
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list):
            return chunk
        changed: list[Any] | None = None
        for position, choice in enumerate(choices):
            if isinstance(choice, dict) and (new := self._choice(choice)) is not choice:
                if changed is None:
                    changed = list(choices)
                changed[position] = new
        if changed is None:
            return chunk
        out = dict(chunk)
        out["choices"] = changed
        return out

    def flush(self) -> list[ChatChunk]:
        """The stream ended: what is still held, as chunks to encode before the end (often none)."""
        chunks: list[ChatChunk] = []
        for index, holding in self._holding.items():
            if not holding:
                continue
            delta: dict[str, Any] = {}
            calls = _release(holding, delta)
            if calls:
                delta["tool_calls"] = calls
            chunk = dict(self._template or {})
            chunk["choices"] = [{"index": index, "delta": delta, "finish_reason": None}]
            chunks.append(chunk)
        self._holding.clear()
        return chunks

    def _choice(self, choice: dict[str, Any]) -> dict[str, Any]:
        delta = choice.get("delta")
        if not self._holding and (type(delta) is not dict or not _has_lt(delta)):
            return choice  # nothing held, no '<' in the text: as it came
        delta = delta if isinstance(delta, dict) else {}
        index = choice.get("index", 0)
        index = index if type(index) is int else 0
        finished = bool(choice.get("finish_reason"))
        holding = self._holding.pop(index, None) or {}
        texts = [field for field in TEXT_FIELDS if type(value := delta.get(field)) is str and value]
        calls = delta.get("tool_calls")
        calls = calls if isinstance(calls, list) and calls else None
        present: set[_Key] = set(texts)
        if calls:
            present.update(_call_index(call) for call in calls if _arguments(call) is not None)
        new_delta = dict(delta)
        released: list[dict[str, Any]] = []
        changed = False
        if holding and (present or finished):  # a field that is over: its tail goes first
            over = {key: holding.pop(key) for key in [key for key in holding if key not in present]}
            changed = bool(over)
            released = _release(over, new_delta)
        for field in texts:
            new_delta[field] = restored = self._feed(index, field, delta[field], holding, finished)
            changed = changed or restored != delta[field]
        if calls:
            new_calls = [self._call(index, call, holding, finished) for call in calls]
            changed = changed or any(new is not old for new, old in zip(new_calls, calls, strict=True))
            new_delta["tool_calls"] = released + new_calls
        elif released:
            new_delta["tool_calls"] = released
        if holding:
            self._holding[index] = holding
        if not changed:
            return choice
        out = dict(choice)
        out["delta"] = new_delta
        return out

    def _call(self, index: int, call: Any, holding: dict[_Key, TextRestorer], finished: bool) -> Any:
        arguments = _arguments(call)
        if arguments is None:
            return call
        restored = self._feed(index, _call_index(call), arguments, holding, finished)
        if restored == arguments:
            return call
        return {**call, "function": {**call["function"], "arguments": restored}}

    def _feed(self, index: int, key: _Key, text: str, holding: dict[_Key, TextRestorer], finished: bool) -> str:
        restorer = self._fields.get((index, key))
        if restorer is None:
            if self._plain is None or self._json is None:
                originals = self._originals
                self._plain = _swapper(originals)
                self._json = _swapper({placeholder: json_escaped(value) for placeholder, value in originals.items()})
                self._prefixes = frozenset(p[:i] for p in originals for i in range(1, len(p)))
                self._longest = max(map(len, originals), default=0)
            swap = self._json if type(key) is int else self._plain
            restorer = self._fields[(index, key)] = TextRestorer(
                swap=swap, prefixes=self._prefixes, longest=self._longest
            )
        out = restorer.feed(text)
        if finished:
            out += restorer.flush()
        if restorer.held:
            holding[key] = restorer
        else:
            holding.pop(key, None)
        return out


def _has_lt(delta: dict[str, Any]) -> bool:
    """Whether any text of this delta holds a '<' (the start of every placeholder)."""
    for field in TEXT_FIELDS:
        value = delta.get(field)
        if type(value) is str and "<" in value:
            return True
    calls = delta.get("tool_calls")
    if calls and type(calls) is list:
        return any("<" in arguments for call in calls if (arguments := _arguments(call)))
    return False


def _arguments(call: Any) -> str | None:
    if isinstance(call, dict) and isinstance(function := call.get("function"), dict):
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            return arguments
    return None


def _call_index(call: dict[str, Any]) -> int:
    index = call.get("index", 0)
    return index if type(index) is int else 0


def _release(fields: dict[_Key, TextRestorer], delta: dict[str, Any]) -> list[dict[str, Any]]:
    """The held tails of `fields` into `delta` (text fields) and as tool-call deltas (returned)."""
    calls: list[dict[str, Any]] = []
    for key, restorer in fields.items():
        tail = restorer.flush()
        if isinstance(key, str):
            delta[key] = tail  # (not in this delta: it is another field's turn)
        else:
            calls.append({"index": key, "function": {"arguments": tail}})
    fields.clear()
    return calls


class RestoringEncoder:
    """A front end's stream encoder, fed the chunks with the values back (a `StreamEncoder` itself)."""

    __slots__ = ("_inner", "_restorer")

    def __init__(self, inner: StreamEncoder, restorer: StreamRestorer) -> None:
        self._inner = inner
        self._restorer = restorer

    def encode(self, chunk: ChatChunk) -> bytes:
        return self._inner.encode(self._restorer.chunk(chunk))

    def finish(self) -> bytes:
        return self._held() + self._inner.finish()

    def error(self, error: ApiError) -> bytes:
        return self._held() + self._inner.error(error)

    def _held(self) -> bytes:
        return b"".join([self._inner.encode(chunk) for chunk in self._restorer.flush()])


def restoring_encoder(inner: StreamEncoder, restorer: StreamRestorer | None) -> StreamEncoder:
    """`inner` itself when there is nothing to restore: a request without findings pays nothing."""
    return inner if restorer is None else RestoringEncoder(inner, restorer)


def restore_response(response: ChatResponse, originals: Mapping[str, str]) -> ChatResponse:
    """A whole `chat.completion` with the values back; copied only where something changed."""
    choices = response.get("choices")
    if not originals or not isinstance(choices, list):
        return response
    plain, escaped = _swapper(originals), _swapper({p: json_escaped(v) for p, v in originals.items()})
    changed = False
    new_choices: list[Any] = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        new_message = _restored_message(message, plain, escaped) if isinstance(message, dict) else message
        if new_message is not message:
            changed = True
            choice = {**choice, "message": new_message}
        new_choices.append(choice)
    return {**response, "choices": new_choices} if changed else response


def _restored_message(
    message: dict[str, Any], plain: Callable[[re.Match[str]], str], escaped: Callable[[re.Match[str]], str]
) -> dict[str, Any]:
    out: dict[str, Any] | None = None
    for field in TEXT_FIELDS:
        value = message.get(field)
        if isinstance(value, str) and "<" in value:
            restored = PLACEHOLDER.sub(plain, value)
            if restored != value:
                out = out if out is not None else dict(message)
                out[field] = restored
        elif field == "content" and isinstance(value, list):  # content parts (some servers answer so)
            parts = [_restored_part(part, plain) for part in value]
            if any(new is not old for new, old in zip(parts, value, strict=True)):
                out = out if out is not None else dict(message)
                out[field] = parts
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        new_calls = [_restored_call(call, escaped) for call in calls]
        if any(new is not old for new, old in zip(new_calls, calls, strict=True)):
            out = out if out is not None else dict(message)
            out["tool_calls"] = new_calls
    return out if out is not None else message


def _restored_part(part: Any, plain: Callable[[re.Match[str]], str]) -> Any:
    if isinstance(part, dict) and isinstance(text := part.get("text"), str) and "<" in text:
        restored = PLACEHOLDER.sub(plain, text)
        if restored != text:
            return {**part, "text": restored}
    return part


def _restored_call(call: Any, escaped: Callable[[re.Match[str]], str]) -> Any:
    arguments = _arguments(call)
    if arguments is None or "<" not in arguments:
        return call
    restored = PLACEHOLDER.sub(escaped, arguments)
    return call if restored == arguments else {**call, "function": {**call["function"], "arguments": restored}}
