"""Type checks of an inbound OpenAI Chat Completions or Embeddings body.

The body is the internal form as it is (see proxy.frontends.openai_chat), and
every translator reads it, so every field a translator reads is checked here,
once, for its JSON type: a mistyped field is a 400 naming it (`param`), before
routing, whatever provider would have served it. Ranges and provider-specific
limits stay the provider's to judge. Only fields that are present are looked
at, so a small request pays for a handful of isinstance calls.
"""

from __future__ import annotations

from typing import Any

from proxy.errors import bad_request, echo

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
_RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
_TOOL_CHOICE_MODES = frozenset({"none", "auto", "required"})

# Top-level fields by the JSON type the API gives them (None is always allowed: "not set").
_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_POSITIVE_INTS = ("max_tokens", "max_completion_tokens", "n")
_INTS = ("seed", "top_logprobs")
_BOOLS = ("logprobs", "parallel_tool_calls", "store")
_STRINGS = ("user", "safety_identifier", "prompt_cache_key", "service_tier", "reasoning_effort")
_OBJECTS = ("metadata", "logit_bias", "audio", "prediction", "web_search_options")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _wrong(param: str, expected: str, value: Any) -> Exception:
    return bad_request(f"{param} must be {expected}, got {echo(value)}", param=param)


def check_scalars(body: dict[str, Any]) -> None:
    for field in _NUMBERS:
        value = body.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _wrong(field, "a number", value)
    for field in _POSITIVE_INTS:
        value = body.get(field)
        if value is not None and (not _is_int(value) or value < 1):
            raise _wrong(field, "a positive integer", value)
    for field in _INTS:
        value = body.get(field)
        if value is not None and not _is_int(value):
            raise _wrong(field, "an integer", value)
    for field in _BOOLS:
        value = body.get(field)
        if value is not None and not isinstance(value, bool):
            raise _wrong(field, "a boolean", value)
    for field in _STRINGS:
        value = body.get(field)
        if value is not None and not isinstance(value, str):
            raise _wrong(field, "a string", value)
    for field in _OBJECTS:
        value = body.get(field)
        if value is not None and not isinstance(value, dict):
            raise _wrong(field, "an object", value)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not _strings(stop):
        raise _wrong("stop", "a string or an array of strings", stop)
    modalities = body.get("modalities")
    if modalities is not None and not _strings(modalities):
        raise _wrong("modalities", "an array of strings", modalities)


# --- messages --------------------------------------------------------------------------------


