"""An internal (OpenAI Chat Completions) request -> an Anthropic Messages request body (`messages_body`).

Used by every translator that sends the Messages API (`proxy.providers.anthropic`, Bedrock's
`anthropic-messages`, Vertex). Pure, no I/O. Malformed internal requests raise `ApiError` 400
naming the field.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.errors import bad_request, echo
from proxy.json_limits import loads_bounded
from proxy.providers.anthropic_convert import is_int, parse_data_url
from proxy.providers.base import ChatRequest
from proxy.providers.cache_points import CACHE_POINT, CACHE_POINTS
from proxy.providers.chat_fields import number

#: Anthropic requires `max_tokens`; OpenAI does not. Used when the caller gave none.
DEFAULT_MAX_TOKENS = 4096
#: OpenAI accepts temperature up to 2, Anthropic up to 1.
MAX_TEMPERATURE = 1.0
JSON_OBJECT_INSTRUCTION = "Respond with a single JSON object and nothing else: no prose, no code fences."

# Fields that change the shape of what the caller gets back. Anthropic cannot
# honour them, and answering something else silently would be worse than a 400.
# Ignored on purpose (the answer keeps its shape without them): seed,
# frequency_penalty, presence_penalty, logit_bias (sampling tweaks Anthropic has
# no knob for), store, metadata, service_tier, prediction, reasoning_effort,
# and stream_options (Anthropic streams always carry usage).
_UNSUPPORTED_IF_SET = {
    "logprobs": "log probabilities are not available from Anthropic",
    "top_logprobs": "log probabilities are not available from Anthropic",
    "audio": "audio output is not available from Anthropic",
    "functions": "legacy `functions` are not supported; use `tools`",
    "function_call": "legacy `function_call` is not supported; use `tool_choice`",
    "web_search_options": "web_search_options is not supported by Anthropic providers",
}


def messages_body(request: ChatRequest, *, model: str, stream: bool) -> dict[str, Any]:
    """The Anthropic Messages request body for an internal (OpenAI Chat Completions) request."""
    _reject_unsupported(request)
    caching = CACHE_POINTS in request  # the app's cache_control, marked by the Anthropic front end
    system, messages = convert_messages(request.get("messages"), caching=caching)
    instructions, output_config = _response_format(request.get("response_format"))
    system += instructions
    body: dict[str, Any] = {"model": model, "max_tokens": _max_tokens(request), "messages": messages}
    if system:
        body["system"] = system[0]["text"] if len(system) == 1 and "cache_control" not in system[0] else system
    if output_config:
        body["output_config"] = output_config
    if (stop := _stop_sequences(request.get("stop"))) is not None:
        body["stop_sequences"] = stop
    if (temperature := number(request, "temperature")) is not None:
        # An app tuned for OpenAI may send up to 2; clamping keeps a fallback to Anthropic working.
        body["temperature"] = min(temperature, MAX_TEMPERATURE)
    if (top_p := number(request, "top_p")) is not None:
        body["top_p"] = top_p
    user = request.get("user") or request.get("safety_identifier")
    if isinstance(user, str) and user:
        body["metadata"] = {"user_id": user}
    if request.get("tools"):
        body["tools"] = convert_tools(request["tools"], caching=caching)
        choice = convert_tool_choice(request.get("tool_choice"), request.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    # Without tools a tool_choice means nothing (and Anthropic would reject it): dropped.
    if stream:
        body["stream"] = True
    return body


def _reject_unsupported(request: ChatRequest) -> None:
    if not isinstance(request, dict):
        raise bad_request("request body must be a JSON object")
    n = request.get("n")
    if n is not None and n != 1:
        raise bad_request(f"n={echo(n)} is not supported: Anthropic returns a single choice", param="n")
    for field, why in _UNSUPPORTED_IF_SET.items():
        if request.get(field) not in (None, False):
            raise bad_request(why, param=field)
    modalities = request.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        raise bad_request("Anthropic providers only produce text", param="modalities")


def _max_tokens(request: ChatRequest) -> int:
    for field in ("max_completion_tokens", "max_tokens"):
        value = request.get(field)
        if value is None:
            continue
        if not is_int(value) or value < 1:
            raise bad_request(f"{field} must be a positive integer", param=field)
        return int(value)
    return DEFAULT_MAX_TOKENS


def _stop_sequences(stop: Any) -> list[str] | None:
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop] if stop else None
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return [s for s in stop if s] or None
    raise bad_request("stop must be a string or an array of strings", param="stop")


def _response_format(fmt: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """System instructions and/or `output_config` for an OpenAI `response_format`.

    `json_schema` with `strict: true` asks for a guarantee: that maps onto
    Anthropic's constrained decoding (`output_config.format`), which accepts the
    same restricted schema subset as OpenAI's strict mode. Without `strict`, and
    for `json_object`, the Messages API has no equivalent, so we emulate it with
    a system instruction (best effort, as the non-strict OpenAI modes are).
    """
    if fmt is None:
        return [], None
    if not isinstance(fmt, dict):
        raise bad_request("response_format must be an object", param="response_format")
    kind = fmt.get("type")
    if kind == "text":
        return [], None
    if kind == "json_object":
        return [_text(JSON_OBJECT_INSTRUCTION)], None
    if kind != "json_schema":
        raise bad_request(f"response_format.type {echo(kind)} is not supported", param="response_format.type")
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict):
        raise bad_request("response_format.json_schema must be an object", param="response_format.json_schema")
    schema = spec.get("schema")
    if schema is None:
        return [_text(JSON_OBJECT_INSTRUCTION)], None
    if not isinstance(schema, dict):
        raise bad_request("response_format.json_schema.schema must be an object", param="response_format.json_schema")
    if spec.get("strict") is True:
        return [], {"format": {"type": "json_schema", "schema": schema}}
    instruction = (
        "Respond with a single JSON value that conforms to this JSON schema, and nothing else"
        f" (no prose, no code fences):\n{json.dumps(schema)}"
    )
    return [_text(instruction)], None


def convert_messages(messages: Any, *, caching: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI messages -> (Anthropic system text blocks, Anthropic messages).

    System and developer messages become the top-level `system`, wherever they
    stood (Anthropic has no system turns). Tool results become `tool_result`
    blocks in a user turn, and consecutive turns of one role merge, since
    Anthropic wants user and assistant turns to alternate. With `caching`, the front end's
    cache marks (`proxy.providers.cache_points`) become `cache_control` on the blocks they marked.
    """
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty array", param="messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{path} must be an object", param=path)
        role = message.get("role")
        if role in ("system", "developer"):
            system += _text_blocks(message.get("content"), f"{path}.content", caching=caching)
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), f"{path}.content", caching=caching)
        elif role == "assistant":
            blocks = _assistant_blocks(message, path)
        elif role == "tool":
            role, blocks = "user", [_tool_result_block(message, path)]
        else:
            raise bad_request(f"{path}.role: unsupported role {echo(role)}", param=f"{path}.role")
        if caching and blocks and CACHE_POINT in message:  # a tool result or assistant turn: its last block
            _mark(blocks[-1], message)
        if blocks:
            _append_turn(turns, role, blocks)
    if not turns:
        raise bad_request("messages must contain a user or assistant message", param="messages")
    for turn in turns:
        # Anthropic wants tool results first in a user turn; the sort is stable.
        turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return system, turns


