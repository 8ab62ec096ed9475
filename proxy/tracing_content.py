"""Opt-in capture of prompt and completion text on spans, credentials redacted.

Off unless OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true (the variable
the OpenTelemetry GenAI instrumentations use). When on, the server span gets
`gen_ai.system_instructions`, `gen_ai.input.messages` and `gen_ai.output.messages`
(streams: collected chunk by chunk by `StreamCapture`, recorded when the stream
completes normally) as JSON strings in the semconv v1.37.0 shape
(`[{"role", "parts": [{"type": "text", "content"}, ...]}]`).

Before anything is recorded, every string is redacted: the provider keys of the
snapshot the sidecar serves (exact matches), and text that looks like a
credential (bearer tokens, `sk-...` keys, AWS/Google/GitHub/Slack tokens, JWTs,
`password=...`-style assignments).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

REDACTED = "[REDACTED]"
CAPTURE_VARIABLE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

_PATTERNS = re.compile("|".join([
    r"(?i:bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*",
    r"\bsk-[A-Za-z0-9_\-]{8,}",
    r"\bAKIA[0-9A-Z]{16}\b",
    r"\bAIza[0-9A-Za-z\-_]{35}",
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
    r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}",
]))
_ASSIGNMENT = re.compile(
    r"(?i)\b((?:api[_-]?key|secret|token|password|passwd|authorization|access[_-]?key)\"?\s*[:=]\s*\"?)[^\s\"',;]+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    text = _PATTERNS.sub(REDACTED, text)
    return _ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, text)


def _parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else [content]:
        if isinstance(part, dict) and part.get("type") == "text":
            parts.append({"type": "text", "content": part.get("text", "")})
        elif isinstance(part, dict):
            parts.append({"type": str(part.get("type", "unknown"))})  # images, audio: the kind only
    return parts


def _message(message: dict[str, Any]) -> dict[str, Any]:
    role = message.get("role", "user")
    parts = _parts(message.get("content"))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        parts.append({"type": "tool_call", "id": call.get("id"), "name": function.get("name"),
                      "arguments": function.get("arguments")})
    if role == "tool":
        parts = [{"type": "tool_call_response", "id": message.get("tool_call_id"),
                  "response": "".join(p.get("content", "") for p in parts)}]
    return {"role": role, "parts": parts}


def _json(value: Any, secrets: Iterable[str]) -> str:
    return redact(json.dumps(value, ensure_ascii=False, separators=(",", ":")), secrets)


def content_attributes(*, request: dict[str, Any], response: dict[str, Any] | None,
                       secrets: Iterable[str]) -> dict[str, str]:
    """The span attributes for a chat request (OpenAI shape) and, when there is one, its answer."""
    attributes = input_attributes(request, secrets)
    if response is not None:
        attributes.update(output_attributes(response, secrets))
    return attributes


def input_attributes(request: dict[str, Any], secrets: Iterable[str]) -> dict[str, str]:
    """gen_ai.input.messages and gen_ai.system_instructions of a chat request (OpenAI shape)."""
    secrets = [s for s in secrets if s]
    messages = [m for m in request.get("messages") or () if isinstance(m, dict)]
    system = [p for m in messages if m.get("role") in ("system", "developer") for p in _parts(m.get("content"))]
    attributes = {"gen_ai.input.messages": _json([_message(m) for m in messages
                                                   if m.get("role") not in ("system", "developer")], secrets)}
    if system:
        attributes["gen_ai.system_instructions"] = _json(system, secrets)
    return attributes


def output_attributes(response: dict[str, Any], secrets: Iterable[str]) -> dict[str, str]:
    """gen_ai.output.messages of a chat answer (OpenAI shape)."""
    output = []
    for choice in response.get("choices") or ():
        entry = _message(choice.get("message") or {"role": "assistant"})
        entry["finish_reason"] = choice.get("finish_reason")
        output.append(entry)
    return {"gen_ai.output.messages": _json(output, [s for s in secrets if s])}


class StreamCapture:
    """A front end (see proxy.frontends.base) whose stream encoders also collect the answer."""

    def __init__(self, frontend: Any, *, on_done: Callable[[dict[str, Any]], None]) -> None:
        self._frontend, self._on_done = frontend, on_done

    def __getattr__(self, name: str) -> Any:
        return getattr(self._frontend, name)

    def stream_encoder(self, *, include_usage: bool) -> Any:
        return _CapturingEncoder(self._frontend.stream_encoder(include_usage=include_usage), self._on_done)


class _CapturingEncoder:
    def __init__(self, inner: Any, on_done: Callable[[dict[str, Any]], None]) -> None:
        self._inner, self._on_done = inner, on_done
        self._text: list[str] = []
        self._tools: dict[int, dict[str, Any]] = {}
        self._finish: str | None = None

    def encode(self, chunk: dict[str, Any]) -> bytes:
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if content := delta.get("content"):
                self._text.append(content)
            for call in delta.get("tool_calls") or ():
                entry = self._tools.setdefault(call.get("index", 0), {"id": None, "name": None, "arguments": ""})
                function = call.get("function") or {}
                entry["id"] = call.get("id") or entry["id"]
                entry["name"] = function.get("name") or entry["name"]
                entry["arguments"] += function.get("arguments") or ""
            self._finish = choice.get("finish_reason") or self._finish
        return self._inner.encode(chunk)

    def finish(self) -> bytes:
        calls = [{"id": t["id"], "function": {"name": t["name"], "arguments": t["arguments"]}}
                 for _, t in sorted(self._tools.items())]
        message = {"role": "assistant", "content": "".join(self._text) or None, "tool_calls": calls}
        self._on_done({"choices": [{"message": message, "finish_reason": self._finish}]})
        return self._inner.finish()

    def error(self, error: Any) -> bytes:
        return self._inner.error(error)
