"""Reading fields of the internal (OpenAI Chat Completions) request that several translators send on
alike: text-only message contents, `stop`, and plain numbers.

Pure, no I/O. A field of the wrong type raises `ApiError` 400 naming it.
"""

from __future__ import annotations

from typing import Any

from proxy.errors import bad_request
from proxy.providers.base import ChatRequest


def texts(content: Any, where: str) -> list[str]:
    """A message's text: a string, or an array of `text` / `refusal` parts (nothing else) -> their texts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or an array of text parts", param=f"{where}.content")
    found = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("text", "refusal") or not isinstance(part.get(kind), str):
            raise bad_request(f"{where}.content[{j}]: only text parts are allowed here", param=f"{where}.content[{j}]")
        found.append(part[kind])
    return found


def stop_sequences(request: ChatRequest) -> list[str] | None:
    """`stop` (a string or an array of strings) as a list; None when absent or empty."""
    stop = request.get("stop")
    if not stop:
        return None
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise bad_request("stop must be a string or an array of strings", param="stop")


def number(request: ChatRequest, field: str) -> float | None:
    """A numeric field (an int or a float, not a bool); None when absent."""
    value = request.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_request(f"{field} must be a number", param=field)
    return value
