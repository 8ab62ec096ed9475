"""Anthropic Messages <-> internal (OpenAI Chat Completions): the small tables both directions need.

Stop reasons, usage, ids and data URLs, used by the provider
(`proxy.providers.anthropic`), by the request body builder
(`proxy.providers.anthropic_request`) and by the Anthropic front end
(`proxy.frontends.anthropic_messages`). Pure, no I/O.
"""

from __future__ import annotations

import re
from typing import Any, TypeGuard

from proxy.providers.base import CACHE_WRITE_TOKENS

#: The Messages API version this module speaks (the only one Anthropic has published).
ANTHROPIC_VERSION = "2023-06-01"

#: Anthropic `stop_reason` -> OpenAI `finish_reason`.
FINISH_REASON_BY_STOP_REASON: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    # A server-tool loop paused; the turn simply ends here for an OpenAI client.
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: OpenAI `finish_reason` -> Anthropic `stop_reason`.
STOP_REASON_BY_FINISH_REASON: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",  # the legacy single-function form
    "content_filter": "refusal",
}

#: OpenAI chunk/completion ids we build from Anthropic message ids, so the
#: Anthropic front end can give the original id back on an Anthropic-to-Anthropic path.
CHAT_ID_PREFIX = "chatcmpl-"
MESSAGE_ID_PREFIX = "msg_"
TOOL_USE_ID_PREFIX = "toolu_"

_DATA_URL = re.compile(r"^data:(?P<media_type>[^;,]+)(?P<params>(;[^;,]*)*),(?P<data>.*)$", re.DOTALL)


def finish_reason(stop_reason: Any) -> str:
    """Unknown or missing stop reasons (new ones get added) read as a normal stop."""
    return FINISH_REASON_BY_STOP_REASON.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def stop_reason(finish: Any) -> str:
    return STOP_REASON_BY_FINISH_REASON.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def chat_id(message_id: str) -> str:
    return CHAT_ID_PREFIX + message_id


def message_id(response_id: Any) -> str:
    """An Anthropic `msg_...` id for an internal response id (undoing `chat_id` when it applies)."""
    text = str(response_id or "")
    if text.startswith(CHAT_ID_PREFIX + MESSAGE_ID_PREFIX):
        return text[len(CHAT_ID_PREFIX) :]
    return text if text.startswith(MESSAGE_ID_PREFIX) else MESSAGE_ID_PREFIX + text


def tool_use_id(tool_call_id: str) -> str:
    return tool_call_id if tool_call_id.startswith(TOOL_USE_ID_PREFIX) else TOOL_USE_ID_PREFIX + tool_call_id


def parse_data_url(url: str) -> tuple[str, str] | None:
    """`data:<media type>;base64,<data>` -> (media type, base64 data); None if not a base64 data URL."""
    match = _DATA_URL.match(url)
    if match is None or "base64" not in match.group("params").lower().split(";"):
        return None
    return match.group("media_type"), match.group("data")


def data_url(media_type: str, data: str) -> str:
    return f"data:{media_type};base64,{data}"


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage -> internal (OpenAI) usage.

    Anthropic counts cache writes and reads apart from `input_tokens`; OpenAI's
    `prompt_tokens` is the whole prompt, with cache reads as a detail. The writes,
    for which OpenAI has no field, go under `CACHE_WRITE_TOKENS`.
    """
    cache_write = _count(usage.get("cache_creation_input_tokens"))
    cache_read = _count(usage.get("cache_read_input_tokens"))
    prompt = _count(usage.get("input_tokens")) + cache_write + cache_read
    completion = _count(usage.get("output_tokens"))
    result: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cache_read:
        result["prompt_tokens_details"] = {"cached_tokens": cache_read}
    if cache_write:
        result[CACHE_WRITE_TOKENS] = cache_write
    return result


def anthropic_usage(usage: Any) -> dict[str, int]:
    """Internal (OpenAI) usage -> Anthropic usage, the inverse of `openai_usage`: `input_tokens` is
    the prompt without its cache reads and writes, which are counted apart, as Anthropic does."""
    if not isinstance(usage, dict):
        usage = {}
    prompt = _count(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    read = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    written = _count(usage.get(CACHE_WRITE_TOKENS))
    return {
        "input_tokens": max(prompt - read - written, 0),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "output_tokens": _count(usage.get("completion_tokens")),
    }


def is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value: Any) -> int:
    return value if is_int(value) and value >= 0 else 0
