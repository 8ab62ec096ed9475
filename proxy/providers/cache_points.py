"""Prompt-cache breakpoints in the internal form: where the app asked a provider to cache the prompt.

The internal (OpenAI Chat Completions) form has no field for Anthropic's `cache_control`. The
Anthropic front end marks each place it stood with an internal key, `CACHE_POINT`, whose value is
`{}` or `{"ttl": "5m" | "1h"}`: on a system or user content part (the cache covers the prompt up
to and including that part), on a `tool` or `assistant` message (up to the end of that message),
and on a tool (up to the end of that tool's definition). It also sets `CACHE_POINTS` at the top
level, so a request without breakpoints costs nothing to clean.

Translators whose provider has explicit caching map the marks (Bedrock Converse: a `cachePoint`
block after the marked block, `proxy.providers.bedrock_request`; Anthropic: `cache_control` back
on the marked block, `proxy.providers.anthropic_request`); Gemini builds its body from known
fields and never reads them; the one that sends the internal body on as
it is (OpenAI and its kin) removes them with `without_cache_points`. Pure, no I/O.
"""

from __future__ import annotations

from typing import Any

from proxy.providers.base import ChatRequest

CACHE_POINT = "_cache_point"
CACHE_POINTS = "_cache_points"
#: Cache breakpoints a request may hold (Anthropic refuses more; Bedrock Converse too).
MAX_CACHE_POINTS = 4


def without_cache_points(request: ChatRequest) -> ChatRequest:
    """The request with no breakpoint marks (the same object when it has none), copied only along
    the paths that held one, so the parsed request stays intact for the next attempt."""
    if CACHE_POINTS not in request:
        return request
    out = {key: value for key, value in request.items() if key != CACHE_POINTS}
    if isinstance(messages := request.get("messages"), list):
        out["messages"] = [_unmarked_message(message) for message in messages]
    if isinstance(tools := request.get("tools"), list):
        out["tools"] = [_unmarked(tool) for tool in tools]
    return out


def _unmarked(item: Any) -> Any:
    if isinstance(item, dict) and CACHE_POINT in item:
        return {key: value for key, value in item.items() if key != CACHE_POINT}
    return item


def _unmarked_message(message: Any) -> Any:
    message = _unmarked(message)
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list) and any(isinstance(part, dict) and CACHE_POINT in part for part in content):
        parts = [_unmarked(part) for part in content]
        # A lone text part was kept a list only to hold the mark: a string again, as sent without one.
        single_text = len(parts) == 1 and parts[0].get("type") == "text" and isinstance(parts[0].get("text"), str)
        message = {**message, "content": parts[0]["text"] if single_text else parts}
    return message
