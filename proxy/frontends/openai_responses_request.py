"""The Responses API request read: validated, and turned into the internal (Chat Completions) form,
or refused with the field that cannot cross (`proxy.frontends.openai_responses` has the whole story)."""

from __future__ import annotations

import re
from typing import Any

from proxy.errors import ApiError, bad_request, echo
from proxy.frontends.base import ParsedChat
from proxy.providers.base import ChatRequest

#: Top-level fields that need a provider which keeps responses (or runs prompts) on its side.
_STATEFUL = ("previous_response_id", "conversation", "prompt")
_MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
_TOOL_CHOICE_MODES = frozenset({"none", "auto", "required"})
_TEXT_FORMATS = frozenset({"text", "json_object", "json_schema"})
_OPTIONAL_STRINGS = ("user", "safety_identifier", "prompt_cache_key", "service_tier")
#: The error code of what only a provider serving the Responses API can do.
PROVIDER_ONLY = "unsupported_parameter"
_MAX_LEFT_OUT = 64


def _invalid(path: str, problem: str) -> ApiError:
    return bad_request(f"{path} {problem}", param=path)


def _wrong(path: str, expected: str, value: Any) -> ApiError:
    return bad_request(f"{path} must be {expected}, got {echo(value)}", param=path)


def _not_translatable(path: str, why: str) -> ApiError:
    return bad_request(
        f"{path} {why}; only a backend that serves the Responses API itself (openai, azure-openai) can "
        "take it, and this request's backends translate it to the chat form, which keeps and runs nothing "
        "on the provider's side",
        param=path,
        code=PROVIDER_ONLY,
    )


def sketch(body: dict[str, Any], error: ApiError) -> tuple[ParsedChat, dict[str, Any]]:
    """The internal form of what can be read of a request that needs a backend serving the Responses
    API: never sent (that backend gets the app's body), but classified, estimated for limits and
    captured like any request. What cannot be translated is left out, one piece at a time."""
    stripped: Any = body
    for _ in range(_MAX_LEFT_OUT):
        stripped = _without(stripped, error.param or "")
        try:
            return parse_responses_request(stripped)
        except ApiError as again:
            if again.code != PROVIDER_ONLY or again.param == error.param:
                break
            error = again
    # nothing translatable is left (only items the provider keeps): the request as one empty turn
    model = body["model"]
    request: ChatRequest = {"model": model, "messages": [{"role": "user", "content": ""}]}
    stream = body.get("stream") is True
    if stream:
        request["stream"] = True
    return ParsedChat(model=model, stream=stream, request=request, include_usage=True), {}


def _without(body: dict[str, Any], param: str) -> dict[str, Any]:
    """`body` (copied where changed) without what `param` names: the innermost array element on its
    path (an input item, a content part, a tool), else the top-level field."""
    steps = [int(s) if s.isdigit() else s for s in re.split(r"[.\[\]]+", param) if s]
    last_index = max((i for i, step in enumerate(steps) if isinstance(step, int)), default=-1)
    if last_index < 0:
        return {k: v for k, v in body.items() if k != steps[0]} if steps else body

    def drop(node: Any, depth: int) -> Any:
        step = steps[depth]
        if depth == last_index:
            return [v for i, v in enumerate(node) if i != step] if isinstance(node, list) else node
        if isinstance(node, dict) and isinstance(step, str) and step in node:
            return {**node, step: drop(node[step], depth + 1)}
        if isinstance(node, list) and isinstance(step, int) and step < len(node):
            return [drop(v, depth + 1) if i == step else v for i, v in enumerate(node)]
        return node

    return drop(body, 0)  # type: ignore[no-any-return]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(body: dict[str, Any], field: str) -> float | int | None:
    value = body.get(field)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise _wrong(field, "a number", value)
    return value


# --- request: Responses -> internal ------------------------------------------------------------


