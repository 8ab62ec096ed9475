"""Internal requests (OpenAI Chat Completions shape) -> Amazon Bedrock Converse request bodies.

Used by `BedrockTranslator` (`proxy.providers.bedrock`), which adds the URL and signs. The
same body serves `Converse` and `ConverseStream`. How fields cross:

- `system` / `developer` messages -> `system: [{text}]` (all of them, in order: Converse has one
  system list, so a mid-conversation instruction loses its position).
- `user` text and images (base64 `data:` URLs only: Converse takes image bytes or S3 locations,
  not web URLs, so an http(s) image is a 400) -> `content` blocks.
- assistant `tool_calls` -> `toolUse` blocks (arguments parsed: Converse wants the input object);
  `tool` messages -> `toolResult` blocks in a user turn. Converse wants turns to alternate, so
  consecutive messages of one role (parallel tool results, a result then a user remark) join
  one turn.
- `tools` -> `toolConfig.tools[].toolSpec` (parameters as `inputSchema.json`);
  `tool_choice` auto / required / a named function -> `auto` / `any` / `tool`. Converse has no
  "none": the tools are left out, unless the history holds tool blocks (Bedrock then requires a
  toolConfig), in which case they are sent with `auto` and the model may still call one.
- `max_completion_tokens` / `max_tokens`, `temperature`, `top_p`, `stop` -> `inferenceConfig`.
- Prompt-cache breakpoints (Anthropic's `cache_control`, marked by its front end:
  `proxy.providers.cache_points`) -> a `cachePoint` block (`type: default`, and the `ttl` the app
  asked for) right after the marked system text, content part, message (a tool result or an
  assistant turn) or tool: Converse's own prompt caching. At most four, as both Anthropic and
  Bedrock allow: the first four in prompt order (tools, system, messages); a mark on a block that
  is not sent (empty text) is dropped. The cached counts come back in `usage` as
  `cacheReadInputTokens` / `cacheWriteInputTokens` (`proxy.providers.bedrock`). An OpenAI request
  has no breakpoints: Converse caches nothing unless asked.
- `n` above 1, `response_format` json modes and `logprobs` have no Converse counterpart: a 400
  naming the field. Seed and penalties are not sent (no Converse field; the answer is still
  a valid one).

Pure, no I/O. Requests Bedrock cannot take raise `ApiError` 400 naming the field.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.errors import bad_request, echo
from proxy.providers.anthropic_convert import parse_data_url
from proxy.providers.base import ChatRequest
from proxy.providers.cache_points import CACHE_POINT, CACHE_POINTS, MAX_CACHE_POINTS
from proxy.providers.chat_fields import number, stop_sequences, texts

Json = dict[str, Any]

_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


def converse_body(request: ChatRequest) -> Json:
    if not isinstance(request, dict):
        raise bad_request("request body must be a JSON object")
    caching = CACHE_POINTS in request
    system, messages = _messages(request.get("messages"), caching=caching)
    body: Json = {"messages": messages}
    if system:
        body["system"] = system
    tool_config = _tool_config(request, messages, caching=caching)
    if tool_config is not None:
        body["toolConfig"] = tool_config
    inference = _inference_config(request)
    if inference:
        body["inferenceConfig"] = inference
    _refuse_what_cannot_cross(request)
    if caching:
        _keep_first_cache_points(body)
    return body


# --- prompt caching --------------------------------------------------------------------------


def _close_with_cache_point(blocks: list[Json], marked: Any, *, caching: bool) -> None:
    """Append a cachePoint after `blocks` when `marked` (a part, message or tool) carries a mark."""
    if not caching or not isinstance(marked, dict) or CACHE_POINT not in marked:
        return
    if not blocks or "cachePoint" in blocks[-1]:
        return  # nothing before it to cache, or already closed there
    mark = marked[CACHE_POINT]
    point: Json = {"type": "default"}
    if isinstance(mark, dict) and mark.get("ttl") in ("5m", "1h"):
        point["ttl"] = mark["ttl"]
    blocks.append({"cachePoint": point})


def _keep_first_cache_points(body: Json) -> None:
    """Drop the cachePoints past the fourth, counted in prompt order: tools, system, messages."""
    lists = [body.get("toolConfig", {}).get("tools", []), body.get("system", [])]
    lists += [message["content"] for message in body["messages"]]
    left = MAX_CACHE_POINTS
    for blocks in lists:
        kept = []
        for block in blocks:
            if "cachePoint" in block:
                if not left:
                    continue
                left -= 1
            kept.append(block)
        blocks[:] = kept


def _refuse_what_cannot_cross(request: ChatRequest) -> None:
    n = request.get("n")
    if n is not None and n != 1:
        raise bad_request("n: Bedrock Converse returns one choice; send n=1 or leave it out", param="n")
    response_format = request.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        raise bad_request(
            "response_format json modes cannot be sent to Bedrock Converse: describe the JSON in the prompt, "
            "or use a tool whose parameters are the schema",
            param="response_format",
        )
    if request.get("logprobs"):
        raise bad_request("logprobs: Bedrock Converse does not return log probabilities", param="logprobs")


# --- messages --------------------------------------------------------------------------------


def _messages(messages: Any, *, caching: bool) -> tuple[list[Json], list[Json]]:
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty array", param="messages")
    system: list[Json] = []
    turns: list[Json] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object", param=where)
        role = message.get("role")
        if role in ("system", "developer"):
            _system_blocks(system, message, where, caching=caching)
            continue
        if role == "user":
            blocks, turn_role = _user_blocks(message.get("content"), where, caching=caching), "user"
        elif role == "assistant":
            blocks, turn_role = _assistant_blocks(message, where), "assistant"
        elif role == "tool":
            blocks, turn_role = [_tool_result(message, where)], "user"
        else:
            raise bad_request(f"{where}.role {echo(role)} cannot be sent to Bedrock", param=f"{where}.role")
        _close_with_cache_point(blocks, message, caching=caching)
        if not blocks:
            continue  # Converse refuses a message without content blocks
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": turn_role, "content": blocks})
    if not turns:
        raise bad_request("messages: Bedrock needs at least one user or assistant message", param="messages")
    return system, turns


def _system_blocks(system: list[Json], message: Json, where: str, *, caching: bool) -> None:
    content = message.get("content")
    found = texts(content, where)
    parts = content if isinstance(content, list) else [None] * len(found)
    for text, part in zip(found, parts, strict=True):
        if text:
            system.append({"text": text})
        _close_with_cache_point(system, part, caching=caching)
    _close_with_cache_point(system, message, caching=caching)


def _user_blocks(content: Any, where: str, *, caching: bool) -> list[Json]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or an array of parts", param=f"{where}.content")
    blocks: list[Json] = []
    for j, part in enumerate(content):
        path = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad_request(f"{path}.text must be a string", param=f"{path}.text")
            blocks += [{"text": part["text"]}] if part["text"] else []
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url"), f"{path}.image_url"))
        else:
            raise bad_request(f"{path}: content part type {echo(kind)} cannot be sent to Bedrock", param=path)
        _close_with_cache_point(blocks, part, caching=caching)
    return blocks


def _image(image: Any, path: str) -> Json:
    url = image.get("url") if isinstance(image, dict) else image
    parsed = parse_data_url(url) if isinstance(url, str) else None
    if parsed is None:
        raise bad_request(
            f"{path}.url: Bedrock takes images as base64 data: URLs only (it does not fetch web URLs)", param=path
        )
    media_type, data = parsed
    image_format = _IMAGE_FORMATS.get(media_type.lower())
    if image_format is None:
        raise bad_request(f"{path}.url: image type {echo(media_type)} is not png, jpeg, gif or webp", param=path)
    # Converse's JSON wire form carries `bytes` as base64: the data URL's payload as it is.
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def _assistant_blocks(message: Json, where: str) -> list[Json]:
    blocks: list[Json] = [{"text": t} for t in texts(message.get("content"), where) if t]
    calls = message.get("tool_calls")
    if calls is None:
        return blocks
    if not isinstance(calls, list):
        raise bad_request(f"{where}.tool_calls must be an array", param=f"{where}.tool_calls")
    for k, call in enumerate(calls):
        path = f"{where}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str) or not call["id"]:
            raise bad_request(f"{path} must have an id and a function", param=path)
        name, arguments = function.get("name"), function.get("arguments") or "{}"
        if not isinstance(name, str) or not name or not isinstance(arguments, str):
            raise bad_request(f"{path}.function needs a name and string arguments", param=f"{path}.function")
        try:
            tool_input = json.loads(arguments)
        except ValueError:
            raise bad_request(f"{path}.function.arguments is not JSON", param=f"{path}.function.arguments") from None
        if not isinstance(tool_input, dict):
            raise bad_request(
                f"{path}.function.arguments must be a JSON object for Bedrock", param=f"{path}.function.arguments"
            )
        blocks.append({"toolUse": {"toolUseId": call["id"], "name": name, "input": tool_input}})
    return blocks


def _tool_result(message: Json, where: str) -> Json:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request(f"{where}.tool_call_id must be a non-empty string", param=f"{where}.tool_call_id")
    # Converse refuses an empty result content list: an empty result is an empty text.
    content = [{"text": t} for t in texts(message.get("content"), where) if t] or [{"text": ""}]
    return {"toolResult": {"toolUseId": call_id, "content": content}}


# --- tools -----------------------------------------------------------------------------------


def _has_tool_blocks(messages: list[Json]) -> bool:
    return any("toolUse" in block or "toolResult" in block for m in messages for block in m["content"])


def _tool_config(request: ChatRequest, messages: list[Json], *, caching: bool) -> Json | None:
    tools = request.get("tools")
    if not tools:
        return None
    if not isinstance(tools, list):
        raise bad_request("tools must be an array", param="tools")
    specs: list[Json] = []
    for i, tool in enumerate(tools):
        specs.append(_tool_spec(tool, f"tools[{i}]"))
        _close_with_cache_point(specs, tool, caching=caching)
    choice = request.get("tool_choice")
    if choice == "none" and not _has_tool_blocks(messages):
        return None
    config: Json = {"tools": specs}
    if choice is not None and choice != "none":
        config["toolChoice"] = _tool_choice(choice)
    return config


def _tool_spec(tool: Any, path: str) -> Json:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type", "function") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise bad_request(f"{path}: only function tools with a name can be sent to Bedrock", param=path)
    parameters = function.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise bad_request(f"{path}.function.parameters must be an object", param=f"{path}.function.parameters")
    spec: Json = {"name": function["name"], "inputSchema": {"json": parameters}}
    description = function.get("description")
    if isinstance(description, str) and description:
        spec["description"] = description
    return {"toolSpec": spec}


def _tool_choice(choice: Any) -> Json:
    if choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"tool": {"name": function["name"]}}
    raise bad_request(f"tool_choice {echo(choice)} cannot be sent to Bedrock", param="tool_choice")


# --- inferenceConfig -------------------------------------------------------------------------


def _inference_config(request: ChatRequest) -> Json:
    config: Json = {}
    field = "max_completion_tokens" if request.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = request.get(field)
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise bad_request(f"{field} must be a positive integer", param=field)
        config["maxTokens"] = max_tokens
    for field, key in (("temperature", "temperature"), ("top_p", "topP")):
        value = number(request, field)
        if value is not None:
            config[key] = value
    if (stop := stop_sequences(request)) is not None:
        config["stopSequences"] = stop
    return config
