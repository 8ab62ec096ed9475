"""The Anthropic Messages API as an inbound API: `POST /v1/messages` for apps on the Anthropic SDK.

Requests are validated and turned into the internal (OpenAI Chat Completions)
form, so any provider can serve them; answers are turned back into Anthropic
messages (`proxy.frontends.anthropic_render`), and streams into Anthropic events by the encoder in
`proxy.frontends.anthropic_stream`. Pure: no sockets, no clock.

To a backend that speaks the Messages API itself (`anthropic`, Bedrock with `api:
anthropic-messages`) the app's body goes as sent and nothing is lost (`proxy.request.passthrough`).
Only across APIs is it knowingly lossy (no internal equivalent): `top_k`, `thinking` and thinking
blocks, `service_tier`, `output_config.effort`, `is_error` on
tool results, images inside tool results (moved to the user turn after them),
and assistant prefill (the internal form treats it as an ordinary past turn); thinking to a model
without it is dropped, and so are thinking blocks in the history.

`cache_control` (prompt caching) per target: to Anthropic (direct, Bedrock `anthropic-messages`,
Vertex) it is kept as sent (pass-through). Across APIs each block that had one is marked as a
cache breakpoint in the internal form (`proxy.providers.cache_points`; a breakpoint on any block
of an assistant turn or of a tool result covers that whole message, and a `ttl` other than 5m / 1h
is left out): Bedrock Converse sends a `cachePoint` block right after it (at most four), an
Anthropic body rebuilt from the internal form (no pass-through: texts masked or replaced) puts
`cache_control` back on the marked block, and the cached counts come back as cache reads / writes.
OpenAI and Gemini never see the marks: OpenAI caches long prompt prefixes by itself (the cached
count comes back as cache reads), Gemini caches implicitly or through its own cachedContents
resources, which a request cannot create.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.errors import ApiError, bad_request, echo
from proxy.frontends.anthropic_errors import anthropic_error_body
from proxy.frontends.anthropic_render import render_message
from proxy.frontends.anthropic_stream import AnthropicStreamEncoder
from proxy.frontends.base import ParsedChat
from proxy.providers.anthropic_convert import data_url, is_int
from proxy.providers.base import ChatRequest, ChatResponse
from proxy.providers.cache_points import CACHE_POINT, CACHE_POINTS

#: Block types the Messages API knows but this gateway cannot carry through the internal form.
_UNSUPPORTED_BLOCKS = frozenset(
    [
        "search_result",
        "container_upload",
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "mcp_tool_use",
        "mcp_tool_result",
    ]
)
#: Thinking blocks are dropped from history: the internal form has no place for them.
_THINKING_BLOCKS = frozenset({"thinking", "redacted_thinking"})


class AnthropicFrontend:
    api = "anthropic"

    def parse_chat(self, body: Any) -> ParsedChat:
        return parse_messages_request(body)

    def render_chat(self, response: ChatResponse) -> dict[str, Any]:
        return render_message(response)

    def stream_encoder(self, *, include_usage: bool) -> AnthropicStreamEncoder:
        # Anthropic streams always report usage, whatever the flag says.
        return AnthropicStreamEncoder()

    def error_body(self, error: ApiError) -> dict[str, Any]:
        return anthropic_error_body(error)

    def passthrough_error(self, error: ApiError) -> bytes:
        """The event that ends a passed-through stream that failed after it began (`proxy.request.passthrough`)."""
        return AnthropicStreamEncoder().error(error)


def _invalid(path: str, problem: str) -> ApiError:
    return bad_request(f"{path}: {problem}", param=path)


# --- request: Anthropic -> internal ------------------------------------------------------------


def parse_messages_request(body: Any) -> ParsedChat:
    """Validate an Anthropic Messages request and build the internal request.

    Fields with no internal equivalent that do not change the shape of the
    answer (`top_k`, `thinking`, `service_tier`, ...) are dropped rather than
    refused, so SDK defaults keep working; `cache_control` becomes a breakpoint mark.
    """
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "must be a non-empty string")
    max_tokens = body.get("max_tokens")
    if not is_int(max_tokens) or max_tokens < 1:
        raise _invalid("max_tokens", "is required and must be a positive integer")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid("stream", "must be a boolean")
    request: dict[str, Any] = {
        "model": model,
        "messages": _system(body.get("system")) + _messages(body.get("messages")),
        # max_completion_tokens, not the deprecated max_tokens: OpenAI reasoning models refuse the latter.
        "max_completion_tokens": max_tokens,
    }
    if stream:
        request["stream"] = True
    _sampling(body, request)
    _tools(body, request)
    if (stop := body.get("stop_sequences")) is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _invalid("stop_sequences", "must be an array of strings")
        if stop:
            request["stop"] = stop
    if (user := _metadata_user(body.get("metadata"))) is not None:
        request["user"] = user
    if (response_format := _response_format(body.get("output_config"))) is not None:
        request["response_format"] = response_format
    if _has_cache_points(request):
        request[CACHE_POINTS] = True
    return ParsedChat(model=model, stream=stream, request=request, include_usage=True, original=body)


def _sampling(body: dict[str, Any], request: ChatRequest) -> None:
    for field in ("temperature", "top_p"):
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _invalid(field, "must be a number")
        request[field] = value
    # top_k has no OpenAI equivalent; validated, then left out.
    if body.get("top_k") is not None and (not is_int(body["top_k"]) or body["top_k"] < 0):
        raise _invalid("top_k", "must be a non-negative integer")


def _metadata_user(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise _invalid("metadata", "must be an object")
    user = metadata.get("user_id")
    if user is not None and not isinstance(user, str):
        raise _invalid("metadata.user_id", "must be a string")
    return user or None


def _response_format(output_config: Any) -> dict[str, Any] | None:
    """`output_config.format` (constrained JSON) -> a strict OpenAI json_schema. `effort` is dropped."""
    if output_config is None:
        return None
    if not isinstance(output_config, dict):
        raise _invalid("output_config", "must be an object")
    fmt = output_config.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise _invalid("output_config.format", "must be {type: 'json_schema', schema: {...}}")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True}}


def _system(system: Any, path: str = "system") -> list[dict[str, Any]]:
    """The top-level `system`, or a system message's content, as one internal system message."""
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if not isinstance(system, list):
        raise _invalid(path, "must be a string or an array of text blocks")
    parts = [_marked(_text_part(block, f"{path}.{i}"), block) for i, block in enumerate(system)]
    if not parts:
        return []
    return [{"role": "system", "content": _collapsed(parts)}]