def parse_responses_request(body: Any) -> tuple[ParsedChat, dict[str, Any]]:
    """(the internal request, the request parameters the response object echoes)."""
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a non-empty string", param="model")
    for field in _STATEFUL:
        if body.get(field) is not None:
            raise _not_translatable(field, "needs responses kept by the provider")
    if body.get("store") is True:
        raise _not_translatable("store", "(true) asks the provider to keep the response; send store: false")
    if body.get("store") is not None and not isinstance(body["store"], bool):
        raise _wrong("store", "a boolean", body["store"])
    if body.get("background") is True:
        raise _not_translatable("background", "(true) needs a response the provider keeps running")
    stream = body.get("stream")
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _wrong("stream", "a boolean", stream)

    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _wrong("instructions", "a string", instructions)
        if instructions:
            messages.append({"role": "system", "content": instructions})
    messages += _input(body.get("input"))
    if not messages:
        raise bad_request("'input' is required and must hold at least one message", param="input")
    request: ChatRequest = {"model": model, "messages": messages}
    if stream:
        request["stream"] = True
    for field in ("temperature", "top_p"):
        if (value := _number(body, field)) is not None:
            request[field] = value
    max_output = body.get("max_output_tokens")
    if max_output is not None:
        if not _is_int(max_output) or max_output < 1:
            raise _wrong("max_output_tokens", "a positive integer", max_output)
        # max_completion_tokens, not the deprecated max_tokens: OpenAI reasoning models refuse the latter.
        request["max_completion_tokens"] = max_output
    tools = _tools(body.get("tools"))
    if tools:
        request["tools"] = tools
    if (choice := _tool_choice(body.get("tool_choice"))) is not None:
        request["tool_choice"] = choice
    parallel = body.get("parallel_tool_calls")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise _wrong("parallel_tool_calls", "a boolean", parallel)
        if tools:
            request["parallel_tool_calls"] = parallel
    _text(body.get("text"), request)
    _reasoning(body.get("reasoning"), request)
    for field in _OPTIONAL_STRINGS:
        value = body.get(field)
        if value is not None:
            if not isinstance(value, str):
                raise _wrong(field, "a string", value)
            request[field] = value
    _accepted_unused(body)
    echoed = {
        "instructions": instructions,
        "max_output_tokens": max_output,
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "tools": body.get("tools") or [],
        "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": parallel if parallel is not None else True,
        "text": body.get("text") or {"format": {"type": "text"}},
        "reasoning": body.get("reasoning"),
        "metadata": body.get("metadata") or {},
        "user": body.get("user"),
    }
    return ParsedChat(model=model, stream=stream, request=request, include_usage=True), echoed


def _accepted_unused(body: dict[str, Any]) -> None:
    """Fields taken but not sent on (see the module doc): their types are still checked."""
    if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
        raise _wrong("metadata", "an object", body["metadata"])
    include = body.get("include")
    if include is not None and (not isinstance(include, list) or not all(isinstance(i, str) for i in include)):
        raise _wrong("include", "an array of strings", include)
    truncation = body.get("truncation")
    if truncation is not None and truncation not in ("auto", "disabled"):
        raise _wrong("truncation", "'auto' or 'disabled'", truncation)
    max_tool_calls = body.get("max_tool_calls")
    if max_tool_calls is not None and (not _is_int(max_tool_calls) or max_tool_calls < 1):
        raise _wrong("max_tool_calls", "a positive integer", max_tool_calls)
    if body.get("stream_options") is not None and not isinstance(body["stream_options"], dict):
        raise _wrong("stream_options", "an object", body["stream_options"])


