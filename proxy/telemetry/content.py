"""Opt-in capture of prompt and completion text on spans, credentials redacted.

Off unless OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true (the variable
the OpenTelemetry GenAI instrumentations use). When on, the server span gets
`gen_ai.system_instructions`, `gen_ai.input.messages` and `gen_ai.output.messages`
(streams: collected chunk by chunk by `StreamCapture`, recorded when the stream
completes normally) as JSON strings in the semconv v1.37.0 shape
(`[{"role", "parts": [{"type": "text", "content"}, ...]}]`).

Before anything is recorded, the text goes through the runtime's scrubber
(`shared.scrub`): the keys of the snapshot the sidecar serves, whole, masked or
cut, and text shaped like a credential (bearer tokens, `sk-...` keys,
AWS/Google/GitHub/Slack tokens, JWTs, `password=...`-style assignments), in
linear time whatever the prompt holds.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.errors import ApiError
    from proxy.frontends.base import Frontend, StreamEncoder

log = logging.getLogger("modelway.tracing")

CAPTURE_VARIABLE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

Scrub = Callable[[str], str]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "content": _str(part.get("text")) or ""})
        else:  # images, audio: the kind only
            parts.append({"type": kind if isinstance(kind, str) else "unknown"})
    return parts


def _message(message: dict[str, Any]) -> dict[str, Any]:
    role = message.get("role", "user")
    role = role if isinstance(role, str) else "unknown"
    parts = _parts(message.get("content"))
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        if not isinstance(call, dict):
            continue
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        parts.append(
            {
                "type": "tool_call",
                "id": _str(call.get("id")),
                "name": _str(function.get("name")),
                "arguments": _str(function.get("arguments")),
            }
        )
    if role == "tool":
        parts = [
            {
                "type": "tool_call_response",
                "id": _str(message.get("tool_call_id")),
                "response": "".join(p.get("content", "") for p in parts if p["type"] == "text"),
            }
        ]
    return {"role": role, "parts": parts}


def _json(value: Any, scrub: Scrub) -> str:
    # Only str, None and lists/dicts built above reach here: nothing json.dumps can fail on.
    return scrub(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _guarded(build: Callable[..., dict[str, str]]) -> Callable[..., dict[str, str]]:
    """Capture is telemetry: whatever the app or provider sent, it must never fail a request."""

    @functools.wraps(build)
    def guarded(*args: Any, **kwargs: Any) -> dict[str, str]:
        try:
            return build(*args, **kwargs)
        except Exception:
            log.warning("content capture skipped for a message it could not read", exc_info=True)
            return {}

    return guarded


def content_attributes(*, request: dict[str, Any], response: dict[str, Any] | None, scrub: Scrub) -> dict[str, str]:
    """The span attributes for a chat request (OpenAI shape) and, when there is one, its answer."""
    attributes = input_attributes(request, scrub)
    if response is not None:
        attributes.update(output_attributes(response, scrub))
    return attributes


@_guarded
def input_attributes(request: dict[str, Any], scrub: Scrub) -> dict[str, str]:
    """gen_ai.input.messages and gen_ai.system_instructions of a chat request (OpenAI shape)."""
    messages = request.get("messages") if isinstance(request, dict) else None
    messages = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    system = [p for m in messages if m.get("role") in ("system", "developer") for p in _parts(m.get("content"))]
    attributes = {
        "gen_ai.input.messages": _json(
            [_message(m) for m in messages if m.get("role") not in ("system", "developer")], scrub
        )
    }
    if system:
        attributes["gen_ai.system_instructions"] = _json(system, scrub)
    return attributes


@_guarded
def output_attributes(response: dict[str, Any], scrub: Scrub) -> dict[str, str]:
    """gen_ai.output.messages of a chat answer (OpenAI shape)."""
    output = []
    choices = response.get("choices") if isinstance(response, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        entry = _message(message if isinstance(message, dict) else {"role": "assistant"})
        entry["finish_reason"] = _str(choice.get("finish_reason"))
        output.append(entry)
    return {"gen_ai.output.messages": _json(output, scrub)}


class StreamCapture:
    """A front end (see proxy.frontends.base) whose stream encoders also collect the answer."""

    def __init__(self, frontend: Frontend, *, on_done: Callable[[dict[str, Any]], None]) -> None:
        self._frontend, self._on_done = frontend, on_done

    def __getattr__(self, name: str) -> Any:
        return getattr(self._frontend, name)

    def stream_encoder(self, *, include_usage: bool) -> StreamEncoder:
        return _CapturingEncoder(self._frontend.stream_encoder(include_usage=include_usage), self._on_done)


class _CapturingEncoder:
    def __init__(self, inner: StreamEncoder, on_done: Callable[[dict[str, Any]], None]) -> None:
        self._inner, self._on_done = inner, on_done
        self._text: list[str] = []
        self._tools: dict[int, dict[str, Any]] = {}
        self._finish: str | None = None

    def encode(self, chunk: dict[str, Any]) -> bytes:
        try:
            self._collect(chunk)
        except Exception:  # a provider chunk of an odd shape: the stream goes on, uncaptured
            log.warning("content capture skipped a stream chunk it could not read", exc_info=True)
        return self._inner.encode(chunk)

    def _collect(self, chunk: dict[str, Any]) -> None:
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            if content := _str(delta.get("content")):
                self._text.append(content)
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if not isinstance(call, dict):
                    continue
                index = call.get("index", 0)
                entry = self._tools.setdefault(
                    index if isinstance(index, int) else 0, {"id": None, "name": None, "arguments": ""}
                )
                function = call.get("function")
                function = function if isinstance(function, dict) else {}
                entry["id"] = _str(call.get("id")) or entry["id"]
                entry["name"] = _str(function.get("name")) or entry["name"]
                entry["arguments"] += _str(function.get("arguments")) or ""
            self._finish = _str(choice.get("finish_reason")) or self._finish

    def finish(self) -> bytes:
        calls = [
            {"id": t["id"], "function": {"name": t["name"], "arguments": t["arguments"]}}
            for _, t in sorted(self._tools.items())
        ]
        message = {"role": "assistant", "content": "".join(self._text) or None, "tool_calls": calls}
        try:
            self._on_done({"choices": [{"message": message, "finish_reason": self._finish}]})
        except Exception:
            log.warning("content capture of a stream's answer failed", exc_info=True)
        return self._inner.finish()

    def error(self, error: ApiError) -> bytes:
        return self._inner.error(error)