def _collapsed(parts: list[dict[str, Any]]) -> Any:
    """One unmarked text part as a plain string (what every provider takes), else the parts."""
    if len(parts) == 1 and parts[0]["type"] == "text" and CACHE_POINT not in parts[0]:
        return parts[0]["text"]
    return parts


def _cache_point(block: Any) -> dict[str, Any] | None:
    """A block's `cache_control` as the internal breakpoint mark (`proxy.providers.cache_points`):
    `{}`, or the TTL when it is one both Anthropic and Bedrock know; None without one."""
    control = block.get("cache_control") if isinstance(block, dict) else None
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        return None
    ttl = control.get("ttl")
    return {"ttl": ttl} if ttl in ("5m", "1h") else {}


def _marked(item: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    """`item` marked as a cache breakpoint when the block it came from asked for one."""
    if "cache_control" in block and (point := _cache_point(block)) is not None:
        item[CACHE_POINT] = point
    return item


def _marked_by_any(item: dict[str, Any], blocks: list[Any]) -> dict[str, Any]:
    """`item` (a whole message) marked when any of the blocks it came from asked for a breakpoint."""
    for block in blocks:
        if isinstance(block, dict) and "cache_control" in block:
            _marked(item, block)
            if CACHE_POINT in item:
                break
    return item


def _has_cache_points(request: ChatRequest) -> bool:
    if any(CACHE_POINT in tool for tool in request.get("tools") or ()):
        return True
    for message in request["messages"]:
        if CACHE_POINT in message:
            return True
        content = message.get("content")
        if isinstance(content, list) and any(CACHE_POINT in part for part in content):
            return True
    return False


def _text_part(block: Any, path: str) -> dict[str, Any]:
    if not isinstance(block, dict) or block.get("type") != "text":
        raise _invalid(path, "must be a text block")
    if not isinstance(block.get("text"), str):
        raise _invalid(f"{path}.text", "must be a string")
    return {"type": "text", "text": block["text"]}


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "must be a non-empty array")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        path = f"messages.{i}"
        if not isinstance(message, dict):
            raise _invalid(path, "must be an object")
        role = message.get("role")
        if role not in ("user", "assistant", "system"):
            raise _invalid(f"{path}.role", f"must be 'user', 'assistant' or 'system', got {echo(role)}")
        content = message.get("content")
        if role == "system":
            # Mid-conversation system messages (newer models) keep their place in the internal form.
            out += _system(content, f"{path}.content")
        elif isinstance(content, str):
            out.append({"role": role, "content": content})
        elif isinstance(content, list):
            blocks = [_checked_block(block, f"{path}.content.{j}") for j, block in enumerate(content)]
            out += _user_turn(blocks) if role == "user" else [_assistant_turn(blocks)]
        else:
            raise _invalid(f"{path}.content", "must be a string or an array of content blocks")
    return out