def _input(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise _wrong("input", "a string or an array of input items", value)
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _wrong(where, "an object", item)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            _function_call(item, where, messages)
        elif kind == "function_call_output":
            messages.append(_function_call_output(item, where))
        elif kind == "reasoning":
            continue  # the chat form has no place for reasoning items (see the module doc)
        elif kind == "item_reference":
            raise _not_translatable(f"{where}.type", "('item_reference') points to an item the provider keeps")
        elif isinstance(kind, str):
            raise _not_translatable(f"{where}.type", f"({echo(kind)}) is an item of a built-in tool or unknown")
        else:
            raise _wrong(f"{where}.type", "a string", kind)
    return messages


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if not isinstance(role, str) or role not in _MESSAGE_ROLES:
        raise _wrong(f"{where}.role", f"one of {sorted(_MESSAGE_ROLES)}", role)
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _wrong(f"{where}.content", "a string or an array of content parts", content)
    parts = [_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]
    if role != "user" and all(part["type"] == "text" for part in parts):
        # Assistant, system and developer turns as plain text: every translator takes that.
        return {"role": role, "content": "".join(part["text"] for part in parts)}
    return {"role": role, "content": parts}


def _part(part: Any, where: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise _wrong(where, "an object", part)
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        if not isinstance(part.get("text"), str):
            raise _wrong(f"{where}.text", "a string", part.get("text"))
        return {"type": "text", "text": part["text"]}
    if kind == "refusal":
        if not isinstance(part.get("refusal"), str):
            raise _wrong(f"{where}.refusal", "a string", part.get("refusal"))
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            if part.get("file_id") is not None:
                raise _not_translatable(f"{where}.file_id", "refers to a file uploaded to the provider")
            raise _wrong(f"{where}.image_url", "a string", url)
        image: dict[str, Any] = {"url": url}
        detail = part.get("detail")
        if detail is not None:
            if not isinstance(detail, str):
                raise _wrong(f"{where}.detail", "a string", detail)
            image["detail"] = detail
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file: dict[str, Any] = {}
        for field in ("file_data", "file_id", "filename"):
            value = part.get(field)
            if value is not None:
                if not isinstance(value, str):
                    raise _wrong(f"{where}.{field}", "a string", value)
                file[field] = value
        if part.get("file_url") is not None:
            raise _not_translatable(f"{where}.file_url", "is fetched by the provider")
        if "file_data" not in file and "file_id" not in file:
            raise _invalid(f"{where}.file_data", "is required (or file_id)")
        return {"type": "file", "file": file}
    raise _wrong(f"{where}.type", "one of input_text, input_image, input_file, output_text, refusal", kind)


def _required_str(item: dict[str, Any], field: str, where: str) -> str:
    value = item.get(field)
    if not isinstance(value, str) or (field != "arguments" and not value):
        raise _wrong(f"{where}.{field}", "a non-empty string" if field != "arguments" else "a string", value)
    return value


def _function_call(item: dict[str, Any], where: str, messages: list[dict[str, Any]]) -> None:
    """A past call; calls that follow an assistant turn join it, as the chat form has them."""
    call = {
        "id": _required_str(item, "call_id", where),
        "type": "function",
        "function": {"name": _required_str(item, "name", where), "arguments": _required_str(item, "arguments", where)},
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant" and isinstance(last.get("content"), (str, type(None))):
        last.setdefault("tool_calls", []).append(call)
        return
    messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _function_call_output(item: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = _required_str(item, "call_id", where)
    output = item.get("output")
    if isinstance(output, str):
        return {"role": "tool", "tool_call_id": call_id, "content": output}
    if not isinstance(output, list):
        raise _wrong(f"{where}.output", "a string or an array of content parts", output)
    parts = [_part(part, f"{where}.output[{j}]") for j, part in enumerate(output)]
    for j, part in enumerate(parts):
        if part["type"] != "text":
            raise _invalid(f"{where}.output[{j}].type", "must be input_text: tool results carry text only here")
    return {"role": "tool", "tool_call_id": call_id, "content": parts}


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _wrong("tools", "an array", value)
    tools = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _wrong(where, "an object", tool)
        kind = tool.get("type")
        if kind != "function":
            if isinstance(kind, str):
                raise _not_translatable(f"{where}.type", f"({echo(kind)}) is a tool the provider runs")
            raise _wrong(f"{where}.type", "a string", kind)
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _wrong(f"{where}.name", "a non-empty string", name)
        function: dict[str, Any] = {"name": name}
        description = tool.get("description")
        if description is not None:
            if not isinstance(description, str):
                raise _wrong(f"{where}.description", "a string", description)
            function["description"] = description
        parameters = tool.get("parameters")
        if parameters is not None:
            if not isinstance(parameters, dict):
                raise _wrong(f"{where}.parameters", "an object", parameters)
            function["parameters"] = parameters
        strict = tool.get("strict")
        if strict is not None:
            if not isinstance(strict, bool):
                raise _wrong(f"{where}.strict", "a boolean", strict)
            function["strict"] = strict
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(value: Any) -> str | dict[str, Any] | None:
    if value is None or (isinstance(value, str) and value in _TOOL_CHOICE_MODES):
        return value
    if not isinstance(value, dict):
        raise _wrong("tool_choice", f"one of {sorted(_TOOL_CHOICE_MODES)} or an object", value)
    kind = value.get("type")
    if kind != "function":
        if isinstance(kind, str):
            raise _not_translatable("tool_choice.type", f"({echo(kind)}) chooses a tool the provider runs")
        raise _wrong("tool_choice.type", "a string", kind)
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise _wrong("tool_choice.name", "a non-empty string", name)
    return {"type": "function", "function": {"name": name}}


def _text(value: Any, request: ChatRequest) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _wrong("text", "an object", value)
    verbosity = value.get("verbosity")
    if verbosity is not None:
        if not isinstance(verbosity, str):
            raise _wrong("text.verbosity", "a string", verbosity)
        request["verbosity"] = verbosity
    fmt = value.get("format")
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if not isinstance(kind, str) or kind not in _TEXT_FORMATS:
        raise _wrong("text.format.type", f"one of {sorted(_TEXT_FORMATS)}", kind)
    if kind == "json_object":
        request["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        name, schema = fmt.get("name"), fmt.get("schema")
        if not isinstance(name, str) or not name:
            raise _wrong("text.format.name", "a non-empty string", name)
        if not isinstance(schema, dict):
            raise _wrong("text.format.schema", "an object", schema)
        json_schema: dict[str, Any] = {"name": name, "schema": schema}
        for field, kinds in (("description", str), ("strict", bool)):
            if fmt.get(field) is not None:
                if not isinstance(fmt[field], kinds):
                    raise _wrong(f"text.format.{field}", "a " + ("string" if kinds is str else "boolean"), fmt[field])
                json_schema[field] = fmt[field]
        request["response_format"] = {"type": "json_schema", "json_schema": json_schema}


def _reasoning(value: Any, request: ChatRequest) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _wrong("reasoning", "an object", value)
    effort = value.get("effort")
    if effort is not None:
        if not isinstance(effort, str):
            raise _wrong("reasoning.effort", "a string", effort)
        request["reasoning_effort"] = effort
