"""Fake Anthropic speaking the Messages API wire format.

POST /v1/messages (plain and ``stream: true``), POST /v1/messages/count_tokens.
Requires ``anthropic-version`` and the key, as ``x-api-key`` (the documented
header) or ``Authorization: Bearer`` (what the anthropic SDK 2.x sends).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .answers import Conversation, Reply, ToolMode, json_pieces, random_token, reply_to, word_pieces
from .behaviour import (
    STATE,
    Behaviour,
    FakeState,
    add_control_routes,
    before_reply,
    record,
    send_json,
    sse,
    stream_events,
)

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "stop_sequence": "stop_sequence"}
ERROR_TYPES = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
BLOCK_TYPES = (
    "text",
    "image",
    "document",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "search_result",
    "server_tool_use",
    "web_search_tool_result",
)


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def create_app(api_key: str) -> web.Application:
    app = web.Application()
    app[STATE] = FakeState(api_key=api_key)
    add_control_routes(app)
    app.router.add_post("/v1/messages", _messages)
    app.router.add_post("/v1/messages/count_tokens", _messages)
    return app


def anthropic_error(status: int, message: str | None) -> web.Response:
    kind, default = ERROR_TYPES.get(status, ("api_error", "Internal server error"))
    request_id = "req_" + random_token(24)
    body = {"type": "error", "error": {"type": kind, "message": message or default}, "request_id": request_id}
    return web.json_response(body, status=status, headers={"request-id": request_id})


async def _messages(request: web.Request) -> web.StreamResponse:
    body = await record(request)
    behaviour = request.app[STATE].next_behaviour()
    stream = isinstance(body, dict) and body.get("stream") is True
    if (early := await before_reply(behaviour, anthropic_error, stream=stream)) is not None:
        return early
    # The API takes the key as x-api-key; SDK 2.x sends it as a Bearer token instead.
    key = request.headers.get("x-api-key") or _bearer(request.headers.get("Authorization", ""))
    if key is None:
        return anthropic_error(401, "x-api-key header is required")
    if key != request.app[STATE].api_key:
        return anthropic_error(401, "invalid x-api-key")
    if "anthropic-version" not in request.headers:
        return anthropic_error(400, "anthropic-version: header is required")
    return await answer(request, body, behaviour=behaviour, stream=stream)


async def answer(
    request: web.Request, body: Any, *, behaviour: Behaviour, stream: bool, counting: bool | None = None
) -> web.StreamResponse:
    """An authenticated call's answer (also served by the fake Vertex AI for publisher anthropic);
    `counting`: a count_tokens call (by default, when the path says so)."""
    if not isinstance(body, dict):
        return anthropic_error(400, "There was an error parsing the body of your request.")
    if counting is None:
        counting = request.path.endswith("/count_tokens")
    try:
        conv = conversation(body, need_max_tokens=not counting)
    except ApiError as exc:
        return anthropic_error(exc.status, exc.message)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        # A malformed request must be a 400, never a 500 the caller would retry.
        return anthropic_error(400, f"Invalid request (fake could not read it: {exc!r}).")
    reply = reply_to(conv)
    if counting:
        return web.json_response({"input_tokens": reply.input_tokens})
    ident = "msg_01" + random_token(22)
    headers = {"request-id": "req_" + random_token(24)}
    extras = extras_for(body, cache_write=behaviour.cache_write)
    if not stream:
        return await send_json(request, message(ident, body["model"], reply, extras), behaviour, headers=headers)
    error = sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")
    events = [sse(data, data["type"]) for data in stream_data(ident, body["model"], reply, extras)]
    return await stream_events(request, events, behaviour, error_event=error, headers=headers)


def _bearer(value: str) -> str | None:
    return value.removeprefix("Bearer ") if value.startswith("Bearer ") else None


def conversation(body: dict[str, Any], *, need_max_tokens: bool = True) -> Conversation:
    for name in ("model", "messages", *(("max_tokens",) if need_max_tokens else ())):
        if name not in body:
            raise ApiError(f"{name}: Field required")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise ApiError("messages: at least one message is required")
    blocks = [_blocks(i, m) for i, m in enumerate(messages)]
    _check_tool_pairs(messages, blocks)
    system = body.get("system") or []
    texts = [system] if isinstance(system, str) else [b.get("text", "") for b in system if b.get("type") == "text"]
    for content in blocks:
        texts += [b["text"] for b in content if b["type"] == "text"]
        texts += [_tool_result_text(b) for b in content if b["type"] == "tool_result"]
    user_turns = [content for m, content in zip(messages, blocks, strict=True) if m["role"] == "user"]
    last_user = user_turns[-1] if user_turns else []
    results = [_tool_result_text(b) for b in last_user if b["type"] == "tool_result"]
    tools = [_tool_name(i, t) for i, t in enumerate(body.get("tools") or [])]
    mode, forced = _tool_choice(body.get("tool_choice"))
    fmt = (body.get("output_config") or {}).get("format") or body.get("output_format") or {}
    return Conversation(
        texts=texts,
        last_user_text="".join(b["text"] for b in last_user if b["type"] == "text"),
        tool_results=results or None,
        tools=tools,
        tool_mode=mode,
        forced_tool=forced,
        json_schema=fmt.get("schema") if fmt.get("type") == "json_schema" else None,
        max_tokens=body.get("max_tokens"),
        stop=list(body.get("stop_sequences") or []),
    )


def _blocks(i: int, m: Any) -> list[dict[str, Any]]:
    """The message's content as validated blocks (a string is one text block)."""
    role = m.get("role") if isinstance(m, dict) else None
    if role == "system":
        raise ApiError(
            'messages: Unexpected role "system". The Messages API accepts a top-level `system` '
            'parameter, not "system" as an input message role.'
        )
    if role not in ("user", "assistant"):
        raise ApiError(f"messages.{i}.role: Input should be 'user' or 'assistant'")
    content = m.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise ApiError(f"messages.{i}.content: Input should be a valid list")
    for j, block in enumerate(content):
        where = f"messages.{i}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in BLOCK_TYPES:
            raise ApiError(f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected tags")
        if kind == "text" and not isinstance(block.get("text"), str):
            raise ApiError(f"{where}.text.text: Field required")
        if kind == "image":
            _check_image(where, block.get("source") or {})
        complete_use = block.get("id") and block.get("name") and isinstance(block.get("input"), dict)
        if kind == "tool_use" and not complete_use:
            raise ApiError(f"{where}.tool_use: id, name and input (an object) are required")
        if kind == "tool_result" and not block.get("tool_use_id"):
            raise ApiError(f"{where}.tool_result.tool_use_id: Field required")
    return content


def _check_image(where: str, source: dict[str, Any]) -> None:
    if source.get("type") == "url":
        return
    if source.get("type") != "base64":
        raise ApiError(
            f"{where}.image.source: Input tag '{source.get('type')}' found using 'type' does not match "
            "any of the expected tags: 'base64', 'url'"
        )
    if source.get("media_type") not in IMAGE_TYPES:
        raise ApiError(
            f"{where}.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
            "'image/gif' or 'image/webp'"
        )
    try:
        base64.b64decode(source.get("data", ""), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(f"{where}.image.source.base64.data: invalid base64 data") from None


def _check_tool_pairs(messages: list[dict[str, Any]], blocks: list[list[dict[str, Any]]]) -> None:
    """Anthropic's rule: every tool_use is answered by a tool_result in the very next message."""
    for i, content in enumerate(blocks):
        uses = [b["id"] for b in content if b["type"] == "tool_use"]
        if uses and i + 1 < len(blocks):
            answered = {b["tool_use_id"] for b in blocks[i + 1] if b["type"] == "tool_result"}
            if missing := [u for u in uses if u not in answered]:
                raise ApiError(
                    f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                    "corresponding `tool_result` block in the next message."
                )
        previous = {b["id"] for b in blocks[i - 1] if b["type"] == "tool_use"} if i else set()
        for j, b in enumerate(content):
            if b["type"] == "tool_result" and b["tool_use_id"] not in previous:
                raise ApiError(
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{b['tool_use_id']}. Each `tool_result` block must have a corresponding `tool_use` "
                    "block in the previous message."
                )


def _tool_result_text(block: dict[str, Any]) -> str:
    content = block.get("content", "")
    if isinstance(content, str):
        return content
    return "".join(c.get("text", "") for c in content if isinstance(c, dict) and c.get("type") == "text")


def _tool_name(i: int, tool: Any) -> str:
    if not isinstance(tool, dict) or not tool.get("name"):
        raise ApiError(f"tools.{i}.name: Field required")
    if tool.get("type", "custom") == "custom" and not isinstance(tool.get("input_schema"), dict):
        raise ApiError(f"tools.{i}.custom.input_schema: Field required")
    return str(tool["name"])


def _tool_choice(choice: Any) -> tuple[ToolMode, str | None]:
    kind = (choice or {}).get("type", "auto")
    if kind == "tool":
        return "required", choice.get("name")
    modes: dict[str, ToolMode] = {"auto": "auto", "any": "required", "none": "none"}
    if kind not in modes:
        raise ApiError(
            f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the expected "
            "tags: 'auto', 'any', 'tool', 'none'"
        )
    return modes[kind], None


@dataclass(frozen=True)
class Extras:
    """What the documented answer holds for features the request asked for (none by default)."""

    thinking: bool = False  # `thinking: {type: enabled}`: a thinking block, with its signature, first
    cached: int = 0  # `cache_control` anywhere: this many prompt tokens read from the cache
    written: int = 0  # or, the first time (a scripted `cache_write`), written to it
    document_title: str | None = None  # a document with `citations: {enabled: true}`: the text cites it


THINKING_TEXT = "The user greets me; a short echo will do."
THINKING_SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"
CACHED_TOKENS = 1024  # (Anthropic caches prompts of at least 1024 tokens)


def extras_for(body: Any, *, cache_write: bool = False) -> Extras:
    if not isinstance(body, dict):
        return Extras()
    thinking = isinstance(body.get("thinking"), dict) and body["thinking"].get("type") == "enabled"
    cached = CACHED_TOKENS if '"cache_control"' in json.dumps(body) else 0
    written, cached = (cached, 0) if cache_write else (0, cached)
    title = None
    for m in body.get("messages") or []:
        for block in m.get("content") if isinstance(m.get("content"), list) else []:
            if block.get("type") == "document" and (block.get("citations") or {}).get("enabled"):
                title = block.get("title") or "document"
    return Extras(thinking=thinking, cached=cached, written=written, document_title=title)


def _citation(extras: Extras, text: str) -> dict[str, Any]:
    return {
        "type": "char_location",
        "cited_text": text,
        "document_index": 0,
        "document_title": extras.document_title,
        "start_char_index": 0,
        "end_char_index": len(text),
    }


def _usage(reply: Reply, output_tokens: int, extras: Extras | None = None) -> dict[str, Any]:
    # input_tokens counts what came after the last cache breakpoint only (the documented split).
    return {
        "input_tokens": reply.input_tokens,
        "cache_creation_input_tokens": extras.written if extras else 0,
        "cache_read_input_tokens": extras.cached if extras else 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _content(reply: Reply) -> list[dict[str, Any]]:
    if reply.tool_call is not None:
        return [
            {
                "type": "tool_use",
                "id": "toolu_01" + random_token(22),
                "name": reply.tool_call.name,
                "input": reply.tool_call.arguments,
            }
        ]
    return [{"type": "text", "text": reply.text or ""}]


def message(ident: str, model: str, reply: Reply, extras: Extras | None = None) -> dict[str, Any]:
    content = _content(reply)
    if extras and extras.document_title and content[0]["type"] == "text":
        content[0]["citations"] = [_citation(extras, content[0]["text"])]
    if extras and extras.thinking:
        content.insert(0, {"type": "thinking", "thinking": THINKING_TEXT, "signature": THINKING_SIGNATURE})
    return {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS[reply.finish],
        "stop_sequence": reply.stop_sequence,
        "usage": _usage(reply, reply.output_tokens, extras),
    }


def stream_data(ident: str, model: str, reply: Reply, extras: Extras | None = None) -> Iterator[dict[str, Any]]:
    """The documented event sequence: message_start, the content blocks (start, ping,
    deltas, stop), message_delta with the stop reason and final usage, message_stop.
    A thinking block streams `thinking_delta`s then one `signature_delta`; a cited text block
    gets its citation as a `citations_delta`."""
    start = {
        **message(ident, model, reply),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(reply, 1, extras),
    }
    yield {"type": "message_start", "message": start}
    index = 0
    if extras and extras.thinking:
        yield {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}
        for piece in word_pieces(THINKING_TEXT):
            yield {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": piece}}
        yield {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": THINKING_SIGNATURE},
        }
        yield {"type": "content_block_stop", "index": 0}
        index = 1
    yield from _stream_block(reply, extras, index)
    usage = {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens}
    if extras and extras.cached:
        usage["cache_read_input_tokens"] = extras.cached
    if extras and extras.written:
        usage["cache_creation_input_tokens"] = extras.written
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": STOP_REASONS[reply.finish], "stop_sequence": reply.stop_sequence},
        "usage": usage,
    }
    yield {"type": "message_stop"}


def _stream_block(reply: Reply, extras: Extras | None, index: int) -> Iterator[dict[str, Any]]:
    block = _content(reply)[0]
    if block["type"] == "tool_use":
        yield {"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}}
        yield {"type": "ping"}
        assert reply.tool_call is not None
        for piece in ["", *json_pieces(reply.tool_call.arguments_json)]:
            delta = {"type": "input_json_delta", "partial_json": piece}
            yield {"type": "content_block_delta", "index": index, "delta": delta}
    else:
        yield {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
        yield {"type": "ping"}
        if extras and extras.document_title:
            citation = _citation(extras, reply.text or "")
            yield {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "citations_delta", "citation": citation},
            }
        for piece in word_pieces(reply.text or ""):
            yield {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
    yield {"type": "content_block_stop", "index": index}