def _checked_block(block: Any, path: str) -> tuple[str, dict[str, Any]]:
    """(path, block) for a block with a known, supported type."""
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise _invalid(path, "must be a content block object with a type")
    kind = block["type"]
    if kind in _UNSUPPORTED_BLOCKS:
        raise _invalid(path, f"block type {echo(kind)} is not supported by this gateway")
    if kind not in ("text", "image", "document", "tool_use", "tool_result") and kind not in _THINKING_BLOCKS:
        raise _invalid(path, f"unknown block type {echo(kind)}")
    return path, block


def _user_turn(blocks: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One user message -> its tool results as `tool` messages (in order), then one user message."""
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    tool_images: list[dict[str, Any]] = []
    for block_path, block in blocks:
        kind = block["type"]
        if kind == "tool_result":
            message, images = _tool_result(block, block_path)
            tool_messages.append(message)
            tool_images += images
        elif kind in ("text", "image", "document"):
            parts.append(_marked(_content_part(block, block_path), block))
        else:
            raise _invalid(block_path, f"{kind} blocks are not allowed in user messages")
    # Tool messages carry text only, so images a tool returned follow as user content.
    parts = tool_images + parts
    if not parts:
        return tool_messages
    return [*tool_messages, {"role": "user", "content": _collapsed(parts)}]


def _content_part(block: dict[str, Any], path: str) -> dict[str, Any]:
    if block["type"] == "text":
        return _text_part(block, path)
    if block["type"] == "image":
        return {"type": "image_url", "image_url": {"url": _source_url(block.get("source"), f"{path}.source")}}
    return _document_part(block, path)


def _source_url(source: Any, path: str) -> str:
    """An image `source` (base64 or url) as a URL: base64 becomes a data: URL."""
    if not isinstance(source, dict):
        raise _invalid(path, "must be an object")
    if source.get("type") == "base64":
        for field in ("media_type", "data"):
            if not isinstance(source.get(field), str) or not source[field]:
                raise _invalid(f"{path}.{field}", "must be a non-empty string")
        return data_url(source["media_type"], source["data"])
    if source.get("type") == "url":
        if not isinstance(source.get("url"), str) or not source["url"]:
            raise _invalid(f"{path}.url", "must be a non-empty string")
        return str(source["url"])
    raise _invalid(f"{path}.type", f"source type {echo(source.get('type'))} is not supported (use base64 or url)")


def _document_part(block: dict[str, Any], path: str) -> dict[str, Any]:
    """A base64 PDF document -> an OpenAI `file` part; a plain-text document -> a text part."""
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "text" and isinstance(source.get("data"), str):
        return {"type": "text", "text": source["data"]}
    if not isinstance(source, dict) or source.get("type") != "base64" or source.get("media_type") != "application/pdf":
        raise _invalid(f"{path}.source", "only base64 PDF and plain-text documents are supported")
    url = _source_url(source, f"{path}.source")
    title = block.get("title") if isinstance(block.get("title"), str) and block.get("title") else "document.pdf"
    return {"type": "file", "file": {"file_data": url, "filename": title}}


def _tool_result(block: dict[str, Any], path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A tool_result -> (a `tool` message, image parts it carried)."""
    tool_id = block.get("tool_use_id")
    if not isinstance(tool_id, str) or not tool_id:
        raise _invalid(f"{path}.tool_use_id", "must be a non-empty string")
    if block.get("is_error") is not None and not isinstance(block["is_error"], bool):
        raise _invalid(f"{path}.is_error", "must be a boolean")
    content = block.get("content", "")
    texts: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        for k, inner in enumerate(content):
            inner_path = f"{path}.content.{k}"
            kind = inner.get("type") if isinstance(inner, dict) else None
            if kind == "text":
                texts.append(_text_part(inner, inner_path))
            elif kind == "image":
                images.append(_content_part(inner, inner_path))
            else:
                raise _invalid(inner_path, f"tool_result content must be text or image blocks, got {echo(kind)}")
    else:
        raise _invalid(f"{path}.content", "must be a string or an array of text and image blocks")
    tool_content: Any = texts[0]["text"] if len(texts) == 1 else texts or ""
    message = {"role": "tool", "tool_call_id": tool_id, "content": tool_content}
    return _marked_by_any(message, [block, *content] if isinstance(content, list) else [block]), images


def _assistant_turn(blocks: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block_path, block in blocks:
        kind = block["type"]
        if kind == "text":
            texts.append(_text_part(block, block_path)["text"])
        elif kind == "tool_use":
            calls.append(_tool_call(block, block_path))
        elif kind not in _THINKING_BLOCKS:
            raise _invalid(block_path, f"{kind} blocks are not allowed in assistant messages")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    # The turn is one message here: a breakpoint on any of its blocks covers the whole turn.
    return _marked_by_any(message, [block for _, block in blocks])


def _tool_call(block: dict[str, Any], path: str) -> dict[str, Any]:
    for field in ("id", "name"):
        if not isinstance(block.get(field), str) or not block[field]:
            raise _invalid(f"{path}.{field}", "must be a non-empty string")
    if not isinstance(block.get("input"), dict):
        raise _invalid(f"{path}.input", "must be an object")
    arguments = json.dumps(block["input"])
    return {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}


def _tools(body: dict[str, Any], request: ChatRequest) -> None:
    tools = body.get("tools")
    if tools is None or tools == []:
        # OpenAI rejects tool_choice without tools, and it means nothing then: dropped.
        return
    if not isinstance(tools, list):
        raise _invalid("tools", "must be an array")
    request["tools"] = [_tool(tool, f"tools.{i}") for i, tool in enumerate(tools)]
    choice = body.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, dict):
        raise _invalid("tool_choice", "must be an object")
    kind = choice.get("type")
    if kind in ("auto", "none"):
        request["tool_choice"] = kind
    elif kind == "any":
        request["tool_choice"] = "required"
    elif kind == "tool":
        if not isinstance(choice.get("name"), str) or not choice["name"]:
            raise _invalid("tool_choice.name", "must be a non-empty string")
        request["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise _invalid("tool_choice.type", f"must be auto, any, tool or none, got {echo(kind)}")
    disable_parallel = choice.get("disable_parallel_tool_use")
    if disable_parallel is not None and not isinstance(disable_parallel, bool):
        raise _invalid("tool_choice.disable_parallel_tool_use", "must be a boolean")
    if disable_parallel:
        request["parallel_tool_calls"] = False


def _tool(tool: Any, path: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise _invalid(path, "must be an object")
    if tool.get("type") not in (None, "custom"):
        raise _invalid(f"{path}.type", f"server tool {echo(tool.get('type'))} is not supported by this gateway")
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise _invalid(f"{path}.name", "must be a non-empty string")
    if not isinstance(tool.get("input_schema"), dict):
        raise _invalid(f"{path}.input_schema", "must be an object")
    function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
    if tool.get("description") is not None:
        if not isinstance(tool["description"], str):
            raise _invalid(f"{path}.description", "must be a string")
        function["description"] = tool["description"]
    if tool.get("strict") is True:
        function["strict"] = True
    return _marked({"type": "function", "function": function}, tool)
