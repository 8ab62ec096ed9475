"""Answers to the Anthropic Messages API: an internal (OpenAI Chat Completions) answer as an Anthropic
`message` object. Pure: no sockets, no clock. Streams are `proxy.frontends.anthropic_stream`'s, which
shares its stop reasons with this module so that streamed and whole answers agree."""

from __future__ import annotations

from typing import Any

from proxy.errors import ApiError
from proxy.frontends.anthropic_stream import stop_reason_for
from proxy.frontends.chunk_encoder import as_dict
from proxy.json_limits import loads_bounded
from proxy.providers.anthropic_convert import anthropic_usage, message_id, tool_use_id
from proxy.providers.base import ChatResponse


def render_message(response: ChatResponse) -> dict[str, Any]:
    """A chat.completion -> an Anthropic `message` object."""
    choices = response.get("choices")
    choice: dict[str, Any] = as_dict(choices[0]) if isinstance(choices, list) and choices else {}
    message = as_dict(choice.get("message"))
    content: list[dict[str, Any]] = []
    text = _message_text(message)
    if text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise _bad_response("tool_calls is not a list")
    content += [_tool_use_block(call) for call in calls]
    return {
        "id": message_id(response.get("id")),
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": response.get("model") or "",
        "stop_reason": stop_reason_for(choice.get("finish_reason"), has_tool_calls=bool(calls)),
        "stop_sequence": None,  # OpenAI does not say which stop sequence matched
        "usage": anthropic_usage(response.get("usage")),
    }


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # some OpenAI-compatible servers answer with parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not content and isinstance(message.get("refusal"), str):
        content = message["refusal"]
    return content if isinstance(content, str) else ""


def _bad_response(message: str) -> ApiError:
    # Rendering happens after the attempt succeeded, so this is answered (502) rather than retried.
    text = f"the provider's answer cannot be expressed as an Anthropic message: {message}"
    return ApiError(502, text, "api_error", "bad_response")


def _tool_use_block(call: Any) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(call.get("id"), str):
        raise _bad_response("a tool call has no id or function")
    return {
        "type": "tool_use",
        "id": tool_use_id(call["id"]),
        "name": function.get("name") or "",
        "input": _tool_input(function.get("arguments")),
    }


def _tool_input(arguments: Any) -> dict[str, Any]:
    if not arguments:
        return {}
    try:
        parsed = loads_bounded(arguments) if isinstance(arguments, (str, bytes)) else None
    except ValueError:  # not JSON, or nested deeper than the sidecar writes
        parsed = None
    if not isinstance(parsed, dict):
        raise _bad_response("tool call arguments are not a JSON object")
    return parsed
