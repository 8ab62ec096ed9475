"""Checks on what the sidecar reads from provider answers (pure, no I/O).

A provider's answer is untrusted input: a proxy between, a buggy self-hosted
server or a compromised endpoint can send any JSON. Everything a translator
hands on (to the front ends, the relay, spans and metrics) is checked here
first, so a wrong type or an absurd value ends the attempt as a bad response
(UpstreamProtocolError: 502, the next backend tried) instead of failing later,
where it would be a 500 or poison the route's metrics.

The checks run on every answer and stream event: type tests and length caps,
no copies, nothing recursive.
"""

from __future__ import annotations

import binascii
import json
import struct
from typing import Any

from proxy.providers.base import UpstreamProtocolError

#: Token counts: Gemini's own API declares them int32; no real answer comes near.
MAX_TOKENS = 2**31 - 1
#: Ids, model names, roles and finish reasons: far longer than any real one, short enough for a label.
MAX_NAME = 512


def count(value: Any, what: str) -> int | None:
    """A token count: None when absent, else an int in [0, MAX_TOKENS]."""
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_TOKENS:
        raise UpstreamProtocolError(f"{what} is not a token count")
    return value


def name(value: Any, what: str) -> str | None:
    """An id, model, role or finish reason: None when absent, else a string of at most MAX_NAME characters."""
    if value is None:
        return None
    if type(value) is not str or len(value) > MAX_NAME:
        raise UpstreamProtocolError(f"{what} is not a string of at most {MAX_NAME} characters")
    return value


def text(value: Any, what: str) -> str | None:
    """Answer text (content, arguments, refusal): None when absent, else a string."""
    if value is None or type(value) is str:
        return value
    raise UpstreamProtocolError(f"{what} is not a string")


def obj(value: Any, what: str) -> dict[str, Any] | None:
    if value is None or type(value) is dict:
        return value
    raise UpstreamProtocolError(f"{what} is not an object")


def items(value: Any, what: str) -> list[Any]:
    """A list (None reads as empty)."""
    if value is None:
        return []
    if type(value) is not list:
        raise UpstreamProtocolError(f"{what} is not a list")
    return value


def index(value: Any, what: str) -> int | None:
    if value is None or (type(value) is int and 0 <= value <= MAX_TOKENS):
        return value
    raise UpstreamProtocolError(f"{what} is not an index")


def message_text(value: Any) -> str:
    """A provider's error message, for an error we report: a string, bounded; anything else a placeholder."""
    if type(value) is str:
        return value[:500]
    return "(no message)"


def dumps(value: Any, what: str, *, ensure_ascii: bool = True) -> str:
    """JSON text of a value parsed from an answer (a parser reads deeper than json.dumps writes)."""
    try:
        return json.dumps(value, ensure_ascii=ensure_ascii)
    except (RecursionError, ValueError, TypeError):
        raise UpstreamProtocolError(f"{what} cannot be written back as JSON (nested too deep)") from None


# --- the internal (OpenAI) shapes ------------------------------------------------------------


def openai_usage(usage: Any, what: str) -> tuple[int | None, int | None]:
    """(prompt, completion) tokens of an OpenAI usage object; its other counts checked as well."""
    if usage is None:
        return None, None
    if type(usage) is not dict:
        raise UpstreamProtocolError(f"{what} usage is not an object")
    prompt = count(usage.get("prompt_tokens"), f"{what} usage.prompt_tokens")
    completion = count(usage.get("completion_tokens"), f"{what} usage.completion_tokens")
    count(usage.get("total_tokens"), f"{what} usage.total_tokens")
    for details in ("prompt_tokens_details", "completion_tokens_details"):
        inner = usage.get(details)
        if inner is not None:
            if type(inner) is not dict:
                raise UpstreamProtocolError(f"{what} usage.{details} is not an object")
            for key, value in inner.items():
                count(value, f"{what} usage.{details}.{key}")
    return prompt, completion


def cached_tokens(usage: Any) -> int | None:
    """`prompt_tokens_details.cached_tokens` of a usage object already checked by `openai_usage`."""
    details = usage.get("prompt_tokens_details") if type(usage) is dict else None
    cached = details.get("cached_tokens") if type(details) is dict else None
    return cached if type(cached) is int else None


