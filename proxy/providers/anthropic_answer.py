"""An Anthropic message (the Messages API's answer) -> a chat.completion and its internal Usage.

`chat_completion` reads a whole answer; the readers here (`required_name`, `usage_counts`,
`error_text`, `cache_usage`) are shared with the stream decoder (`proxy.providers.anthropic_events`).
Thinking blocks, citations and server-tool blocks have no place in a chat.completion and are
left out. Pure: no sockets, no clock.
"""

from __future__ import annotations

from typing import Any

from proxy.providers import checks
from proxy.providers.anthropic_convert import chat_id, finish_reason, is_int, openai_usage
from proxy.providers.base import ChatResponse, UpstreamProtocolError, Usage


def chat_completion(message: dict[str, Any], *, created: int) -> tuple[ChatResponse, Usage]:
    if message.get("type") == "error":
        raise UpstreamProtocolError(f"provider sent an error with a success status: {error_text(message)}")
    message_id = required_name(message, "id", "response")
    model = required_name(message, "model", "response")
    content = message.get("content")
    if not isinstance(content, list):
        raise UpstreamProtocolError("response has no content list")
    text, tool_calls = _read_content(content)
    usage = openai_usage(usage_counts(message.get("usage"), "response", required=True))
    out: dict[str, Any] = {"role": "assistant", "content": text if text or not tool_calls else None}
    if tool_calls:
        out["tool_calls"] = tool_calls
    response = {
        "id": chat_id(message_id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": out, "logprobs": None, "finish_reason": finish_reason(message.get("stop_reason"))}
        ],
        "usage": usage,
    }
    counts = usage_counts(message.get("usage"), "response", required=True)
    return response, cache_usage(counts, usage["prompt_tokens"], usage["completion_tokens"])


def cache_usage(counts: dict[str, int], prompt: int | None, completion: int | None) -> Usage:
    """The internal Usage of Anthropic counts: the prompt whole, its cache reads and writes apart."""
    return Usage(
        input_tokens=prompt,
        output_tokens=completion,
        cached_input_tokens=counts.get("cache_read_input_tokens"),
        cache_write_input_tokens=counts.get("cache_creation_input_tokens"),
    )


def _read_content(content: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    """Text blocks joined (citations split one text into several) and client tool calls.

    Thinking blocks and server-tool blocks (web search and the like, run by
    Anthropic itself) have no place in a chat.completion and are left out.
    """
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        what = f"response content block {i}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise UpstreamProtocolError(f"{what} has no type")
        if block["type"] == "text":
            texts.append(required_str(block, "text", what, allow_empty=True))
        elif block["type"] == "tool_use":
            if not isinstance(block.get("input"), dict):
                raise UpstreamProtocolError(f"{what} has no input object")
            calls.append(
                {
                    "id": required_name(block, "id", what),
                    "type": "function",
                    "function": {
                        "name": required_name(block, "name", what),
                        "arguments": checks.dumps(block["input"], f"{what} input"),
                    },
                }
            )
    return "".join(texts), calls


def required_str(data: dict[str, Any], field: str, what: str, *, allow_empty: bool = False) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not (value or allow_empty):
        raise UpstreamProtocolError(f"{what} has no {field} string")
    return value


def required_name(data: dict[str, Any], field: str, what: str) -> str:
    """An id or name: a non-empty string of bounded length."""
    value = required_str(data, field, what)
    checks.name(value, f"{what} {field}")
    return value


def usage_counts(usage: Any, what: str, *, required: bool) -> dict[str, int]:
    """The token counts of an Anthropic usage object (the ones present, or all required ones)."""
    if usage is None and not required:
        return {}
    if not isinstance(usage, dict):
        raise UpstreamProtocolError(f"{what} has no usage object")
    counts = {}
    for field in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        value = usage.get(field)
        if value is None:
            if required and field in ("input_tokens", "output_tokens"):
                raise UpstreamProtocolError(f"{what} usage has no {field}")
            continue
        if not is_int(value) or not 0 <= value <= checks.MAX_TOKENS:
            raise UpstreamProtocolError(f"{what} usage.{field} is not a count")
        counts[field] = value
    return counts


def error_text(data: dict[str, Any]) -> str:
    error = data.get("error")
    if isinstance(error, dict):
        kind = error.get("type")
        return f"{kind if isinstance(kind, str) else 'error'}: {checks.message_text(error.get('message'))}"[:600]
    return checks.message_text(error)