def check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' is required and must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object", param=where)
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise bad_request(f"{where}.role must be one of {sorted(_ROLES)}, got {echo(role)}", param=f"{where}.role")
        _check_optional_str(message, "name", where)
        calls = message.get("tool_calls")
        if calls is not None:
            _check_tool_calls(calls, f"{where}.tool_calls")
        content = message.get("content")
        if content is None:
            if role == "assistant" and (calls or "content" in message):
                continue
            raise bad_request(f"{where}.content is required", param=f"{where}.content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                _check_part(part, f"{where}.content[{j}]")
        elif not isinstance(content, str):
            raise bad_request(f"{where}.content must be a string or an array of parts", param=f"{where}.content")
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise bad_request(f"{where}.tool_call_id is required for role 'tool'", param=f"{where}.tool_call_id")


def _check_optional_str(obj: dict[str, Any], field: str, where: str) -> None:
    value = obj.get(field)
    if value is not None and not isinstance(value, str):
        raise _wrong(f"{where}.{field}", "a string", value)


def _check_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _wrong(where, "an object", value)
    return value


def _check_part(part: Any, where: str) -> None:
    kind = part.get("type") if isinstance(part, dict) else None
    if not isinstance(kind, str) or kind not in _PART_TYPES:
        got = echo(kind) if isinstance(part, dict) else f"{echo(part)} instead of a part object"
        raise bad_request(f"{where}.type must be one of {sorted(_PART_TYPES)}, got {got}", param=f"{where}.type")
    if kind in ("text", "refusal"):
        if not isinstance(part.get(kind), str):
            raise _wrong(f"{where}.{kind}", "a string", part.get(kind))
    elif kind == "image_url":
        image = _check_object(part.get("image_url"), f"{where}.image_url")
        if not isinstance(image.get("url"), str):
            raise _wrong(f"{where}.image_url.url", "a string", image.get("url"))
        _check_optional_str(image, "detail", f"{where}.image_url")
    elif kind == "input_audio":
        audio = _check_object(part.get("input_audio"), f"{where}.input_audio")
        for field in ("data", "format"):
            if not isinstance(audio.get(field), str):
                raise _wrong(f"{where}.input_audio.{field}", "a string", audio.get(field))
    else:  # file
        file = _check_object(part.get("file"), f"{where}.file")
        for field in ("file_data", "file_id", "filename"):
            _check_optional_str(file, field, f"{where}.file")


def _check_tool_calls(calls: Any, where: str) -> None:
    if not isinstance(calls, list):
        raise _wrong(where, "an array", calls)
    for k, call in enumerate(calls):
        path = f"{where}[{k}]"
        call = _check_object(call, path)
        if not isinstance(call.get("id"), str):
            raise _wrong(f"{path}.id", "a string", call.get("id"))
        kind = call.get("type", "function")
        if not isinstance(kind, str):
            raise _wrong(f"{path}.type", "a string", kind)
        if kind != "function":
            continue  # other kinds (custom) pass through to OpenAI; translators refuse them by name
        function = _check_object(call.get("function"), f"{path}.function")
        for field in ("name", "arguments"):
            if not isinstance(function.get(field), str):
                raise _wrong(f"{path}.function.{field}", "a string", function.get(field))


# --- tools and formats -----------------------------------------------------------------------


def check_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _wrong("tools", "an array", tools)
        for i, tool in enumerate(tools):
            where = f"tools[{i}]"
            tool = _check_object(tool, where)
            if not isinstance(tool.get("type", "function"), str):
                raise _wrong(f"{where}.type", "a string", tool.get("type"))
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise bad_request(f"{where}.function.name is required", param=f"{where}.function.name")
            _check_optional_str(function, "description", f"{where}.function")
            if function.get("parameters") is not None:
                _check_object(function["parameters"], f"{where}.function.parameters")
            if function.get("strict") is not None and not isinstance(function["strict"], bool):
                raise _wrong(f"{where}.function.strict", "a boolean", function["strict"])
    choice = body.get("tool_choice")
    if choice is None or (isinstance(choice, str) and choice in _TOOL_CHOICE_MODES):
        return
    if isinstance(choice, str):
        raise _wrong("tool_choice", f"one of {sorted(_TOOL_CHOICE_MODES)} or an object", choice)
    choice = _check_object(choice, "tool_choice")
    if not isinstance(choice.get("type"), str):
        raise _wrong("tool_choice.type", "a string", choice.get("type"))
    if choice["type"] == "function":
        function = _check_object(choice.get("function"), "tool_choice.function")
        if not isinstance(function.get("name"), str):
            raise _wrong("tool_choice.function.name", "a string", function.get("name"))


def check_response_format(body: dict[str, Any]) -> None:
    response_format = body.get("response_format")
    if response_format is None:
        return
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if not isinstance(kind, str) or kind not in _RESPONSE_FORMATS:
        raise bad_request(
            f"response_format.type must be one of {sorted(_RESPONSE_FORMATS)}, got {echo(kind)}",
            param="response_format.type",
        )
    if kind == "json_schema":
        schema = response_format.get("json_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
            raise bad_request("response_format.json_schema.name is required", param="response_format.json_schema")
        if schema.get("schema") is not None:
            _check_object(schema["schema"], "response_format.json_schema.schema")
        if schema.get("strict") is not None and not isinstance(schema["strict"], bool):
            raise _wrong("response_format.json_schema.strict", "a boolean", schema["strict"])


def check_stream(body: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage)."""
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _wrong("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is None:
        return stream, False
    options = _check_object(options, "stream_options")
    include_usage = options.get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise _wrong("stream_options.include_usage", "a boolean", include_usage)
    return stream, bool(stream and include_usage)


# --- embeddings ------------------------------------------------------------------------------


def check_embeddings(body: dict[str, Any]) -> None:
    inputs = body.get("input")
    # Items are strings, token ids or token id arrays (OpenAI wants one kind per request; a mix
    # is the provider's to refuse, nothing here misreads it).
    valid = isinstance(inputs, str) or (
        isinstance(inputs, list)
        and bool(inputs)
        and all(
            isinstance(x, str) or _is_int(x) or (isinstance(x, list) and all(_is_int(t) for t in x)) for x in inputs
        )
    )
    if not valid:
        raise bad_request(
            "'input' is required: a string, or a non-empty array of strings, of token ids, or of token id arrays",
            param="input",
        )
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        raise _wrong("encoding_format", "'float' or 'base64'", encoding)
    dimensions = body.get("dimensions")
    if dimensions is not None and (not _is_int(dimensions) or dimensions < 1):
        raise _wrong("dimensions", "a positive integer", dimensions)
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _wrong("user", "a string", user)