def _append_turn(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _mark(block: dict[str, Any], marked: dict[str, Any]) -> None:
    block["cache_control"] = {"type": "ephemeral", **marked[CACHE_POINT]}


def _text_blocks(content: Any, path: str, *, caching: bool = False) -> list[dict[str, Any]]:
    """String or text-part content. Empty text is dropped: Anthropic rejects empty text blocks."""
    if isinstance(content, str):
        return [_text(content)] if content else []
    if not isinstance(content, list):
        raise bad_request(f"{path} must be a string or an array of text parts", param=path)
    blocks = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise bad_request(f"{path}[{j}] must be a text part", param=f"{path}[{j}]")
        if part["text"]:
            blocks.append(_text(part["text"]))
            if caching and CACHE_POINT in part:
                _mark(blocks[-1], part)
    return blocks


def _user_blocks(content: Any, path: str, *, caching: bool = False) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [_text(content)] if content else []
    if not isinstance(content, list):
        raise bad_request(f"{path} must be a string or an array of content parts", param=path)
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        part_path = f"{path}[{j}]"
        made = len(blocks)
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad_request(f"{part_path}.text must be a string", param=f"{part_path}.text")
            blocks += [_text(part["text"])] if part["text"] else []
        elif kind == "image_url":
            blocks.append(_image_block(part.get("image_url"), f"{part_path}.image_url"))
        elif kind == "file":
            blocks.append(_document_block(part.get("file"), f"{part_path}.file"))
        else:
            raise bad_request(f"{part_path}: content part type {echo(kind)} is not supported", param=part_path)
        if caching and len(blocks) > made and CACHE_POINT in part:  # an empty text made no block to mark
            _mark(blocks[-1], part)
    return blocks


def _image_block(image: Any, path: str) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise bad_request(f"{path}.url must be a string", param=path)
    if url.startswith("data:"):
        parsed = parse_data_url(url)
        if parsed is None:
            raise bad_request(f"{path}.url: only base64 data: URLs are supported", param=path)
        media_type, data = parsed
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise bad_request(f"{path}.url must be an http(s) or base64 data: URL", param=path)


def _document_block(file: Any, path: str) -> dict[str, Any]:
    """An OpenAI `file` part carrying a PDF inline -> an Anthropic `document` block."""
    data = file.get("file_data") if isinstance(file, dict) else None
    parsed = parse_data_url(data) if isinstance(data, str) else None
    if parsed is None or parsed[0] != "application/pdf":
        raise bad_request(f"{path}: only inline PDFs (file_data as a base64 data: URL) are supported", param=path)
    source = {"type": "base64", "media_type": parsed[0], "data": parsed[1]}
    block: dict[str, Any] = {"type": "document", "source": source}
    if isinstance(file.get("filename"), str) and file["filename"]:
        block["title"] = file["filename"]
    return block


def _assistant_blocks(message: dict[str, Any], path: str) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, list):
        # Assistant parts are text or refusal; both are just text to Anthropic.
        content = [
            {"type": "text", "text": p.get("refusal")} if isinstance(p, dict) and p.get("type") == "refusal" else p
            for p in content
        ]
    blocks = [] if content is None else _text_blocks(content, f"{path}.content")
    calls = message.get("tool_calls")
    if calls is None:
        return blocks
    if not isinstance(calls, list):
        raise bad_request(f"{path}.tool_calls must be an array", param=f"{path}.tool_calls")
    return blocks + [_tool_use_block(call, f"{path}.tool_calls[{k}]") for k, call in enumerate(calls)]


