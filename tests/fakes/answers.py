"""The fakes' deterministic "model": the same request facts give the same answer
on every provider, so a test can check a translation both ways.

Each fake reduces its request to a ``Conversation`` and renders the ``Reply``
in its own wire format.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Any, Literal

TOOL_PREFIX = "use tool"

# none: never call a tool; auto: call when the text asks ("use tool ...");
# required: always call (the named tool, or the first one).
ToolMode = Literal["none", "auto", "required"]
Finish = Literal["stop", "length", "tool_calls", "stop_sequence"]


@dataclass(frozen=True)
class Conversation:
    texts: list[str]  # every message / system / tool-result text, for token counts
    last_user_text: str  # the last user turn's text parts, concatenated
    tool_results: list[str] | None  # set when the last user turn returns tool results
    tools: list[str]  # declared function names, in order
    tool_mode: ToolMode = "auto"
    forced_tool: str | None = None
    json_schema: dict[str, Any] | None = None
    json_mode: bool = False
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments)


@dataclass(frozen=True)
class Reply:
    text: str | None
    tool_call: ToolCall | None
    finish: Finish
    stop_sequence: str | None
    input_tokens: int
    output_tokens: int


def words(text: str) -> int:
    return len(text.split())


def word_pieces(text: str) -> list[str]:
    """One piece per word, spaces kept, so ``"".join(pieces) == text``."""
    lead = re.match(r"\s*", text)
    pieces = re.findall(r"\S+\s*", text)
    if lead and lead.group() and pieces:
        pieces[0] = lead.group() + pieces[0]
    return pieces or [text]


def json_pieces(arguments_json: str) -> list[str]:
    """Tool arguments in at least two pieces, the way providers stream them."""
    cut = max(1, len(arguments_json) // 3)
    return [arguments_json[:cut], arguments_json[cut : 2 * cut], arguments_json[2 * cut :]]


def reply_to(conv: Conversation) -> Reply:
    input_tokens = max(1, sum(words(t) for t in conv.texts))
    call = _tool_call(conv)
    if call is not None:
        query = str(call.arguments.get("query", ""))
        return Reply(None, call, "tool_calls", None, input_tokens, max(1, words(query)))
    if conv.tool_results is not None:
        text = "tool said: " + "\n".join(conv.tool_results)
    else:
        text = "echo: " + conv.last_user_text
    if conv.json_mode or conv.json_schema is not None:
        text = json.dumps(_instance(conv.json_schema, text) if conv.json_schema else {"answer": text})
    finish: Finish = "stop"
    stop_sequence = None
    for seq in conv.stop:
        at = text.find(seq) if seq else -1
        if at >= 0 and (stop_sequence is None or at < text.find(stop_sequence)):
            stop_sequence = seq
    if stop_sequence is not None:
        text, finish = text[: text.find(stop_sequence)], "stop_sequence"
    pieces = word_pieces(text)
    if conv.max_tokens is not None and len(pieces) > conv.max_tokens:
        text, finish = "".join(pieces[: conv.max_tokens]).rstrip(), "length"
    return Reply(text, None, finish, stop_sequence, input_tokens, max(1, words(text)))


def _tool_call(conv: Conversation) -> ToolCall | None:
    if not conv.tools or conv.tool_mode == "none":
        return None
    asked = conv.tool_results is None and conv.last_user_text.startswith(TOOL_PREFIX)
    if not asked and conv.tool_mode != "required":
        return None
    if asked:
        query = conv.last_user_text[len(TOOL_PREFIX) :].strip()
    else:
        query = "\n".join(conv.tool_results) if conv.tool_results is not None else conv.last_user_text
    return ToolCall(conv.forced_tool or conv.tools[0], {"query": query})


def _instance(schema: dict[str, Any], text: str) -> Any:
    """A deterministic value matching a (JSON / OpenAPI-subset) schema; strings get ``text``."""
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):  # ["string", "null"]
        kind = next((k for k in kind if k != "null"), "null")
    kind = str(kind).lower()  # Gemini's Schema spells types in capitals
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: _instance(sub, text) for name, sub in props.items()} if props else {"answer": text}
    if kind == "array":
        return [_instance(schema.get("items") or {"type": "string"}, text)]
    return {"string": text, "integer": 1, "number": 1.5, "boolean": True, "null": None}.get(kind, text)


def embedding(text: str, dimensions: int = 8) -> list[float]:
    """A small vector from a hash; values are multiples of 1/128, exact in float32."""
    data = b""
    block = text.encode()
    while len(data) < dimensions:
        block = hashlib.sha256(block).digest()
        data += block
    return [(b - 128) / 128 for b in data[:dimensions]]


def random_token(n: int) -> str:
    """Random letters and digits, for the ids providers mint (chatcmpl-, toolu_, ...)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))
