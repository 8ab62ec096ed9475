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


def _tool_call(call: Any, what: str, *, streamed: bool) -> None:
    if type(call) is not dict:
        raise UpstreamProtocolError(f"{what} is not an object")
    name(call.get("id"), f"{what}.id")
    name(call.get("type"), f"{what}.type")
    if streamed:
        index(call.get("index"), f"{what}.index")
    function = obj(call.get("function"), f"{what}.function")
    if function is not None:
        name(function.get("name"), f"{what}.function.name")
        text(function.get("arguments"), f"{what}.function.arguments")
    elif not streamed:
        raise UpstreamProtocolError(f"{what} has no function")


def _message(message: Any, what: str, *, streamed: bool) -> None:
    """A chat.completion message or a chunk's delta: the fields front ends and spans read."""
    if message is None:
        return
    if type(message) is not dict:
        raise UpstreamProtocolError(f"{what} is not an object")
    name(message.get("role"), f"{what}.role")
    content = message.get("content")
    if type(content) is list:  # some OpenAI-compatible servers answer with parts
        for part in content:
            if type(part) is not dict:
                raise UpstreamProtocolError(f"{what}.content part is not an object")
            name(part.get("type"), f"{what}.content part type")
            text(part.get("text"), f"{what}.content part text")
    else:
        text(content, f"{what}.content")
    text(message.get("refusal"), f"{what}.refusal")
    for call in items(message.get("tool_calls"), f"{what}.tool_calls"):
        _tool_call(call, f"{what}.tool_calls[]", streamed=streamed)


def _envelope(data: dict[str, Any], what: str) -> list[Any]:
    """The fields common to chat.completion and its chunks; returns the choices list."""
    choices = data.get("choices")
    if type(choices) is not list:
        raise UpstreamProtocolError(f"{what} has no choices list")
    name(data.get("id"), f"{what} id")
    name(data.get("model"), f"{what} model")
    return choices


def check_chunk(chunk: dict[str, Any]) -> tuple[int | None, int | None]:
    """A chat.completion.chunk as front ends and spans read it; returns its usage (prompt, completion)."""
    for choice in _envelope(chunk, "stream event"):
        if type(choice) is not dict:
            raise UpstreamProtocolError("stream event choice is not an object")
        index(choice.get("index"), "stream event choice index")
        name(choice.get("finish_reason"), "stream event finish_reason")
        _message(choice.get("delta"), "stream event delta", streamed=True)
    return openai_usage(chunk.get("usage"), "stream event")


def check_completion(data: dict[str, Any]) -> tuple[int | None, int | None]:
    """A chat.completion as front ends and spans read it; returns its usage (prompt, completion)."""
    for choice in _envelope(data, "response"):
        if type(choice) is not dict:
            raise UpstreamProtocolError("response choice is not an object")
        index(choice.get("index"), "response choice index")
        name(choice.get("finish_reason"), "response finish_reason")
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
        embedding: Any = (base64_vector(vector, f"{what}.embedding") if type(vector) is str
                          else float_vector(vector, f"{what}.embedding"))
        position = index(item.get("index"), f"{what}.index") if item.get("index") is not None else position
        out.append({"object": "embedding", "index": position, "embedding": embedding})
    usage = obj(data.get("usage"), "embeddings response usage") or {}
    prompt = count(usage.get("prompt_tokens"), "embeddings response usage.prompt_tokens")
    total = count(usage.get("total_tokens"), "embeddings response usage.total_tokens")
    response = {"object": "list", "data": out, "model": name(data.get("model"), "embeddings response model") or model,
                "usage": {"prompt_tokens": prompt or 0, "total_tokens": total if total is not None else prompt or 0}}
    return response, prompt