def _tool_use_block(call: Any, path: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or call.get("type", "function") != "function":
        raise bad_request(f"{path} must be a function tool call", param=path)
    if not isinstance(call.get("id"), str) or not call["id"]:
        raise bad_request(f"{path}.id must be a non-empty string", param=f"{path}.id")
    if not isinstance(function.get("name"), str) or not function["name"]:
        raise bad_request(f"{path}.function.name must be a non-empty string", param=f"{path}.function.name")
    arguments = function.get("arguments") or "{}"
    try:
        parsed = loads_bounded(arguments) if isinstance(arguments, str) else None
    except ValueError:  # not JSON, or nested too deep to send on
        parsed = None
    if not isinstance(parsed, dict):
        raise bad_request(f"{path}.function.arguments must be a JSON object", param=f"{path}.function.arguments")
    return {"type": "tool_use", "id": call["id"], "name": function["name"], "input": parsed}


def _tool_result_block(message: dict[str, Any], path: str) -> dict[str, Any]:
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str) or not tool_call_id:
        raise bad_request(f"{path}.tool_call_id must be a non-empty string", param=f"{path}.tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content is not None:
        texts = _text_blocks(content, f"{path}.content")
        if texts:
            block["content"] = texts
    return block


def convert_tools(tools: Any, *, caching: bool = False) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise bad_request("tools must be an array", param="tools")
    converted = []
    for i, tool in enumerate(tools):
        path = f"tools[{i}]"
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            raise bad_request(f"{path}: only function tools are supported", param=path)
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request(f"{path}.function.name must be a non-empty string", param=f"{path}.function.name")
        schema = function.get("parameters")
        if schema is None:
            schema = {"type": "object", "properties": {}}  # OpenAI allows omitting it; Anthropic does not
        elif not isinstance(schema, dict):
            raise bad_request(f"{path}.function.parameters must be an object", param=f"{path}.function.parameters")
        out: dict[str, Any] = {"name": name, "input_schema": schema}
        if isinstance(function.get("description"), str):
            out["description"] = function["description"]
        if function.get("strict") is True:
            out["strict"] = True
        if caching and CACHE_POINT in tool:
            _mark(out, tool)
        converted.append(out)
    return converted


def convert_tool_choice(choice: Any, parallel_tool_calls: Any) -> dict[str, Any] | None:
    converted: dict[str, Any] | None
    if choice is None:
        converted = None
    elif choice in ("auto", "none"):
        converted = {"type": choice}
    elif choice == "required":
        converted = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("function", {}).get("name") if isinstance(choice.get("function"), dict) else None
        if not isinstance(name, str) or not name:
            raise bad_request("tool_choice.function.name must be a non-empty string", param="tool_choice")
        converted = {"type": "tool", "name": name}
    else:
        raise bad_request(f"tool_choice {echo(choice)} is not supported", param="tool_choice")
    if parallel_tool_calls is False and (converted is None or converted["type"] != "none"):
        converted = {**(converted or {"type": "auto"}), "disable_parallel_tool_use": True}
    return converted