def _bad(what: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(f"{what} is not what the API defines (wrong type or too long)")


def _short_or_none(value: Any) -> bool:
    return value is None or (type(value) is str and len(value) <= MAX_NAME)


def _tool_calls(calls: Any, what: str, *, streamed: bool) -> None:
    if type(calls) is not list:
        raise _bad(what)
    for call in calls:
        if type(call) is not dict or not _short_or_none(call.get("id")) or not _short_or_none(call.get("type")):
            raise _bad(what)
        if streamed:
            index(call.get("index"), what + " index")
        function = call.get("function")
        if function is None:
            if not streamed:
                raise UpstreamProtocolError(f"{what} has no function")
        elif (
            type(function) is not dict
            or not _short_or_none(function.get("name"))
            or not (function.get("arguments") is None or type(function.get("arguments")) is str)
        ):
            raise _bad(what + " function")


def _parts(content: list[Any], what: str) -> None:
    for part in content:  # some OpenAI-compatible servers answer with parts
        if (
            type(part) is not dict
            or not _short_or_none(part.get("type"))
            or not (part.get("text") is None or type(part.get("text")) is str)
        ):
            raise _bad(what)


def _message(message: Any, what: str, *, streamed: bool) -> None:
    """A chat.completion message or a chunk's delta: the fields front ends and spans read.
    (On every stream event: type tests inline, the messages built only on failure.)"""
    if message is None:
        return
    if type(message) is not dict:
        raise _bad(what)
    content = message.get("content")
    if content is not None and type(content) is not str:
        if type(content) is not list:
            raise _bad(what + ".content")
        _parts(content, what + ".content")
    role = message.get("role")
    if role is not None and (type(role) is not str or len(role) > MAX_NAME):
        raise _bad(what + ".role")
    refusal = message.get("refusal")
    if refusal is not None and type(refusal) is not str:
        raise _bad(what + ".refusal")
    calls = message.get("tool_calls")
    if calls is not None:
        _tool_calls(calls, what + ".tool_calls", streamed=streamed)


def _choices(data: dict[str, Any], what: str) -> list[Any]:
    """The fields common to chat.completion and its chunks, and each choice's own; returns the choices."""
    choices = data.get("choices")
    if type(choices) is not list:
        raise UpstreamProtocolError(f"{what} has no choices list")
    for key in ("id", "model"):
        value = data.get(key)
        if value is not None and (type(value) is not str or len(value) > MAX_NAME):
            raise _bad(f"{what} {key}")
    for choice in choices:
        if type(choice) is not dict:
            raise _bad(what + " choice")
        position = choice.get("index")
        if position is not None and (type(position) is not int or not 0 <= position <= MAX_TOKENS):
            raise _bad(what + " choice index")
        reason = choice.get("finish_reason")
        if reason is not None and (type(reason) is not str or len(reason) > MAX_NAME):
            raise _bad(what + " finish_reason")
    return choices


def check_chunk(chunk: dict[str, Any]) -> tuple[int | None, int | None]:
    """A chat.completion.chunk as front ends and spans read it; returns its usage (prompt, completion)."""
    for choice in _choices(chunk, "stream event"):
        _message(choice.get("delta"), "stream event delta", streamed=True)
    usage = chunk.get("usage")
    return (None, None) if usage is None else openai_usage(usage, "stream event")


def check_completion(data: dict[str, Any]) -> tuple[int | None, int | None]:
    """A chat.completion as front ends and spans read it; returns its usage (prompt, completion)."""
    for choice in _choices(data, "response"):
        _message(choice.get("message"), "response message", streamed=False)
    return openai_usage(data.get("usage"), "response")


def float_vector(values: Any, what: str) -> list[float]:
    """An embedding: a list of numbers within float32 range (what `encoding_format: base64` packs).

    Checked by packing it as float32 in one C call (~25 ns a value); a loop over the values in
    Python would cost more than parsing them."""
    if type(values) is not list:
        raise UpstreamProtocolError(f"{what} is not a list of numbers")
    try:
        struct.pack(f"<{len(values)}f", *values)
    except (struct.error, OverflowError):
        raise UpstreamProtocolError(f"{what} is not a list of float32 numbers") from None
    return values


def base64_vector(value: str, what: str) -> str:
    """An embedding sent as base64 (`encoding_format: base64`): float32 values, so a multiple of 4 bytes."""
    try:
        raw = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise UpstreamProtocolError(f"{what} is not valid base64") from None
    if len(raw) % 4:
        raise UpstreamProtocolError(f"{what} is not a whole number of float32 values")
    return value


def embeddings(data: dict[str, Any], *, model: str) -> tuple[dict[str, Any], int | None]:
    """An OpenAI embeddings list rebuilt from its checked fields (unknown ones are not carried,
    so rendering it can never fail); returns it and its prompt tokens."""
    out = []
    for position, item in enumerate(items(data.get("data"), "embeddings response data")):
        what = f"embeddings response data[{position}]"
        if type(item) is not dict:
            raise UpstreamProtocolError(f"{what} is not an object")
        vector = item.get("embedding")
        embedding: Any = (
            base64_vector(vector, f"{what}.embedding")
            if type(vector) is str
            else float_vector(vector, f"{what}.embedding")
        )
        given = index(item.get("index"), f"{what}.index")
        out.append({"object": "embedding", "index": position if given is None else given, "embedding": embedding})
    usage = obj(data.get("usage"), "embeddings response usage") or {}
    prompt = count(usage.get("prompt_tokens"), "embeddings response usage.prompt_tokens")
    total = count(usage.get("total_tokens"), "embeddings response usage.total_tokens")
    response = {
        "object": "list",
        "data": out,
        "model": name(data.get("model"), "embeddings response model") or model,
        "usage": {"prompt_tokens": prompt or 0, "total_tokens": total if total is not None else prompt or 0},
    }
    return response, prompt
